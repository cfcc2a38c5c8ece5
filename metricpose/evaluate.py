"""Run a trained model over a dataset and score it (``metricpose evaluate``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metricpose.data.dataset import FrameKey, MultiViewDataset
from metricpose.data.format import recorded_test_subjects
from metricpose.errors import InputError
from metricpose.metrics import all_metrics
from metricpose.skeleton import mirror_pose


@dataclass
class Predictions:
    """Outputs for every (instant, camera) of a dataset, flattened to M = instants × cameras.

    pose_pred, pose_gt: (M, 17, 3) root-relative camera-frame mm; embedding (M, D);
    pose_world: (M, 17, 3) world mm; subject, action, camera, sequence: (M,) str;
    frame: (M,) int; instant: (M,) index of the instant (same for its cameras);
    labelled: (M,) bool, whether pose_gt holds a ground-truth pose.
    """

    pose_pred: np.ndarray
    pose_gt: np.ndarray
    pose_world: np.ndarray
    embedding: np.ndarray
    subject: np.ndarray
    action: np.ndarray
    camera: np.ndarray
    sequence: np.ndarray
    frame: np.ndarray
    instant: np.ndarray
    labelled: np.ndarray
    images: np.ndarray | None = None  # (M, S, S, 3) uint8, kept for galleries


def mirrored_prediction(
    model: torch.nn.Module, images: torch.Tensor, plain: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, 17, 3) mm: the mean of the model's root-relative poses for ``images`` (B, S, S, 3)
    and for the same crops mirrored left-right, the latter mirrored back (camera x negated,
    left and right joints swapped), as ``augment.flip`` mirrors training instants. A network
    errs differently on a crop and on its mirror image; the mean of both labels the demo's
    unlabelled people 9 mm better (docs/design.md, tenth round) and is the usual flip test at
    evaluation (mmpose's ``flip_test``, VideoPose3D's test-time augmentation).

    ``plain``: the model's (B, 17, 3) answer for ``images`` where the caller already has it.
    """
    if plain is None:
        both = model(torch.cat([images, images.flip(2)]))["pose_cam"]
        plain, mirrored = both[: len(images)], both[len(images) :]
    else:
        mirrored = model(images.flip(2))["pose_cam"]
    return (plain + mirror_pose(mirrored)) / 2


class NonFinitePredictionError(InputError):
    """The model's output is NaN or Inf for an input; the message names the frames file."""


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: MultiViewDataset,
    frame_stride: int = 1,
    batch_size: int = 128,
    keep_images: bool = False,
    device: str | torch.device = "cpu",
    flip_test: bool = False,
) -> Predictions:
    """Predict every camera of every ``frame_stride``-th instant; with ``flip_test`` each pose
    is the mean of the answers for the crop and its mirror image (``mirrored_prediction``;
    the embedding stays the crop's own)."""
    model = model.to(device).eval()
    keys = []
    for index in range(0, len(dataset), frame_stride):
        for v in range(int(dataset.num_cameras[index])):
            keys.append((index, v))
    out: dict[str, list] = {
        k: [] for k in ("pose_pred", "pose_gt", "pose_world", "embedding", "images")
    }
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        samples = [dataset[FrameKey(i, (v,))] for i, v in chunk]
        images = torch.stack([s["images"][0] for s in samples])
        result = model(images.to(device))
        pose = result["pose_cam"]
        if flip_test:
            pose = mirrored_prediction(model, images.to(device), plain=pose)
        finite = torch.isfinite(pose).flatten(1).all(1).cpu()
        if not finite.all():
            i, v = chunk[int((~finite).nonzero()[0])]
            seq = dataset.sequences[dataset.seq_index[i]]
            raise NonFinitePredictionError(
                f"the model predicts NaN or Inf for {seq.folder / 'frames' / seq.cameras[v].name}"
                f".npy frame {int(dataset.frame_index[i])}: its weights overflow on this input"
            )
        out["pose_pred"].append(pose.cpu().numpy())
        out["embedding"].append(result["embedding"].cpu().numpy())
        out["pose_gt"].append(np.stack([s["pose_cam"][0].numpy() for s in samples]))
        out["pose_world"].append(np.stack([s["pose_world"].numpy() for s in samples]))
        if keep_images:
            out["images"].append(images.numpy())
    index = np.array([i for i, _ in keys])
    seqs = [dataset.sequences[dataset.seq_index[i]] for i in index]
    return Predictions(
        pose_pred=np.concatenate(out["pose_pred"]).astype(np.float64),
        pose_gt=np.concatenate(out["pose_gt"]).astype(np.float64),
        pose_world=np.concatenate(out["pose_world"]).astype(np.float64),
        embedding=np.concatenate(out["embedding"]).astype(np.float32),
        subject=np.array([s.meta.subject for s in seqs]),
        action=np.array([s.meta.action for s in seqs]),
        camera=np.array([s.cameras[v].name for s, (_, v) in zip(seqs, keys, strict=True)]),
        sequence=np.array([s.name for s in seqs]),
        frame=dataset.frame_index[index],
        instant=index,
        labelled=dataset.labelled[index],
        images=np.concatenate(out["images"]) if keep_images else None,
    )


