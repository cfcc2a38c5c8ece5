"""A user's own synchronised multi-view recording → the project format.

Layout of one recording (one subject, one take; docs/datasets.md has the full description)::

    RIG/
      cameras.json              our cameras.json (list of cameras, mm) – or instead:
      calibration/<camera>.yaml OpenCV FileStorage files: camera_matrix, distortion_coefficients,
                                R (3×3) or rvec, T or tvec (mm), image_width, image_height
      videos/<camera>.<ext>     one synchronised video per camera – or instead:
      images/<camera>/*.jpg|png one folder of frames per camera (sorted by name)
      poses_3d.npy              optional: (T, 17, 3) world mm, Human3.6M joint order, NaN = unknown
      boxes.npy                 optional: (V, T, 4) person boxes (x0, y0, x1, y1) in px

Crop boxes come from ``boxes.npy`` if given, else from the projected 3D poses, else the
largest centred square of each frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from metricpose.cameras import Camera, load_cameras_json
from metricpose.data.format import check_pose_units, load_array
from metricpose.errors import InputError
from metricpose.fileio import require_dir
from metricpose.imaging import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    image_reader,
    video_frame_count,
    video_reader,
    whole_frame_box,
)
from metricpose.prepare.common import SourceSequence, boxes_from_poses
from metricpose.skeleton import NUM_JOINTS


class _OpenCVLoader(yaml.SafeLoader):
    """Safe YAML loader that understands OpenCV's ``!!opencv-matrix`` nodes."""


def _opencv_matrix(loader: yaml.SafeLoader, node: yaml.Node) -> np.ndarray:
    m = loader.construct_mapping(node, deep=True)
    return np.asarray(m["data"], dtype=np.float64).reshape(int(m["rows"]), int(m["cols"]))


_OpenCVLoader.add_constructor("tag:yaml.org,2002:opencv-matrix", _opencv_matrix)


def load_opencv_camera(path: Path, name: str) -> Camera:
    """A camera from an OpenCV calibration YAML (as written by cv::FileStorage); t in mm."""
    text = path.read_text(errors="replace")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("%YAML"))
    try:
        raw: Any = yaml.load(text, Loader=_OpenCVLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not an OpenCV calibration YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of calibration entries")

    def pick(*keys: str) -> Any:
        for key in keys:
            if key in raw:
                return raw[key]
        raise InputError(f"{path}: missing {' or '.join(keys)}")

    try:
        K = np.asarray(pick("camera_matrix", "K"), dtype=np.float64)
        dist = np.asarray(
            pick("distortion_coefficients", "dist_coeffs", "D"), dtype=np.float64
        ).ravel()
        if "R" in raw:
            R = np.asarray(raw["R"], dtype=np.float64)
        else:
            R = Rotation.from_rotvec(np.asarray(pick("rvec"), dtype=np.float64).ravel()).as_matrix()
        t = np.asarray(pick("T", "tvec", "t"), dtype=np.float64).ravel()
        width, height = int(pick("image_width", "width")), int(pick("image_height", "height"))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: malformed calibration value ({exc})") from None
    if dist.size not in (4, 5):
        raise InputError(f"{path}: expected 4 or 5 distortion coefficients, got {dist.size}")
    entry = {"name": name, "K": K.tolist(), "R": R.tolist(), "t": t.tolist(), "dist": dist.tolist(),
             "width": width, "height": height}  # fmt: skip
    return Camera.from_dict(entry, str(path))


def load_rig_cameras(root: Path) -> list[Camera]:
    """Cameras from RIG/cameras.json, or from RIG/calibration/*.yaml (sorted by name)."""
    json_path = root / "cameras.json"
    if json_path.is_file():
        return load_cameras_json(json_path)
    yamls = sorted((root / "calibration").glob("*.y*ml")) if (root / "calibration").is_dir() else []
    if not yamls:
        raise InputError(f"{root}: neither cameras.json nor calibration/<camera>.yaml found")
    return [load_opencv_camera(p, p.stem) for p in yamls]


def _camera_frames(root: Path, camera: str) -> tuple[int, Any] | None:
    """(frame count, reader) of one camera's video or image folder; None if it has neither."""
    videos = [
        p for p in (root / "videos").glob(f"{camera}.*") if p.suffix.lower() in VIDEO_SUFFIXES
    ]
    if videos:
        return video_frame_count(videos[0]), video_reader(videos[0])
    folder = root / "images" / camera
    if folder.is_dir():
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return len(images), image_reader(images)
    return None


def _load_optional(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if not path.is_file():
        return None
    arr = load_array(path).astype(np.float64)
    if arr.shape != shape:
        raise InputError(f"{path}: {what} must have shape {shape}, got {arr.shape}")
    return arr


def sequences(
    root: Path,
    subject: str,
    action: str = "capture",
    fps: float = 25.0,
    stride: int = 1,
    with_frames: bool = True,
) -> Iterator[SourceSequence]:
    """The single sequence of a user's recording folder."""
    root = require_dir(root, "recording folder")
    cameras = load_rig_cameras(root)
    readers, counts = [], []
    for cam in cameras:
        found = _camera_frames(root, cam.name) if with_frames else None
        if with_frames and found is None:
            raise InputError(
                f"{root}: camera {cam.name!r} has neither videos/{cam.name}.<ext> nor images/{cam.name}/"
            )
        if found:
            counts.append(found[0])
            readers.append(found[1])
    poses_path = root / "poses_3d.npy"
    poses = None
    if poses_path.is_file():
        poses = load_array(poses_path).astype(np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (NUM_JOINTS, 3):
            raise InputError(
                f"{poses_path}: must have shape (T, {NUM_JOINTS}, 3), got {poses.shape}"
            )
        check_pose_units(poses, poses_path)
        counts.append(len(poses))
    if not counts:
        raise InputError(f"{root}: nothing to convert: --no-frames and no poses_3d.npy")
    if len(set(counts)) > 1:
        raise InputError(
            f"{root}: cameras and poses disagree on the number of frames "
            f"({dict(zip([c.name for c in cameras] + ['poses_3d.npy'], counts, strict=False))}); "
            "trim them to the synchronised part"
        )
    keep = list(range(0, counts[0], stride))
    boxes = _load_optional(root / "boxes.npy", (len(cameras), counts[0], 4), "boxes")
    if boxes is not None:
        boxes = boxes[:, keep]
    elif poses is not None:
        boxes = boxes_from_poses(cameras, poses[keep])
    else:
        boxes = np.stack(
            [np.tile(whole_frame_box(c.width, c.height), (len(keep), 1)) for c in cameras]
        )
    if poses is not None and np.isnan(boxes).any():
        raise InputError(f"{poses_path}: some frames have no known joint to place a crop box")
    yield SourceSequence(
        name=f"{subject}_{action}",
        subject=subject,
        action=action,
        fps=fps / stride,
        cameras=cameras,
        source_frames=keep,
        boxes=boxes,
        read_frames=readers if with_frames else None,
        poses_world=poses[keep] if poses is not None else None,
    )
