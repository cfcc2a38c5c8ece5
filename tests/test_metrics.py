import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from metricpose import metrics
from metricpose.errors import InputError


def videopose3d_p_mpjpe(predicted, target):
    """The formula of VideoPose3D's common/loss.py p_mpjpe (SVD, reflections removed)."""
    muX, muY = target.mean(1, keepdims=True), predicted.mean(1, keepdims=True)
    X0, Y0 = target - muX, predicted - muY
    normX = np.sqrt((X0**2).sum((1, 2), keepdims=True))
    normY = np.sqrt((Y0**2).sum((1, 2), keepdims=True))
    X0, Y0 = X0 / normX, Y0 / normY
    U, s, Vt = np.linalg.svd(X0.transpose(0, 2, 1) @ Y0)
    V = Vt.transpose(0, 2, 1)
    R = V @ U.transpose(0, 2, 1)
    sign = np.sign(np.linalg.det(R))[:, None]
    V[:, :, -1] *= sign
    s[:, -1] *= sign.ravel()
    R = V @ U.transpose(0, 2, 1)
    a = s.sum(1, keepdims=True)[:, :, None] * normX / normY
    aligned = a * predicted @ R + (muX - a * muY @ R)
    return np.linalg.norm(aligned - target, axis=-1).mean()


def videopose3d_n_mpjpe(predicted, target):
    """VideoPose3D's n_mpjpe (on root-relative poses)."""
    scale = (target * predicted).sum(-1).mean(-1) / (predicted**2).sum(-1).mean(-1)
    return np.linalg.norm(scale[:, None, None] * predicted - target, axis=-1).mean()


def random_poses(seed, n=16):
    rng = np.random.default_rng(seed)
    gt = rng.normal(0, 300, size=(n, 17, 3))
    pred = gt + rng.normal(0, 60, size=gt.shape)
    return pred - pred[:, :1], gt - gt[:, :1]


def test_hand_computed_mpjpe_pck_auc():
    gt = np.zeros((1, 17, 3))
    pred = np.zeros((1, 17, 3))
    pred[0, 1:, 0] = 30.0  # every joint but the root 30 mm off
    assert metrics.mpjpe(pred, gt) == pytest.approx(30.0 * 16 / 17)
    # 17 joints: the root (0 mm) counts as correct at every threshold above 0 (strict <).
    assert metrics.pck(pred, gt, 150, joints=None) == 1.0
    assert metrics.pck(pred, gt, 20, joints=None) == pytest.approx(1 / 17)
    assert metrics.pck(pred, gt, 30, joints=None) == pytest.approx(1 / 17)  # 30 is not < 30
    # Thresholds 0, 5, ..., 150 (31): 0 at t = 0, 1/17 at t = 5..30 (6), 1 at t = 35..150 (24).
    assert metrics.auc(pred, gt, joints=None) == pytest.approx((6 / 17 + 24) / 31)
    # The official 14 joints leave the root out: nothing is correct up to 30 mm.
    assert metrics.pck(pred, gt, 30) == 0.0
    assert metrics.pck(pred, gt, 30.5) == 1.0
    assert metrics.auc(pred, gt) == pytest.approx(24 / 31)
    # A constant offset of the whole pose vanishes after root alignment.
    assert metrics.mpjpe(gt + 100.0, gt) == 0.0


def _official_3dhp_pck_auc(pred_3dhp: np.ndarray, gt_3dhp: np.ndarray) -> tuple[float, float]:
    """A transcription of mpii_compute_3d_pck.m for the "All" joint group, loops as written
    there: joints in 3DHP's test order (0 head top ... 13 left ankle, 14 pelvis), per-joint
    errors after root alignment, PCK per threshold 0:5:150 = mean over the 14 joints of the
    share of frames with error < threshold; AUC = mean of that curve."""
    thresholds = range(0, 151, 5)
    nf = len(gt_3dhp)
    error = np.zeros((14, nf))
    for f in range(nf):
        p = pred_3dhp[f] - pred_3dhp[f, 14]
        g = gt_3dhp[f] - gt_3dhp[f, 14]
        for j in range(14):
            error[j, f] = np.sqrt(np.sum((p[j] - g[j]) ** 2))
    curve = []
    for t in thresholds:
        curve.append(np.mean([np.mean(error[j] < t) for j in range(14)]))
    return curve[thresholds.index(150)], float(np.mean(curve))