def score(pred: Predictions, headline: str = "action_mean") -> dict:
    """Overall metrics plus breakdowns per subject, action and camera.

    ``headline`` names the row papers report: "action_mean" (Human3.6M's mean of per-action
    means) or "overall" (every crop pooled: MPI-INF-3DHP's "All" row).
    """
    labelled = pred.labelled
    if not labelled.any():
        return {"overall": None, "note": "no labelled frames: nothing to score"}
    p, g = pred.pose_pred[labelled], pred.pose_gt[labelled]
    result: dict = {
        "overall": all_metrics(p, g),
        "count": int(labelled.sum()),
        "headline": headline,
    }
    for field in ("subject", "action", "camera"):
        values = getattr(pred, field)[labelled]
        result[f"per_{field}"] = {
            str(v): all_metrics(p[values == v], g[values == v]) for v in np.unique(values)
        }
    per_action = list(result["per_action"].values())
    # Human3.6M's published Protocol #1/#2 numbers average the per-action means, so an action
    # with few frames weighs as much as one with many (VideoPose3D run.py).
    result["action_mean"] = {k: float(np.mean([m[k] for m in per_action])) for k in per_action[0]}
    return result


def format_table(scores: dict) -> str:
    """Markdown tables: the headline row first (the mean of per-action means for Human3.6M's
    Protocol #1 MPJPE / #2 PA-MPJPE, the pooled crops for MPI-INF-3DHP), then the other one
    and the per-group rows."""
    if scores.get("overall") is None:
        return scores.get("note", "")
    head = (
        "| group | MPJPE | N-MPJPE | PA-MPJPE | PCK@150 (14 joints) | AUC (14 joints) |\n"
        "|---|---|---|---|---|---|\n"
    )

    def row(name: str, m: dict) -> str:
        return f"| {name} | {m['mpjpe']:.1f} | {m['n_mpjpe']:.1f} | {m['pa_mpjpe']:.1f} | {100 * m['pck150']:.1f} | {100 * m['auc']:.1f} |\n"

    rows = {
        "action_mean": row(
            f"mean of the {len(scores['per_action'])} per-action means", scores["action_mean"]
        ),
        "overall": row("pooled over all crops", scores["overall"]),
    }
    first = scores.get("headline", "action_mean")
    lines = [
        f"{scores['count']} crops (mm; PCK and AUC in %, MPI-INF-3DHP's 14 joints, error < t):\n\n",
        head,
        rows[first],
        *(r for name, r in rows.items() if name != first),
    ]
    for field in ("subject", "action", "camera"):
        lines.append(f"\nPer {field}:\n\n{head}")
        lines.extend(row(name, m) for name, m in scores[f"per_{field}"].items())
    return "".join(lines)


def default_test_subjects(data: Path, config: dict) -> list[str]:
    """The people to score when none are named: a studio's own test people (its studio.json),
    else the config's ``data.test_subjects`` (Human3.6M's S9, S11)."""
    return recorded_test_subjects(data) or list(config["data"]["test_subjects"])


def evaluate_checkpoint(
    checkpoint: Path,
    data: Path,
    subjects: list[str] | None,
    frame_stride: int = 1,
    flip_test: bool = False,
) -> dict:
    from metricpose.checkpoint import load_model

    model, config = load_model(checkpoint)
    subjects = subjects or default_test_subjects(data, config)
    dataset = MultiViewDataset(data, subjects=subjects, num_views=1)
    unofficial = [s.name for s in dataset.sequences if s.meta.extra.get("poses") == "annot3"]
    if unofficial:
        warnings.warn(
            f"{data}: {', '.join(unofficial)} hold annot3 poses (mmpose's test annotations); "
            "MPI-INF-3DHP's official PCK/AUC score univ_annot3, so these numbers are not "
            "comparable with published ones: convert the official test set instead",
            stacklevel=2,
        )
    # MPI-INF-3DHP's test protocol reports every valid frame pooled ("All") before its
    # per-activity rows; Human3.6M's the mean of the per-action means.
    mpi_test = all(
        s.meta.extra.get("poses") in ("univ_annot3", "annot3") for s in dataset.sequences
    )
    try:
        return score(
            predict_dataset(model, dataset, frame_stride=frame_stride, flip_test=flip_test),
            headline="overall" if mpi_test else "action_mean",
        )
    except NonFinitePredictionError as exc:
        raise NonFinitePredictionError(f"{checkpoint}: {exc}") from None
