import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metricpose.losses import (
    IdentityAdversary,
    adversary_coefficient,
    bone_length_loss,
    calibrated_metric_loss,
    multiview_metric_loss,
    negative_mask,
    pose_loss,
    reverse_gradient,
    triangulation_loss,
)


def unit(*v):
    return torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=-1)


def test_pose_loss_hand_computed():
    pred = torch.zeros(2, 17, 3)
    gt = torch.zeros(2, 17, 3)
    gt[0, 5] = torch.tensor([3.0, 4.0, 0.0])  # one joint 5 mm away
    assert pose_loss(pred, gt, "l2").item() == pytest.approx(5 / 34)
    assert pose_loss(pred, gt, "l1").item() == pytest.approx(7 / 102)
    empty = torch.zeros(0, 17, 3, requires_grad=True)
    assert pose_loss(empty, empty.detach()).item() == 0.0


def test_negative_mask_excludes_self_near_frames_and_other_subjects():
    seq = torch.tensor([0, 0, 0, 1])
    frame = torch.tensor([0, 5, 30, 0])
    subject = torch.tensor([0, 0, 0, 1])
    mask = negative_mask(seq, frame, subject, time_window=10)
    expected = torch.tensor(
        [[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_hardnet_loss_hand_computed():
    # Two instants of one sequence, far apart in time. Anchors and positives in 2D.
    a = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    p = torch.stack([unit(1.0, 0.2), unit(1.0, 1.0)])
    ids = dict(
        sequence=torch.tensor([0, 0]), frame=torch.tensor([0, 100]), subject=torch.tensor([0, 0])
    )
    loss, stats = multiview_metric_loss(a, p, kind="hardnet", margin=0.5, time_window=10, **ids)
    d = torch.cdist(a, p)
    d_pos = torch.diagonal(d)
    # Hardest negative of anchor 0: min(d(a0, p1), d(a1, p0)); of anchor 1: min(d(a1, p0), d(a0, p1)).
    hardest = torch.minimum(d[0, 1], d[1, 0])
    expected = (torch.relu(0.5 + d_pos[0] - hardest) + torch.relu(0.5 + d_pos[1] - hardest)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["valid_share"].item() == 1.0


def test_metric_loss_has_no_negatives_within_the_time_window():
    a = torch.randn(3, 8)
    ids = dict(
        sequence=torch.zeros(3, dtype=torch.long),
        frame=torch.tensor([0, 1, 2]),
        subject=torch.zeros(3, dtype=torch.long),
    )
    loss, stats = multiview_metric_loss(a, a + 0.1, time_window=10, **ids)
    assert loss.item() == 0.0 and stats["valid_share"].item() == 0.0


def test_infonce_loss_hand_computed():
    a = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    p = torch.stack([unit(1.0, 0.5), unit(0.5, 1.0)])
    ids = dict(
        sequence=torch.tensor([0, 1]), frame=torch.tensor([0, 0]), subject=torch.tensor([0, 0])
    )
    loss, _ = multiview_metric_loss(a, p, temperature=0.2, kind="infonce", time_window=10, **ids)
    d = torch.cdist(a, p) ** 2 / 0.2
    # Row i: -log softmax of the positive among {positive, the other instant}; both directions.
    forward = [torch.logsumexp(-d[i], 0) + d[i, i] for i in range(2)]
    backward = [torch.logsumexp(-d[:, i], 0) + d[i, i] for i in range(2)]
    assert loss.item() == pytest.approx(((sum(forward) + sum(backward)) / 4).item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["infonce", "hardnet"])
def test_metric_loss_pulls_views_together(kind):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(16, 8))
    p = torch.nn.Parameter(torch.randn(16, 8))
    ids = dict(
        sequence=torch.zeros(16, dtype=torch.long),
        frame=torch.arange(16) * 20,
        subject=torch.zeros(16, dtype=torch.long),
    )
    opt = torch.optim.Adam([a, p], lr=0.05)
    first = None
    for _ in range(200):
        loss, _ = multiview_metric_loss(
            torch.nn.functional.normalize(a, dim=-1),
            torch.nn.functional.normalize(p, dim=-1),
            time_window=10,
            kind=kind,
            **ids,
        )
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 < first


def test_gradient_reversal_and_schedule():
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    assert adversary_coefficient(0, 100) == 0.0
    assert adversary_coefficient(100, 100) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert adversary_coefficient(50, 0) == 1.0


def test_identity_adversary_learns_the_subject_while_the_embedding_gets_reversed_gradient():
    torch.manual_seed(0)
    emb = torch.randn(64, 16)
    subject = (emb[:, 0] > 0).long()  # identity is linearly visible
    adversary = IdentityAdversary(16, 2, hidden=32)
    opt = torch.optim.Adam(adversary.parameters(), lr=0.01)
    for _ in range(200):
        loss, acc = adversary(emb, subject, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc.item() > 0.95
    e = emb.clone().requires_grad_(True)
    loss, _ = adversary(e, subject, 1.0)
    loss.backward()
    e_plain = emb.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adversary.classifier(e_plain), subject).backward()
    torch.testing.assert_close(e.grad, -e_plain.grad)


def _rotation_about_z(degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_calibrated_metric_loss_hand_computed():
    """Two instants of one subject, far apart in time; view b is camera a turned 90°. The
    predictions agree in the world frame for instant 0 and disagree for instant 1."""
    g = torch.Generator().manual_seed(0)
    world = torch.randn(2, 17, 3, generator=g) * 0.3  # metres
    R_a = torch.eye(3).expand(2, 3, 3)
    R_b = _rotation_about_z(90.0).expand(2, 3, 3)
    pose_a = world @ R_a.transpose(1, 2)  # camera-frame rows: (R x)^T = x^T R^T
    pose_b = world @ R_b.transpose(1, 2)
    pose_b[1] = pose_b[1] + torch.tensor([0.05, 0.0, 0.0])  # 50 mm off in view b
    ids = dict(
        sequence=torch.tensor([0, 0]), frame=torch.tensor([0, 20]), subject=torch.tensor([0, 0])
    )
    loss, stats = calibrated_metric_loss(
        pose_a, pose_b, R_a, R_b, **ids, temperature=0.1, time_window=8
    )

    world_a, world_b = pose_a @ R_a, pose_b @ R_b
    d = torch.tensor(
        [[(world_a[i] - world_b[j]).norm(dim=-1).mean() for j in range(2)] for i in range(2)]
    )
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6) and d[1, 1] == pytest.approx(0.05, rel=1e-5)
    forward = [torch.logsumexp(-d[i] / 0.1, 0) + d[i, i] / 0.1 for i in range(2)]
    backward = [torch.logsumexp(-d[:, i] / 0.1, 0) + d[i, i] / 0.1 for i in range(2)]
    assert loss.item() == pytest.approx(((sum(forward) + sum(backward)) / 4).item(), rel=1e-5)
    assert stats["cal_d_pos"].item() == pytest.approx(0.025, rel=1e-4)


def test_calibrated_metric_loss_sees_a_heading_error_the_uncalibrated_one_cannot():
    """Predicting every pose turned by the same 30° in each camera's frame is view-consistent
    for an uncalibrated loss (the same error everywhere) but not once rotated into the world
    frame by two different cameras."""
    g = torch.Generator().manual_seed(1)
    world = torch.randn(4, 17, 3, generator=g) * 0.3
    R_a = _rotation_about_z(0.0) @ torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # tilted
    R_b = _rotation_about_z(120.0) @ R_a
    error = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T @ _rotation_about_z(30.0)
    ids = dict(
        sequence=torch.arange(4),
        frame=torch.zeros(4, dtype=torch.long),
        subject=torch.zeros(4, dtype=torch.long),
    )
    args = dict(**ids, temperature=0.05, time_window=8)
    right = calibrated_metric_loss(
        world @ R_a.T, world @ R_b.T, R_a.expand(4, 3, 3), R_b.expand(4, 3, 3), **args
    )[0]
    wrong = calibrated_metric_loss(
        world @ R_a.T @ error.T,
        world @ R_b.T @ error.T,
        R_a.expand(4, 3, 3),
        R_b.expand(4, 3, 3),
        **args,
    )[0]
    assert wrong.item() > right.item() + 0.1


def test_calibrated_metric_loss_forbids_the_constant_pose():
    """Views agreeing on one constant world pose do not satisfy it: the other instants are
    negatives (a term without them was satisfied that way, docs/design.md)."""
    const = torch.randn(1, 17, 3).expand(3, 17, 3) * 0.3
    R = torch.eye(3).expand(3, 3, 3)
    ids = dict(
        sequence=torch.arange(3),
        frame=torch.zeros(3, dtype=torch.long),
        subject=torch.zeros(3, dtype=torch.long),
    )
    loss, _ = calibrated_metric_loss(const, const, R, R, **ids, temperature=0.05, time_window=8)
    assert loss.item() == pytest.approx(
        math.log(3), rel=1e-5
    )  # the positive is one of three equals


def test_bone_length_loss_hand_computed():
    """Zero for one rigid symmetric skeleton seen in any pose; otherwise the mean deviation
    from each person's mean bone lengths plus the mean left/right difference."""
    from metricpose.skeleton import BONES, PARENTS

    def skeleton(lengths):  # each bone along its own direction, so the lengths are exact
        pose = torch.zeros(17, 3)
        directions = torch.nn.functional.normalize(torch.randn(17, 3, generator=g), dim=-1)
        for child, parent in enumerate(PARENTS):
            if parent >= 0:
                pose[child] = pose[parent] + lengths[child] * directions[child]
        return pose

    g = torch.Generator().manual_seed(0)
    symmetric = torch.full((17,), 0.3)
    poses = torch.stack([skeleton(symmetric) for _ in range(4)])
    assert bone_length_loss(poses, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        0.0, abs=1e-6
    )
    longer = symmetric.clone()
    longer[3] = 0.5  # right ankle bone 0.2 m longer than the left one, in one of two poses
    poses = torch.stack([skeleton(symmetric), skeleton(longer)])
    deviation = 2 * 0.1 / (2 * len(BONES))  # each pose 0.1 m from the mean, on one bone
    asymmetry = 2 * 0.2 / (2 * len(BONES))  # the pair differs in the second pose, both ways
    loss = bone_length_loss(poses, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx(deviation + asymmetry, rel=1e-5)
    # The same two poses as two people: each is rigid on its own.
    loss = bone_length_loss(poses, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(asymmetry, rel=1e-5)


def _four_cameras_around(root_world: np.ndarray, crop_size: int) -> tuple:
    """Four cameras 4-5 m from ``root_world`` (mm) looking at it, with crop intrinsics whose
    crop centre is the root's image: R (4, 3, 3), t (4, 3) metres, K (4, 3, 3)."""
    Rs, ts, Ks = [], [], []
    for k, yaw in enumerate(np.radians([10, 100, 190, 280])):
        R = Rotation.from_euler("zx", [yaw, np.radians(-100)]).as_matrix()  # turn, then tilt
        distance = 4000.0 + 300 * k
        t = np.array([0.0, 0.0, distance]) - R @ root_world  # root on the optical axis
        focal = 900.0
        Ks.append(
            np.array([[focal, 0, (crop_size - 1) / 2], [0, focal, (crop_size - 1) / 2], [0, 0, 1]])
        )
        Rs.append(R)
        ts.append(t / 1000)
    return np.stack(Rs), np.stack(ts), np.stack(Ks)


def test_the_triangulation_teacher_restores_each_views_lost_depth():
    """Four views of one person whose predictions are right sideways but wrong in depth (each
    joint moved along its own camera ray): the teacher is the true pose, the loss is the depth error,
    the gradient reaches only the predictions; an instant with two views is left out."""
    rng = np.random.default_rng(0)
    world = rng.normal(0, 300, (17, 3)) + np.array([500.0, -200.0, 900.0])
    R, t, K = _four_cameras_around(world[0], crop_size=48)
    truth = np.stack([(world - world[0]) @ r.T for r in R]) / 1000  # (4, 17, 3) m
    root_cam = np.stack([r @ world[0] / 1000 + tt for r, tt in zip(R, t, strict=True)])[:, None]
    along_ray = rng.uniform(0.9, 1.1, (4, 17, 1))  # each view's own depth error, joint by joint
    along_ray[:, 0] = 1.0
    stretched = (truth + root_cam) * along_ray - root_cam  # same image directions
    pose = torch.tensor(
        np.concatenate([stretched, truth[:2]]), dtype=torch.float32, requires_grad=True
    )
    as_tensor = lambda x: torch.tensor(np.concatenate([x, x[:2]]), dtype=torch.float32)  # noqa: E731
    instant = torch.tensor([7, 7, 7, 7, 3, 3])
    loss = triangulation_loss(pose, as_tensor(K), as_tensor(R), as_tensor(t), instant, 48)
    depth_error = np.linalg.norm(stretched - truth, axis=-1).mean()
    assert loss.item() == pytest.approx(depth_error, rel=1e-3)
    loss.backward()
    assert pose.grad[4:].abs().max() == 0  # the two-view instant takes no part
    exact = torch.tensor(np.concatenate([truth, truth[:2]]), dtype=torch.float32)
    assert (
        triangulation_loss(exact, as_tensor(K), as_tensor(R), as_tensor(t), instant, 48).item()
        < 1e-5
    )