def test_3dhp_pck_auc_match_the_official_script_on_the_fixture(fixtures_dir):
    from metricpose.skeleton import FROM_MPI_INF_3DHP_17, PCK_JOINTS_3DHP, remap_joints

    gt_3dhp = np.load(fixtures_dir / "mpi_inf_3dhp" / "test_3dhp_test.npz")["S"][..., :3] * 1000.0
    rng = np.random.default_rng(0)
    gt_3dhp = np.repeat(gt_3dhp, 50, axis=0)  # 2 test poses, 100 simulated predictions
    pred_3dhp = gt_3dhp + rng.normal(0, 60, gt_3dhp.shape)
    pred_3dhp[::7, 3] += 200.0  # some grossly wrong elbows
    pck_official, auc_official = _official_3dhp_pck_auc(pred_3dhp, gt_3dhp)
    pred, gt = (remap_joints(x, FROM_MPI_INF_3DHP_17)[0] for x in (pred_3dhp, gt_3dhp))
    assert metrics.pck(pred, gt, 150, joints=PCK_JOINTS_3DHP) == pytest.approx(
        pck_official, abs=1e-12
    )
    assert metrics.auc(pred, gt, joints=PCK_JOINTS_3DHP) == pytest.approx(auc_official, abs=1e-12)
    assert metrics.auc(pred, gt) == metrics.auc(pred, gt, joints=PCK_JOINTS_3DHP)  # the default
    assert metrics.auc(pred, gt, joints=None) > auc_official + 0.02  # 17 joints inflate it


def test_hand_computed_n_mpjpe_and_pa_mpjpe():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, size=(3, 17, 3))
    gt -= gt[:, :1]
    assert metrics.n_mpjpe(0.5 * gt, gt) == pytest.approx(0.0, abs=1e-9)  # scale is free
    assert metrics.mpjpe(0.5 * gt, gt) > 50
    R = Rotation.from_euler("xyz", [30, -60, 110], degrees=True).as_matrix()
    moved = 1.7 * gt @ R.T + np.array([10.0, -20.0, 300.0])
    assert metrics.pa_mpjpe(moved, gt) == pytest.approx(0.0, abs=1e-6)
    # A mirror image is not a rotation: Procrustes must not undo it.
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert metrics.pa_mpjpe(mirrored, gt) > 10


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_videopose3d_formulas(seed):
    pred, gt = random_poses(seed)
    assert metrics.pa_mpjpe(pred, gt) == pytest.approx(videopose3d_p_mpjpe(pred, gt), rel=1e-9)
    assert metrics.n_mpjpe(pred, gt) == pytest.approx(videopose3d_n_mpjpe(pred, gt), rel=1e-9)
    # mmpose's keypoint_mpjpe(alignment="none") is the plain mean joint distance.
    assert metrics.mpjpe(pred, gt) == pytest.approx(np.linalg.norm(pred - gt, axis=-1).mean())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.floats(1.0, 300.0))
def test_ordering_and_invariances(seed, noise):
    rng = np.random.default_rng(seed)
    gt = rng.normal(0, 300, size=(4, 17, 3))
    pred = gt + rng.normal(0, noise, size=gt.shape)
    pa, n, m = metrics.pa_mpjpe(pred, gt), metrics.n_mpjpe(pred, gt), metrics.mpjpe(pred, gt)
    assert pa <= n + 1e-6 and n <= m + 1e-6
    R = Rotation.random(random_state=seed).as_matrix()
    assert metrics.pa_mpjpe(3.0 * pred @ R.T + 50.0, gt) == pytest.approx(pa, rel=1e-6, abs=1e-6)
    assert metrics.mpjpe(gt, gt) == 0.0 and metrics.pa_mpjpe(gt, gt) < 1e-6


