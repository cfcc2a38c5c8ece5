"""Fit 3D poses to the person's silhouettes in calibrated views.

A teacher that learned from one labelled person pulls new people's limbs towards that person's
habits — the hands towards the body, the feet under the hips (docs/design.md, eighth round) —
and every view errs alike, so triangulating the views keeps the error. The silhouettes do not
share it: an arm held out is an arm held out in every camera's mask. ``fit_to_silhouettes``
moves the joints until a generic capsule body around the skeleton covers each view's
silhouette and stays inside it, close to the starting pose and keeping the person's bone
lengths. On the demo's unlabelled people it makes the teacher's labels 23 mm better (133.0 →
109.8 mm; ankles 190 → 107, wrists 310 → 254; docs/design.md, twelfth round).

Silhouettes come from background subtraction or a chroma key on real captures (Human3.6M and
MPI-INF-3DHP ship them) and from the studio's renderer; the dataset format stores them as
``masks/<camera>.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from metricpose.cameras import project_points
from metricpose.data.format import SequenceFolder
from metricpose.skeleton import BONES, JOINT_NAMES

#: Capsule radius (mm) around each bone, by the bone's child joint: a generic adult build, not
#: the person's own (unknown on real captures). The fit's labels moved by < 2 mm with all radii
#: 20% smaller or larger (docs/design.md, twelfth round).
CAPSULE_RADIUS_MM: dict[str, float] = {
    "right_hip": 80, "right_knee": 65, "right_ankle": 45,
    "left_hip": 80, "left_knee": 65, "left_ankle": 45,
    "spine": 110, "thorax": 110, "neck_nose": 50, "head": 90,
    "left_shoulder": 60, "left_elbow": 45, "left_wrist": 36,
    "right_shoulder": 60, "right_elbow": 45, "right_wrist": 36,
}  # fmt: skip


@dataclass(frozen=True)
class SilhouetteFit:
    """Settings of ``fit_to_silhouettes``.

    iterations, step_mm: Adam's steps and learning rate (mm per step at most, roughly).
    pixels: silhouette pixels per view drawn afresh at each step for the coverage term.
    prior_mm: every joint this far from its starting position costs as much as a mean
        silhouette mismatch of 1 px² (the coverage and containment terms' unit).
    bone_tolerance_mm: every bone this much longer or shorter than the person's costs as much.
    chunk: instants fitted together (memory: chunk × views × pixels × 16 bones floats).
    """

    iterations: int = 60
    step_mm: float = 8.0
    pixels: int = 24
    prior_mm: float = 150.0
    bone_tolerance_mm: float = 20.0
    chunk: int = 1024


_PARENT = torch.tensor([p for p, _ in BONES])
_CHILD = torch.tensor([c for _, c in BONES])
_RADIUS_MM = torch.tensor([CAPSULE_RADIUS_MM[JOINT_NAMES[c]] for _, c in BONES])
_ALONG = torch.linspace(0.0, 1.0, 6)  # points on each bone that must lie inside the silhouette


def fit_to_silhouettes(
    poses_world: np.ndarray,
    masks: np.ndarray,
    K_crop: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    dist: np.ndarray,
    dist_model: str,
    bone_lengths_mm: np.ndarray,
    settings: SilhouetteFit = SilhouetteFit(),
    seed: int = 0,
) -> np.ndarray:
    """Move poses so that their capsule bodies explain the person's silhouettes.

    Minimises, per instant: the mean squared distance (px) from silhouette pixels to the
    nearest capsule (coverage), the mean squared distance (px) from points along the bones to
    the silhouette (containment), and soft priors to stay near the starting pose and keep the
    bone lengths.

    Args:
        poses_world: (N, 17, 3) starting poses, world mm.
        masks: (N, V, S, S) bool silhouettes of the crops.
        K_crop: (N, V, 3, 3) crop intrinsics (``cameras.crop_intrinsics``).
        R, t: (N, V, 3, 3), (N, V, 3) world -> camera, mm.
        dist: (N, V, 5) distortion coefficients of ``dist_model``.
        bone_lengths_mm: (N, 16) or (16,) target length of each of ``skeleton.BONES``.

    Returns:
        (N, 17, 3) fitted world poses, mm (float64).
    """
    N, V = masks.shape[:2]
    if poses_world.shape != (N, 17, 3) or K_crop.shape != (N, V, 3, 3) or R.shape != K_crop.shape:
        raise ValueError(
            f"poses {poses_world.shape}, masks {masks.shape}, K {K_crop.shape} and R {R.shape} "
            "disagree"
        )
    generator = torch.Generator().manual_seed(seed)
    fitted = np.empty((N, 17, 3))
    bones = np.broadcast_to(bone_lengths_mm, (N, len(BONES)))
    f32 = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731
    for s in range(0, N, settings.chunk):
        sl = slice(s, s + settings.chunk)
        target = _Silhouettes(
            masks[sl], f32(K_crop[sl]), f32(R[sl]), f32(t[sl]), f32(dist[sl]), dist_model
        )
        start = f32(poses_world[sl])
        x = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=settings.step_mm)
        for _ in range(settings.iterations):
            optimiser.zero_grad()
            loss = target.mismatch(x, settings.pixels, generator)
            loss = loss + (((x - start) / settings.prior_mm) ** 2).sum(-1).mean(-1)
            length = torch.linalg.norm(x[:, _CHILD] - x[:, _PARENT], dim=-1)
            loss = loss + (((length - f32(bones[sl])) / settings.bone_tolerance_mm) ** 2).mean(-1)
            loss.sum().backward()
            optimiser.step()
        fitted[sl] = x.detach().double().numpy()
    return fitted


def sequence_views(seq: SequenceFolder) -> tuple[np.ndarray, ...]:
    """``fit_to_silhouettes``' view arguments for every frame of ``seq``: silhouettes
    (T, V, S, S), crop intrinsics (T, V, 3, 3), R (T, V, 3, 3), t (T, V, 3) and distortion
    (T, V, 5)."""
    masks = np.stack([seq.masks(c.name) for c in seq.cameras], 1)
    return (masks, *seq.crop_cameras())


class _Silhouettes:
    """A chunk's silhouettes, prepared for ``mismatch``: the pixel coordinates of each view's
    silhouette and the distance (px) from every pixel to it."""

    def __init__(
        self,
        masks: np.ndarray,
        K: torch.Tensor,
        R: torch.Tensor,
        t: torch.Tensor,
        dist: torch.Tensor,
        dist_model: str,
    ) -> None:
        n, V, S = masks.shape[:3]
        self.K, self.R, self.t, self.dist, self.dist_model = K, R, t, dist, dist_model
        self.count = torch.as_tensor(masks.reshape(n, V, -1).sum(-1))  # (n, V)
        # Silhouette pixels first in each view's row, as (x, y) crop px (pixel centres).
        order = np.argsort(~masks.reshape(n, V, -1), axis=-1, kind="stable")
        self.xy = torch.as_tensor(np.stack([order % S, order // S], -1), dtype=torch.float32)
        outside = np.stack([
            distance_transform_edt(~m) if m.any() else np.zeros(m.shape)
            for m in masks.reshape(-1, S, S)
        ])  # fmt: skip
        self.outside = torch.as_tensor(outside, dtype=torch.float32).reshape(n * V, 1, S, S)
        self.size = S

    def mismatch(self, x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) coverage + containment error, px², of poses ``x`` (n, 17, 3) world mm."""
        n, V = self.count.shape
        cam = (self.R[:, :, None] @ x[:, None, :, :, None])[..., 0] + self.t[:, :, None]
        uv = project_points(cam, self.K, self.dist, self.dist_model)  # (n, V, 17, 2) crop px
        a, b = uv[:, :, _PARENT], uv[:, :, _CHILD]  # (n, V, B, 2) bone ends
        depth = (cam[:, :, _PARENT, 2] + cam[:, :, _CHILD, 2]) / 2
        radius_px = self.K[:, :, None, 0, 0] * _RADIUS_MM / depth  # (n, V, B)

        # Coverage: random silhouette pixels, each at most its nearest capsule's surface away.
        drawn = torch.randint(0, 1 << 30, (n, V, pixels), generator=generator)
        drawn = drawn % self.count.clamp(min=1)[..., None]
        q = torch.gather(self.xy, 2, drawn[..., None].expand(-1, -1, -1, 2))  # (n, V, P, 2)
        with torch.no_grad():  # which capsule is nearest: the gradient flows through it alone
            nearest = _gap_px(q[..., None, :], a[:, :, None], b[:, :, None], radius_px[:, :, None])
            nearest = nearest.argmin(-1)  # (n, V, P)
        pick = lambda v: torch.gather(v, 2, nearest)  # noqa: E731  (n, V, B) -> (n, V, P)
        ends = [torch.stack([pick(e[..., 0]), pick(e[..., 1])], -1) for e in (a, b)]
        gap = _gap_px(q, *ends, pick(radius_px))  # (n, V, P)
        seen = (self.count > 0).float()  # (n, V)
        coverage = (gap.clamp(min=0.0) ** 2).mean(-1)  # (n, V)
        coverage = (coverage * seen).sum(1) / seen.sum(1).clamp(min=1.0)

        # Containment: points along the bones, bilinearly read from the distance map.
        points = a[..., None, :] + _ALONG[:, None] * (b - a)[..., None, :]  # (n, V, B, 6, 2)
        grid = (points + 0.5) / self.size * 2 - 1  # pixel centre i at (i + 0.5) / S * 2 - 1
        outside = torch.nn.functional.grid_sample(
            self.outside, grid.reshape(n * V, 1, -1, 2), align_corners=False, padding_mode="border"
        ).reshape(n, V, -1)
        containment = ((outside**2).mean(-1) * seen).sum(1) / seen.sum(1).clamp(min=1.0)
        return coverage + containment


def _gap_px(
    q: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """Distance (px) from points ``q`` (..., 2) to the surface of capsules with axis ``a``-``b``
    (..., 2) and ``radius`` (...,); negative inside. x and y are kept apart: no trailing
    dimension of 2 in the big intermediate tensors."""
    abx, aby = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    aqx, aqy = q[..., 0] - a[..., 0], q[..., 1] - a[..., 1]
    along = ((aqx * abx + aqy * aby) / (abx * abx + aby * aby).clamp(min=1e-6)).clamp(0, 1)
    dx, dy = aqx - along * abx, aqy - along * aby
    return (dx * dx + dy * dy + 1e-9).sqrt() - radius
