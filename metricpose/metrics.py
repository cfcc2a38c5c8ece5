"""3D pose metrics (millimetres), following the standard definitions.

* MPJPE: mean Euclidean joint error after aligning the roots (Protocol #1).
* N-MPJPE: MPJPE after the per-sample least-squares scale of the prediction (Rhodin et al.
  2018), as VideoPose3D's ``n_mpjpe``.
* PA-MPJPE: MPJPE after similarity Procrustes alignment — rotation, uniform scale and
  translation, reflections excluded (Protocol #2), as VideoPose3D's ``p_mpjpe`` and mmpose's
  ``keypoint_mpjpe(alignment="procrustes")``.
* PCK@150 mm and AUC over thresholds 0:5:150 mm after root alignment, by default as
  MPI-INF-3DHP's official protocol: 14 joints (``skeleton.PCK_JOINTS_3DHP``), error < threshold.

All take arrays (N, J, 3) in mm and return a float (the mean over samples and joints);
the ``*_per_sample`` functions return (N,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from metricpose.errors import InputError
from metricpose.skeleton import PCK_JOINTS_3DHP, ROOT


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise InputError(f"poses must both have shape (N, J, 3); got {pred.shape} and {gt.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise InputError("poses contain NaN or Inf")
    return pred, gt


def _root_align(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pred - pred[:, ROOT : ROOT + 1], gt - gt[:, ROOT : ROOT + 1]


def mpjpe_per_sample(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    pred, gt = _root_align(*_check(pred, gt))
    return np.linalg.norm(pred - gt, axis=-1).mean(-1)


def n_mpjpe_per_sample(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    pred, gt = _root_align(*_check(pred, gt))
    scale = (pred * gt).sum((1, 2)) / np.maximum((pred * pred).sum((1, 2)), 1e-12)
    return np.linalg.norm(scale[:, None, None] * pred - gt, axis=-1).mean(-1)


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Align each pred (N, J, 3) to gt by the best rotation (no reflection), uniform scale and
    translation in the least-squares sense. Rotations come from scipy's Kabsch solver."""
    pred, gt = _check(pred, gt)
    mu_p, mu_g = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    p0, g0 = pred - mu_p, gt - mu_g
    aligned = np.empty_like(pred)
    for i in range(len(pred)):
        rotation, _ = Rotation.align_vectors(g0[i], p0[i])  # proper rotation: det = +1
        rotated = rotation.apply(p0[i])
        scale = (rotated * g0[i]).sum() / max((p0[i] ** 2).sum(), 1e-12)
        aligned[i] = scale * rotated + mu_g[i]
    return aligned