def test_bad_inputs():
    with pytest.raises(InputError, match="shape"):
        metrics.mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))
    bad = np.zeros((1, 17, 3))
    bad[0, 3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        metrics.pa_mpjpe(bad, np.zeros((1, 17, 3)))


def test_h36m_headline_is_the_mean_of_per_action_means():
    """Protocol #1 averages each action's mean: 3 crops of 'Walking' 10 mm off and 1 crop of
    'Sitting' 50 mm off give (10 + 50) / 2 = 30 mm, where pooling would give 20 mm."""
    from metricpose.evaluate import Predictions, format_table, score

    gt = np.zeros((4, 17, 3))
    pred = gt.copy()
    pred[:3, 1:, 0] = 10.0 * 17 / 16  # the root stays exact: MPJPE = 10 mm
    pred[3, 1:, 0] = 50.0 * 17 / 16
    n = len(gt)
    result = score(
        Predictions(
            pose_pred=pred, pose_gt=gt, pose_world=gt, embedding=np.zeros((n, 4), np.float32),
            subject=np.array(["S9"] * n), action=np.array(["Walking"] * 3 + ["Sitting"]),
            camera=np.array(["c0"] * n), sequence=np.array(["s"] * n), frame=np.arange(n),
            instant=np.arange(n), labelled=np.ones(n, bool),
        )
    )  # fmt: skip
    assert result["action_mean"]["mpjpe"] == pytest.approx(30.0)
    assert result["overall"]["mpjpe"] == pytest.approx(20.0)
    table = format_table(result).splitlines()
    first_row = next(line for line in table if line.startswith("| mean"))
    assert first_row.startswith("| mean of the 2 per-action means | 30.0 |")
    assert table.index(first_row) < table.index(next(x for x in table if "pooled" in x))
    # MPI-INF-3DHP reports every valid frame pooled ("All") first.
    result["headline"] = "overall"
    table = format_table(result).splitlines()
    rows = [line for line in table if line.startswith(("| mean", "| pooled"))][:2]
    assert rows[0].startswith("| pooled over all crops | 20.0 |") and rows[1].startswith("| mean")


def test_orientation_decomposition_separates_heading_from_body_pose():
    """A pose turned 30° about its own up axis is all orientation error (30°, body-frame
    MPJPE 0); a wrist moved 170 mm with the body frame kept is all body-frame error
    (170 / 17 = 10 mm, orientation 0°)."""
    _, gt = random_poses(3, n=4)
    import torch

    from metricpose.skeleton import body_frame

    axis = body_frame(torch.as_tensor(gt))[..., 2].numpy()  # (N, 3) each body's up axis
    turned = np.stack(
        [
            p @ Rotation.from_rotvec(np.radians(30) * a).as_matrix().T
            for p, a in zip(gt, axis, strict=True)
        ]
    )
    result = metrics.orientation_decomposition(turned, gt)
    assert result["orientation_error_deg"] == pytest.approx(30.0)
    assert result["body_frame_mpjpe"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.mpjpe(turned, gt) > 50  # the camera-frame error it explains
    moved = gt.copy()
    moved[:, 13] += [0.0, 0.0, 170.0]  # left wrist: not a joint of the body frame
    result = metrics.orientation_decomposition(moved, gt)
    assert result["orientation_error_deg"] == pytest.approx(0.0, abs=1e-5)
    assert result["body_frame_mpjpe"] == pytest.approx(10.0)


def test_fusing_views_removes_what_differs_between_views_and_keeps_what_they_share():
    """Two instants seen by four cameras each. Errors that cancel over an instant's views (in
    the world frame) vanish from the fused pose; an error every view makes alike stays whole;
    instants are never mixed."""
    rng = np.random.default_rng(0)
    world = rng.normal(0, 300, (2, 17, 3))
    world -= world[:, :1]
    rotations = Rotation.random(8, random_state=1)
    instant = np.repeat([0, 1], 4)
    world_m = world[instant]
    gt = np.stack([r.apply(w) for r, w in zip(rotations, world_m, strict=True)])
    cancelling = rng.normal(0, 40, (8, 17, 3))
    cancelling[:, 0] = 0  # root-relative
    for i in (0, 1):
        cancelling[instant == i] -= cancelling[instant == i].mean(0)
    pred = np.stack(
        [r.apply(w + e) for r, w, e in zip(rotations, world_m, cancelling, strict=True)]
    )
    assert metrics.mpjpe(pred, gt) > 20
    fused = metrics.fuse_views(pred, gt, world_m + 1000.0, instant)  # world poses not rooted
    np.testing.assert_allclose(fused, gt, atol=1e-6)
    shared = rng.normal(0, 40, (2, 17, 3))
    shared[:, 0] = 0
    pred = np.stack(
        [r.apply(w + shared[k]) for r, w, k in zip(rotations, world_m, instant, strict=True)]
    )
    np.testing.assert_allclose(metrics.fuse_views(pred, gt, world_m, instant), pred, atol=1e-6)
