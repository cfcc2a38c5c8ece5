"""Calibrated pinhole cameras with lens distortion.

Conventions (the same everywhere in metricpose):
- world -> camera: ``x_cam = R @ x_world + t``, millimetres; camera looks along +z, image x to
  the right, image y down.
- pixels: (u, v) with the origin at the top-left corner of the top-left pixel's *centre*
  convention of OpenCV (pixel (0, 0) is centred at u = v = 0).
- ``dist`` always holds five numbers in OpenCV's order ``(k1, k2, p1, p2, k3)``.
  ``dist_model`` says how the tangential terms p1, p2 act:

  * ``"opencv"``: x' = x·radial + 2·p1·x·y + p2·(r² + 2x²);  y' = y·radial + p1·(r² + 2y²) + 2·p2·x·y
  * ``"h36m"``: Human3.6M's calibration code (and its published parameters, stored as
    p = (p1, p2)): x' = x·(radial + p1·y + p2·x) + p2·r²;  y' = y·(radial + p1·y + p2·x) + p1·r².
    The cross terms have factor 1, not 2, so the same numbers give a different image.

The projection functions take numpy arrays or torch tensors with any leading batch shape and
return the same kind, so training code (torch) and data code (numpy) share one implementation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metricpose.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: reading data starts quickly
    import torch

DIST_MODELS = ("opencv", "h36m")

Array = Any  # numpy.ndarray or torch.Tensor


def _stack(parts: list[Array], axis: int = -1) -> Array:
    import torch

    if isinstance(parts[0], torch.Tensor):
        return torch.stack(parts, dim=axis)
    return np.stack(parts, axis=axis)


def distort(xy: Array, dist: Array, dist_model: str = "opencv") -> Array:
    """Apply lens distortion to normalised image coordinates.

    Args:
        xy: (..., 2) normalised coordinates (x/z, y/z).
        dist: (..., 5) coefficients (k1, k2, p1, p2, k3), broadcastable against xy[..., 0].
        dist_model: "opencv" or "h36m" (see the module docstring).

    Returns:
        (..., 2) distorted normalised coordinates.
    """
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3 = (dist[..., i] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if dist_model == "opencv":
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    elif dist_model == "h36m":
        tangential = p1 * y + p2 * x
        xd = x * (radial + tangential) + p2 * r2
        yd = y * (radial + tangential) + p1 * r2
    else:
        raise InputError(f"unknown dist_model {dist_model!r}; expected one of {DIST_MODELS}")
    return _stack([xd, yd])


def undistort(
    xy_distorted: Array, dist: Array, dist_model: str = "opencv", iters: int = 20
) -> Array:
    """Invert :func:`distort` by fixed-point iteration (as OpenCV's undistortPoints does).

    Accurate to well below 1e-6 for the mild distortion of studio lenses inside the image.
    xy_distorted: (..., 2) -> (..., 2).
    """
    xy = xy_distorted
    for _ in range(iters):
        xy = xy + (xy_distorted - distort(xy, dist, dist_model))
    return xy


def project_points(
    points_cam: Array, K: Array, dist: Array | None = None, dist_model: str = "opencv"
) -> Array:
    """Project camera-frame points to pixels.

    Args:
        points_cam: (..., N, 3) camera-frame points (any unit; z > 0).
        K: (..., 3, 3) intrinsics.
        dist: (..., 5) distortion coefficients or None for a pinhole camera.

    Returns:
        (..., N, 2) pixel coordinates.
    """
    xy = points_cam[..., :2] / points_cam[..., 2:3]
    if dist is not None:
        xy = distort(xy, dist[..., None, :], dist_model)
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    skew = K[..., 0, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    u = fx * xy[..., 0] + skew * xy[..., 1] + cx
    v = fy * xy[..., 1] + cy
    return _stack([u, v])


def pixels_to_rays(
    pixels: np.ndarray, K: np.ndarray, dist: np.ndarray | None, dist_model: str = "opencv"
) -> np.ndarray:
    """Back-project pixels to camera-frame rays with z = 1. (..., 2) -> (..., 3)."""
    fx, fy, skew, cx, cy = K[0, 0], K[1, 1], K[0, 1], K[0, 2], K[1, 2]
    y = (pixels[..., 1] - cy) / fy
    x = (pixels[..., 0] - cx - skew * y) / fx
    xy = np.stack([x, y], axis=-1)
    if dist is not None and np.any(dist):
        xy = undistort(xy, np.asarray(dist, dtype=xy.dtype), dist_model)
    return np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)


def crop_intrinsics(K: np.ndarray, box: np.ndarray, out_size: int) -> np.ndarray:
    """Intrinsics of a square crop resized to ``out_size`` px.

    Args:
        K: (..., 3, 3) full-image intrinsics.
        box: (..., 4) crop box (x0, y0, x1, y1) in full-image pixels; x1 - x0 is the side.
        out_size: side of the resized crop in px.

    Returns:
        (..., 3, 3) intrinsics that map camera-frame points to crop pixels.
    """
    box = np.asarray(box, dtype=np.float64)
    scale = out_size / (box[..., 2] - box[..., 0])
    # A pixel centre u in the full image lands at (u - x0 + 0.5) * scale - 0.5 in the crop.
    A = np.zeros(box.shape[:-1] + (3, 3))
    A[..., 0, 0] = scale
    A[..., 1, 1] = scale
    A[..., 0, 2] = (0.5 - box[..., 0]) * scale - 0.5
    A[..., 1, 2] = (0.5 - box[..., 1]) * scale - 0.5
    A[..., 2, 2] = 1.0
    return A @ K


def rotation_error(R: np.ndarray) -> float:
    """Largest deviation of R from a proper rotation: max |RᵀR - I| and |det R - 1|."""
    return float(max(np.abs(R.T @ R - np.eye(3)).max(), abs(np.linalg.det(R) - 1.0)))


@dataclass
class Camera:
    """One calibrated camera. Units: K in px, t in mm; x_cam = R @ x_world + t."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    dist_model: str = "opencv"
    name: str = "cam"

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        self.dist = np.concatenate([dist, np.zeros(5 - dist.size)]) if dist.size < 5 else dist
        self.validate()

    def validate(self, where: str = "") -> None:
        """Raise ValueError naming ``where`` and the problem if the parameters are unusable."""
        prefix = f"{where}: camera {self.name!r}: " if where else f"camera {self.name!r}: "
        for key in ("K", "R", "t", "dist"):
            if not np.all(np.isfinite(getattr(self, key))):
                raise InputError(prefix + f"{key} contains NaN or Inf")
        if self.dist.size != 5:
            raise InputError(
                prefix + f"dist must have 5 coefficients (k1, k2, p1, p2, k3), got {self.dist.size}"
            )
        if self.dist_model not in DIST_MODELS:
            raise InputError(
                prefix + f"dist_model must be one of {DIST_MODELS}, got {self.dist_model!r}"
            )
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise InputError(
                prefix + f"focal lengths must be positive, got fx={self.K[0, 0]}, fy={self.K[1, 1]}"
            )
        if not np.allclose(self.K[2], [0, 0, 1]) or self.K[1, 0] != 0:
            raise InputError(
                prefix
                + f"K must be upper triangular with last row (0, 0, 1), got {self.K.tolist()}"
            )
        err = rotation_error(self.R)
        if err > 1e-4:
            raise InputError(
                prefix + f"R is not a rotation matrix (orthonormality/determinant error {err:.3g})"
            )
        if self.width <= 0 or self.height <= 0:
            raise InputError(
                prefix + f"image size must be positive, got {self.width}x{self.height}"
            )

    @property
    def center_world(self) -> np.ndarray:
        """Camera centre in world millimetres, (3,)."""
        return -self.R.T @ self.t

    def world_to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> (..., 3) camera mm."""
        return points_world @ self.R.T + self.t

    def camera_to_world(self, points_cam: np.ndarray) -> np.ndarray:
        """(..., 3) camera mm -> (..., 3) world mm."""
        return (points_cam - self.t) @ self.R

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> (..., 2) pixels, with distortion."""
        return self.project_camera(self.world_to_camera(points_world))

    def project_camera(self, points_cam: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points -> (..., 2) pixels, with distortion."""
        shape = points_cam.shape
        flat = points_cam.reshape(-1, 3)
        return project_points(flat, self.K, self.dist, self.dist_model).reshape(shape[:-1] + (2,))

    def unproject(self, pixels: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """Pixels (..., 2) at camera depths z (...,) in mm -> world points (..., 3) in mm."""
        rays = pixels_to_rays(pixels, self.K, self.dist, self.dist_model)
        return self.camera_to_world(rays * np.asarray(depth_mm)[..., None])

    def to_dict(self) -> dict[str, Any]:
        """The cameras.json entry of this camera."""
        return {
            "name": self.name,
            "K": self.K.tolist(),
            "dist": self.dist.tolist(),
            "dist_model": self.dist_model,
            "R": self.R.tolist(),
            "t": self.t.tolist(),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any], where: str = "") -> Camera:
        """Build from a cameras.json entry; errors name ``where`` (the file) and the problem."""
        missing = [k for k in ("name", "K", "R", "t", "width", "height") if k not in entry]
        if missing:
            raise InputError(f"{where}: camera entry lacks {', '.join(missing)}")
        try:
            K = np.asarray(entry["K"], dtype=np.float64)
            R = np.asarray(entry["R"], dtype=np.float64)
            t = np.asarray(entry["t"], dtype=np.float64)
            dist = np.asarray(entry.get("dist", [0.0] * 5), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"{where}: camera {entry.get('name')!r}: non-numeric parameters ({exc})"
            ) from None
        for key, arr, shape in (("K", K, (3, 3)), ("R", R, (3, 3)), ("t", t, (3,))):
            if arr.shape != shape:
                raise InputError(
                    f"{where}: camera {entry['name']!r}: {key} must have shape {shape}, got {arr.shape}"
                )
        if dist.size not in (4, 5):
            raise InputError(
                f"{where}: camera {entry['name']!r}: dist must have 4 or 5 coefficients, got {dist.size}"
            )
        camera = cls.__new__(cls)
        camera.K, camera.R, camera.t = K, R, t
        camera.dist = np.concatenate([dist, np.zeros(5 - dist.size)])
        camera.dist_model = str(entry.get("dist_model", "opencv"))
        camera.name = str(entry["name"])
        try:
            camera.width, camera.height = int(entry["width"]), int(entry["height"])
        except (TypeError, ValueError):
            raise InputError(
                f"{where}: camera {entry['name']!r}: width/height must be integers"
            ) from None
        camera.validate(where)
        return camera


def look_at(
    center_world: np.ndarray,
    target_world: np.ndarray,
    up: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation of a camera at ``center_world`` looking at ``target_world`` (mm).

    Image y points down, so the camera's y axis is the negated world ``up`` projected onto
    the image plane.
    """
    z = target_world - center_world
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise InputError("look_at: viewing direction is parallel to the up vector")
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center_world


def intrinsics(focal_px: float, width: int, height: int) -> np.ndarray:
    """A 3x3 K with square pixels and the principal point at the image centre."""
    return np.array([[focal_px, 0, (width - 1) / 2], [0, focal_px, (height - 1) / 2], [0, 0, 1.0]])


def intrinsics_matrix(focal_px: np.ndarray, center_px: np.ndarray) -> np.ndarray:
    """A 3x3 K from focal lengths (fx, fy) and principal point (cx, cy), all in px."""
    (fx, fy), (cx, cy) = np.ravel(focal_px)[:2], np.ravel(center_px)[:2]
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def load_cameras_json(path: Path | str) -> list[Camera]:
    """Cameras from a JSON list in the cameras.json layout (docs/dataset_format.md); one clear
    error naming the file for a missing file, invalid JSON or an invalid camera."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: camera file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        raise InputError(f"{path}: expected a non-empty list of camera objects")
    cameras = [Camera.from_dict(e, str(path)) for e in entries]
    if len({c.name for c in cameras}) != len(cameras):
        raise InputError(f"{path}: camera names must be unique")
    return cameras


def triangulate_points(directions: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear (DLT) triangulation of J points seen by V cameras, for G groups (torch).

    Args:
        directions: (G, V, J, 2) normalised image coordinates (x/z, y/z in each camera).
        R, t: (G, V, 3, 3) and (G, V, 3) world -> camera, x_cam = R x_world + t.

    Returns:
        (G, J, 3) world points, in the unit of t.
    """
    import torch

    P = torch.cat([R, t[..., None]], -1)[:, :, None]  # (G, V, 1, 3, 4)
    rows = directions[..., None] * P[..., 2:3, :] - P[..., :2, :]  # (G, V, J, 2, 4)
    A = rows.permute(0, 2, 1, 3, 4).flatten(2, 3)  # (G, J, 2V, 4)
    solution = torch.linalg.svd(A).Vh[..., -1, :]  # (G, J, 4)
    return solution[..., :3] / solution[..., 3:]


def triangulate_views(
    pose: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, crop_size: int
) -> torch.Tensor:
    """World poses triangulated from the views' predictions of G instants (torch): the
    triangulation teacher (losses.triangulation_loss) and the pseudo-labels (pseudo_labels).

    The root is triangulated from the crop centres (the person boxes); each view's prediction
    is placed at it and reduced to its image directions (its own depth guess dropped), and the
    joints are triangulated with the calibrated cameras.

    Args:
        pose: (G, V, 17, 3) root-relative camera-frame predictions, in the unit of t.
        K: (G, V, 3, 3) crop intrinsics, px; R: (G, V, 3, 3) world -> camera; t: (G, V, 3).
        crop_size: crop side, px.

    Returns:
        (G, 17, 3) world joints, in the unit of t.
    """
    import torch

    centre = torch.tensor([(crop_size - 1) / 2, (crop_size - 1) / 2, 1.0], dtype=K.dtype)
    ray = torch.linalg.solve(K, centre.expand(*K.shape[:2], 3))  # (G, V, 3) camera frame
    root = triangulate_points((ray[..., :2] / ray[..., 2:])[:, :, None], R, t)  # (G, 1, 3)
    root_cam = (R @ root[:, None, 0, :, None])[..., 0] + t  # (G, V, 3)
    placed = pose + root_cam[:, :, None]
    return triangulate_points(placed[..., :2] / placed[..., 2:], R, t)