def pa_mpjpe_per_sample(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    pred, gt = _check(pred, gt)
    return np.linalg.norm(procrustes_align(pred, gt) - gt, axis=-1).mean(-1)


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint position error (mm) after root alignment."""
    return float(mpjpe_per_sample(pred, gt).mean())


def n_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after the least-squares scale of each prediction (mm)."""
    return float(n_mpjpe_per_sample(pred, gt).mean())


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after similarity Procrustes alignment of each prediction (mm)."""
    return float(pa_mpjpe_per_sample(pred, gt).mean())


def _joint_errors(pred: np.ndarray, gt: np.ndarray, joints: Sequence[int] | None) -> np.ndarray:
    """Root-aligned per-joint errors (N, J') in mm, over ``joints`` (None: all)."""
    pred, gt = _root_align(*_check(pred, gt))
    err = np.linalg.norm(pred - gt, axis=-1)
    return err if joints is None else err[:, list(joints)]


def pck(
    pred: np.ndarray,
    gt: np.ndarray,
    threshold_mm: float = 150.0,
    joints: Sequence[int] | None = PCK_JOINTS_3DHP,
) -> float:
    """Share (0-1) of joints closer than ``threshold_mm`` (strictly) after root alignment.

    The default is MPI-INF-3DHP's official protocol (mpii_compute_3d_pck.m): the 14 joints
    of ``skeleton.PCK_JOINTS_3DHP`` and ``error < threshold``; ``joints=None`` scores all 17
    (the always-zero root included, which inflates the score: label such numbers as 17-joint).
    """
    return float((_joint_errors(pred, gt, joints) < threshold_mm).mean())


def auc(
    pred: np.ndarray,
    gt: np.ndarray,
    max_mm: float = 150.0,
    steps: int = 31,
    joints: Sequence[int] | None = PCK_JOINTS_3DHP,
) -> float:
    """Mean PCK (0-1) over ``steps`` thresholds evenly spaced in [0, max_mm]: 0:5:150 mm by
    default, as MPI-INF-3DHP's protocol; joints and the strict ``<`` as in ``pck``."""
    err = _joint_errors(pred, gt, joints)
    return float(np.mean([(err < t).mean() for t in np.linspace(0, max_mm, steps)]))


def all_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Every metric above for the same inputs."""
    return {
        "mpjpe": mpjpe(pred, gt),
        "n_mpjpe": n_mpjpe(pred, gt),
        "pa_mpjpe": pa_mpjpe(pred, gt),
        "pck150": pck(pred, gt),
        "auc": auc(pred, gt),
    }


def orientation_decomposition(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Split camera-frame error into the body's orientation and the pose in the body frame.

    The body frame (right = left-to-right hip, up = pelvis-to-thorax, ``skeleton.body_frame``)
    of each (N, 17, 3) root-relative camera-frame pose (mm) is compared with the true one:
    ``orientation_error_deg`` is the median angle of the rotation between them (median: a
    front/back confusion costs up to 180°), ``body_frame_mpjpe`` the MPJPE (mm) once the
    prediction is rotated so that its body frame is the true one — what is left when the
    heading relative to the camera is right. Not a published metric: a diagnostic of where a
    camera-frame MPJPE comes from.
    """
    import torch

    from metricpose.skeleton import body_frame

    pred, gt = _root_align(*_check(pred, gt))
    frame_pred = body_frame(torch.as_tensor(pred)).numpy()
    frame_gt = body_frame(torch.as_tensor(gt)).numpy()
    rotation = frame_gt @ np.swapaxes(frame_pred, -1, -2)  # (N, 3, 3) takes pred's frame to gt's
    aligned = pred @ np.swapaxes(rotation, -1, -2)
    return {
        "orientation_error_deg": float(
            np.median(np.degrees(Rotation.from_matrix(rotation).magnitude()))
        ),
        "body_frame_mpjpe": mpjpe(aligned, gt),
    }


def fuse_views(
    pred: np.ndarray, gt: np.ndarray, world: np.ndarray, instant: np.ndarray
) -> np.ndarray:
    """The multi-view mean of a network's own predictions, seen from each camera.

    Each (M, 17, 3) root-relative camera-frame prediction (mm) is rotated into the world frame
    with its camera's rotation (recovered exactly from the true pose in both frames: ``gt`` in
    the camera's, ``world`` (M, 17, 3) in the world's), averaged over the predictions sharing
    its ``instant`` (M,), and rotated back into its camera. Scored against ``gt``, it bounds
    what agreement between views can teach the network: an error every view makes alike (a
    wrong body pose) survives the mean; one that depends on the view (depth along the optical
    axis, heading) averages out. Not a published metric: a diagnostic.
    """
    pred, gt = _root_align(*_check(pred, gt))
    world = world - world[:, ROOT : ROOT + 1]
    to_camera = [Rotation.align_vectors(g, w)[0] for g, w in zip(gt, world, strict=True)]
    pred_world = np.stack([r.inv().apply(p) for r, p in zip(to_camera, pred, strict=True)])
    _, group = np.unique(instant, return_inverse=True)
    sums = np.zeros((group.max() + 1, *pred.shape[1:]))
    np.add.at(sums, group, pred_world)
    mean_world = sums[group] / np.bincount(group)[group, None, None]
    return np.stack([r.apply(p) for r, p in zip(to_camera, mean_world, strict=True)])
