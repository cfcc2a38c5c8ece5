"""Training losses: 3D pose, multi-view metric learning, identity adversary."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from metricpose.cameras import triangulate_views
from metricpose.config import CHOICES
from metricpose.skeleton import BONES, FLIP_INDEX, ROOT


def pose_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """3D pose loss over (B, 17, 3) mm poses.

    ``l2``: mean per-joint Euclidean distance (MPJPE); ``l1``: mean absolute coordinate error.
    An empty batch gives 0 (with a gradient path), so unlabelled-only steps are fine.
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    if kind == "l2":
        return torch.linalg.norm(pred - target, dim=-1).mean()
    if kind == "l1":
        return (pred - target).abs().mean()
    raise ValueError(f"unknown pose loss {kind!r}; expected one of {CHOICES['loss.pose']}")


def negative_mask(
    sequence: torch.Tensor,
    frame: torch.Tensor,
    subject: torch.Tensor,
    time_window: int,
    sequence_other: torch.Tensor | None = None,
    frame_other: torch.Tensor | None = None,
    subject_other: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, B') bool: which instants may serve as negatives for each anchor.

    Negatives come from the anchor's own subject only: other people can be told apart by
    their looks alone, which teaches identity instead of pose. An instant is never a negative
    for itself or for frames of its own sequence closer than ``time_window`` frames (they may
    show the same pose).
    """
    sequence_other = sequence if sequence_other is None else sequence_other
    frame_other = frame if frame_other is None else frame_other
    subject_other = subject if subject_other is None else subject_other
    near = (sequence[:, None] == sequence_other[None]) & (
        (frame[:, None] - frame_other[None]).abs() < time_window
    )
    return ~near & (subject[:, None] == subject_other[None])


def ddp_share(count: torch.Tensor | int, device: torch.device | str = "cpu") -> torch.Tensor:
    """W · n_local / n_all: multiplied into a mean over this process's ``count`` rows, it makes
    DDP's gradient average over W processes equal the gradient of the mean over all processes'
    rows — also when the processes hold different numbers of rows (1 without DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return torch.ones((), device=device)
    local = torch.as_tensor(count, dtype=torch.float32, device=device).reshape(())
    total = local.clone()
    dist.all_reduce(total)
    return dist.get_world_size() * local / total.clamp(min=1.0)


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every DDP process (the local part keeps its gradient)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def _negatives_in_pool(
    sequence: torch.Tensor, frame: torch.Tensor, subject: torch.Tensor, time_window: int
) -> torch.Tensor:
    """(B, B_all) :func:`negative_mask` of this process's B instants against the pool of every
    DDP process's instants (the pool is the local batch without DDP), each instant's own
    column excluded."""
    ids = [_gather_with_grad(x) for x in (sequence, frame, subject)]
    B = sequence.shape[0]
    offset = dist.get_rank() * B if ids[0].shape[0] != B else 0
    valid = negative_mask(sequence, frame, subject, time_window, *ids)
    rows = torch.arange(B, device=valid.device)
    valid[rows, rows + offset] = False
    return valid


def info_nce(
    d_pos: torch.Tensor,
    d_ap: torch.Tensor,
    d_pa: torch.Tensor,
    valid: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of finding each instant's other view among its valid negatives, both
    directions (CLIP-style), with logits ``-distance / temperature``.

    Every negative pulls with a weight that grows with its similarity, so no single false
    negative (the same pose at another time) dominates, and there is no collapse.

    Args:
        d_pos: (B,) distance between the two views of each instant.
        d_ap, d_pa: (B, B') distances view a of i -> view b of j, and view b of i -> view a of j.
        valid: (B, B') bool, which j are negatives for i.

    Returns:
        the mean over anchors that have at least one negative (0 when none has).
    """
    has_negative = valid.any(dim=1)
    if not has_negative.any():
        return d_pos.sum() * 0.0
    positive_logit = -d_pos / temperature
    loss = d_pos.new_zeros(())
    for d in (d_ap, d_pa):
        logits = (-d / temperature).masked_fill(~valid, float("-inf"))
        all_logits = torch.cat([positive_logit[:, None], logits], dim=1)
        per_anchor = torch.logsumexp(all_logits, dim=1) - positive_logit
        loss = loss + per_anchor[has_negative].mean() / 2
    return loss


def hardest_negative_loss(
    d_pos: torch.Tensor, d_ap: torch.Tensor, d_pa: torch.Tensor, valid: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triplet margin loss with each anchor's hardest valid negative over both directions
    (a_i vs p_j and a_j vs p_i, as in HardNet). It collapsed in our measurements: the nearest
    "negative" is often the same pose at another time (docs/design.md); InfoNCE replaced it.

    Args: as :func:`info_nce`; ``margin`` on unit-sphere Euclidean distances.

    Returns:
        the mean over anchors with a negative, and (B,) each anchor's hardest-negative distance
        (the dtype's largest value where it has none).
    """
    inf = torch.finfo(d_ap.dtype).max
    candidates = torch.cat([d_ap.masked_fill(~valid, inf), d_pa.masked_fill(~valid, inf)], dim=1)
    hardest = candidates.min(1).values
    has_negative = valid.any(dim=1)
    return torch.relu(margin + d_pos - hardest)[has_negative].mean(), hardest


def multiview_metric_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    sequence: torch.Tensor,
    frame: torch.Tensor,
    subject: torch.Tensor,
    time_window: int,
    kind: str = "infonce",
    temperature: float = 0.1,
    margin: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Metric loss between embeddings of the same instants seen from two cameras: the other
    view of an instant must be nearer than the same person's other instants
    (:func:`negative_mask`).

    Args:
        anchor, positive: (B, D) unit-norm embeddings of instant i from camera a and camera b.
        sequence, frame, subject: (B,) ids of each instant.
        time_window: frames of one sequence closer than this are never negatives.
        kind: ``infonce`` (:func:`info_nce` on squared distances, ``temperature``) or
            ``hardnet`` (:func:`hardest_negative_loss`, ``margin``).

    Under DDP, the other processes' embeddings (and ids) join the pool of negatives.

    Returns:
        the loss and diagnostics: mean positive distance, mean negative distance (hardnet: the
        hardest), the share of anchors that had a valid negative, and the pool's size.
    """
    if kind not in CHOICES["loss.metric"]:
        raise ValueError(f"unknown metric loss {kind!r}; expected one of {CHOICES['loss.metric']}")
    all_pos = _gather_with_grad(positive)
    all_anchor = _gather_with_grad(anchor)
    valid = _negatives_in_pool(sequence, frame, subject, time_window)
    d_ap = torch.cdist(anchor, all_pos)  # (B, B_all): a_i vs p_j
    d_pa = torch.cdist(positive, all_anchor)  # (B, B_all): p_i vs a_j
    d_pos = (anchor - positive).norm(dim=-1)
    has_negative = valid.any(dim=1)
    share = ddp_share(has_negative.sum(), anchor.device)  # every process calls it (all_reduce)
    stats = {
        "d_pos": d_pos.mean().detach(),
        "valid_share": has_negative.float().mean(),
        "negative_pool": torch.tensor(float(all_pos.shape[0]), device=anchor.device),
    }
    if not has_negative.any():
        stats["d_neg"] = torch.tensor(float("nan"), device=anchor.device)
        return anchor.sum() * 0.0, stats
    if kind == "hardnet":
        loss, hardest = hardest_negative_loss(d_pos, d_ap, d_pa, valid, margin)
        stats["d_neg"] = hardest[has_negative].mean().detach()
    else:
        loss = info_nce(d_pos.pow(2), d_ap.pow(2), d_pa.pow(2), valid, temperature)
        stats["d_neg"] = d_ap[valid].mean().detach()
    return loss * share, stats


def pose_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 17, 3), (B', 17, 3) -> (B, B') mean per-joint distance of every pair (MPJPE)."""
    return torch.linalg.norm(a[:, None] - b[None], dim=-1).mean(-1)


def calibrated_metric_loss(
    pose_a: torch.Tensor,
    pose_b: torch.Tensor,
    R_a: torch.Tensor,
    R_b: torch.Tensor,
    sequence: torch.Tensor,
    frame: torch.Tensor,
    subject: torch.Tensor,
    temperature: float,
    time_window: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCE on the predicted poses once both views are rotated into the world frame.

    Positive: the two cameras' predictions of one instant, each rotated by its camera's known
    rotation (Rₐᵀ·pose_a vs R_bᵀ·pose_b), must be the same world-frame pose; negatives: the
    subject's other, time-separated instants must be different poses. Unlike the
    view-invariant metric loss this supervises the camera-relative heading on unlabelled
    people (a wrong heading rotates differently into the world from each camera), and unlike
    the plain consistency term the negatives forbid the constant-pose solution.

    Args:
        pose_a, pose_b: (B, 17, 3) root-relative camera-frame poses, metres.
        R_a, R_b: (B, 3, 3) world -> camera rotations.
        sequence, frame, subject: (B,) ids of each instant.
        temperature: metres of mean per-joint distance per unit of logit.

    Under DDP, the other processes' predictions join the pool of negatives.

    Returns:
        the loss and diagnostics: mean positive and negative world-frame distances, metres.
    """
    world_a, world_b = pose_a @ R_a, pose_b @ R_b  # rows: (Rᵀ x)ᵀ = xᵀ R
    all_a, all_b = _gather_with_grad(world_a), _gather_with_grad(world_b)
    valid = _negatives_in_pool(sequence, frame, subject, time_window)
    d_pos = torch.linalg.norm(world_a - world_b, dim=-1).mean(-1)
    d_ap, d_pa = pose_distances(world_a, all_b), pose_distances(world_b, all_a)
    share = ddp_share(valid.any(dim=1).sum(), pose_a.device)
    loss = info_nce(d_pos, d_ap, d_pa, valid, temperature) * share
    stats = {
        "cal_d_pos": d_pos.mean().detach(),
        "cal_d_neg": d_ap[valid].mean().detach() if valid.any() else d_pos.new_tensor(float("nan")),
    }
    return loss, stats


def bone_length_loss(pose: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
    """How far predicted poses are from one rigid, left/right-symmetric skeleton per person.

    A person's bones do not change length over time or between cameras, and left and right
    bones are alike: the mean absolute deviation of every predicted bone length from that
    person's mean over the batch (all instants and views), plus the mean absolute difference
    between left and right bones. Needs no label; it makes unlabelled predictions plausible
    skeletons, which the calibrated loss alone does not (docs/design.md).

    Args:
        pose: (N, 17, 3) root-relative poses, metres (any frame: lengths do not depend on it).
        subject: (N,) person ids.
    """
    parents = torch.tensor([p for p, _ in BONES], device=pose.device)
    children = torch.tensor([c for _, c in BONES], device=pose.device)
    lengths = torch.linalg.norm(pose[:, children] - pose[:, parents], dim=-1)  # (N, bones)
    people, person = torch.unique(subject, return_inverse=True)
    sums = lengths.new_zeros(len(people), lengths.shape[1]).index_add_(0, person, lengths)
    counts = torch.bincount(person, minlength=len(people)).to(lengths)[:, None]
    deviation = (lengths - (sums / counts)[person]).abs().mean()
    mirror = [BONES.index((FLIP_INDEX[p], FLIP_INDEX[c])) for p, c in BONES]
    asymmetry = (lengths - lengths[:, mirror]).abs().mean()
    return deviation + asymmetry


def triangulation_loss(
    pose: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    instant: torch.Tensor,
    crop_size: int,
    min_views: int = 3,
) -> torch.Tensor:
    """Self-training on unlabelled multi-view instants: each view's predicted pose is pulled
    towards the pose triangulated from the lateral part of all the instant's views.

    Per instant seen by at least ``min_views`` rows: the root is triangulated from the crop
    centres (the person boxes); each view's prediction is placed at that root and reduced to
    its image directions — its own depth guess dropped — and the joints are triangulated with
    the calibrated cameras. The depth one camera cannot see is what the others see sideways:
    from the demo baseline's own predictions this teacher is 25% better than one view, the
    views' plain average 18% (docs/design.md). The teacher carries no gradient.

    Args:
        pose: (N, 17, 3) root-relative camera-frame predictions, metres (N rows = views).
        K: (N, 3, 3) crop intrinsics (px); R: (N, 3, 3) world -> camera; t: (N, 3) metres.
        instant: (N,) id of the instant each row shows.
        crop_size: crop side, px.

    Returns:
        mean per-joint distance to the teacher over the rows of such instants, metres (0 with
        a gradient path when there are none).
    """
    ids, counts = torch.unique(instant, return_counts=True)
    loss, rows_used = pose.sum() * 0.0, 0
    for views in counts[counts >= min_views].unique().tolist():
        group_ids = ids[counts == views]
        rows = torch.stack([torch.nonzero(instant == i)[:, 0] for i in group_ids])  # (G, V)
        with torch.no_grad():
            Rg = R[rows].double()
            world = triangulate_views(
                pose[rows].double(), K[rows].double(), Rg, t[rows].double(), crop_size
            )
            relative = world - world[:, ROOT : ROOT + 1]
            teacher = (relative[:, None] @ Rg.transpose(-1, -2)).to(pose.dtype)  # (G, V, 17, 3)
        loss = loss + torch.linalg.norm(pose[rows] - teacher, dim=-1).mean(-1).sum()
        rows_used += rows.numel()
    return loss / max(rows_used, 1)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coefficient`` backward (Ganin & Lempitsky)."""
    return _ReverseGradient.apply(x, coefficient)


def adversary_coefficient(step: int, warmup_steps: int) -> float:
    """DANN's schedule 2 / (1 + exp(-10 p)) - 1 over the warm-up, then 1."""
    if warmup_steps <= 0:
        return 1.0
    p = min(1.0, step / warmup_steps)
    return float(2.0 / (1.0 + torch.exp(torch.tensor(-10.0 * p))) - 1.0)


class IdentityAdversary(nn.Module):
    """Subject classifier on the embedding behind gradient reversal.

    The classifier learns to recognise the subject; the reversed gradient teaches the
    embedding to hide it. ``forward`` returns the cross-entropy and the accuracy.
    """

    def __init__(self, embedding_dim: int, num_subjects: int, hidden: int = 256) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_subjects)
        )

    def forward(
        self, embedding: torch.Tensor, subject: torch.Tensor, coefficient: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(reverse_gradient(embedding, coefficient))
        loss = nn.functional.cross_entropy(logits, subject)
        accuracy = (logits.argmax(-1) == subject).float().mean()
        return loss, accuracy
