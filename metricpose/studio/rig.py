"""Camera rigs of the synthetic studio."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metricpose.cameras import Camera, intrinsics, load_cameras_json, look_at
from metricpose.errors import InputError

#: Human3.6M-like layout: four cameras near the corners of the room, 1.5-2 m high,
#: 4.5-5.5 m from its centre, f ≈ 1145 px for 1000×1000 images.
_H36M_LIKE = (
    # azimuth deg, distance mm, height mm
    (45.0, 5200.0, 1600.0),
    (140.0, 4700.0, 1900.0),
    (222.0, 5400.0, 1550.0),
    (318.0, 4800.0, 1750.0),
)
AIM_MM = np.array([0.0, 0.0, 1000.0])


def _camera(
    name: str,
    azimuth_deg: float,
    distance_mm: float,
    height_mm: float,
    focal_px: float,
    size: int,
    dist: np.ndarray,
) -> Camera:
    az = np.deg2rad(azimuth_deg)
    centre = np.array([distance_mm * np.cos(az), distance_mm * np.sin(az), height_mm])
    R, t = look_at(centre, AIM_MM)
    return Camera(
        K=intrinsics(focal_px, size, size), R=R, t=t, width=size, height=size, dist=dist, name=name
    )


def default_rig(num_cameras: int = 4, image_size: int = 1000) -> list[Camera]:
    """Cameras like Human3.6M's; more than four are spread evenly around the room."""
    focal = 1145.0 * image_size / 1000
    layout = list(_H36M_LIKE[:num_cameras])
    for i in range(len(layout), num_cameras):
        layout.append((360.0 * i / num_cameras + 20.0, 5000.0, 1400.0 + 150.0 * (i % 4)))
    dist = np.array([-0.08, 0.05, 0.0005, -0.0004, 0.0])
    return [_camera(f"cam{i}", *p, focal, image_size, dist) for i, p in enumerate(layout)]


def random_rig(num_cameras: int, rng: np.random.Generator, image_size: int = 1000) -> list[Camera]:
    """Cameras at random azimuths (at least 30° apart), heights, distances, focal lengths and lens
    distortion."""
    while True:
        az = np.sort(rng.uniform(0, 360, num_cameras))
        gaps = np.diff(np.concatenate([az, az[:1] + 360]))
        if num_cameras == 1 or gaps.min() >= min(30.0, 180.0 / num_cameras):
            break
    cams = []
    for i, a in enumerate(az):
        focal = rng.uniform(0.9, 1.3) * 1145.0 * image_size / 1000
        dist = np.array(
            [rng.uniform(-0.25, 0.05), rng.uniform(-0.05, 0.2), *rng.normal(0, 1e-3, 2), 0.0]
        )
        cams.append(
            _camera(
                f"cam{i}",
                a,
                rng.uniform(4000, 6000),
                rng.uniform(1000, 2300),
                focal,
                image_size,
                dist,
            )
        )
    return cams


def load_rig(path: Path) -> list[Camera]:
    """Cameras from a JSON list in the dataset format's cameras.json layout (any count,
    positions, intrinsics and distortion; full-image sizes up to 4096 px)."""
    cameras = load_cameras_json(path)
    if max(max(c.width, c.height) for c in cameras) > 4096:
        raise InputError(
            f"{path}: images larger than 4096 px are not supported by the studio renderer"
        )
    return cameras
