"""CMU Panoptic Studio → the project format.

Layout of one downloaded sequence::

    ROOT/calibration_<seq>.json                       cameras: name, type, resolution, K,
                                                      distCoef (OpenCV), R, t (cm; x_cam = R·x + t)
    ROOT/hdPose3d_stage1_coco19/body3DScene_<frame>.json   bodies: id, joints19 (19 × x, y, z,
                                                      confidence; world cm)
    ROOT/hdVideos/hd_<panel>_<node>.mp4               29.97 fps

Each person (body id) becomes its own sequence, split where they leave the scene. Joints
Panoptic lacks (spine, head top) and joints it could not reconstruct in a frame (confidence < 0)
are NaN and listed in meta.json's ``missing_joints``; such sequences serve as unlabelled
multi-view video in training.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metricpose.cameras import Camera
from metricpose.data.format import load_json
from metricpose.errors import InputError
from metricpose.fileio import require_dir
from metricpose.imaging import video_reader
from metricpose.prepare.common import SourceSequence, boxes_from_poses
from metricpose.skeleton import FROM_PANOPTIC_19, remap_joints

FPS = 29.97
CM_TO_MM = 10.0


def load_cameras(path: Path, names: list[str] | None = None) -> list[Camera]:
    """HD cameras of a calibration file (all, or those named like '00_03'), in mm."""
    raw = load_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("cameras"), list):
        raise InputError(f"{path}: expected an object with a 'cameras' list")
    by_name = {
        c.get("name"): c for c in raw["cameras"] if isinstance(c, dict) and c.get("type") == "hd"
    }
    wanted = names or sorted(by_name)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise InputError(f"{path}: no HD cameras named {missing}")
    cameras = []
    for name in wanted:
        entry = by_name[name]
        try:
            width, height = entry["resolution"]
            cam = {
                "name": name, "K": entry["K"], "R": entry["R"],
                "t": (np.asarray(entry["t"], dtype=np.float64).ravel() * CM_TO_MM).tolist(),
                "dist": entry.get("distCoef", [0.0] * 5), "dist_model": "opencv",
                "width": width, "height": height,
            }  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path}: camera {name!r} lacks or garbles resolution/K/R/t ({exc})"
            ) from None
        cameras.append(Camera.from_dict(cam, str(path)))
    return cameras


def _read_bodies(path: Path) -> dict[int, np.ndarray]:
    """Body id -> (19, 4) joints (world cm + confidence) of one frame file."""
    raw = load_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("bodies"), list):
        raise InputError(f"{path}: expected an object with a 'bodies' list")
    bodies = {}
    for body in raw["bodies"]:
        try:
            joints = np.asarray(body["joints19"], dtype=np.float64).reshape(19, 4)
            bodies[int(body["id"])] = joints
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: a body lacks 'id' or 19×4 'joints19' ({exc})") from None
    return bodies


def sequences(
    root: Path, cameras: list[str] | None = None, stride: int = 1, with_frames: bool = True
) -> Iterator[SourceSequence]:
    """One sequence per person and continuous stretch of presence."""
    root = require_dir(root, "Panoptic sequence folder")
    calib = sorted(root.glob("calibration_*.json"))
    if not calib:
        raise InputError(f"{root}: no calibration_<sequence>.json")
    seq_name = calib[0].stem.removeprefix("calibration_")
    cams = load_cameras(calib[0], cameras)
    pose_dir = require_dir(root / "hdPose3d_stage1_coco19", "HD pose folder")
    files = sorted(pose_dir.glob("body3DScene_*.json"))
    if not files:
        raise InputError(f"{pose_dir}: no body3DScene_<frame>.json files")
    frames = [int(re.search(r"_(\d+)$", f.stem).group(1)) for f in files][::stride]
    per_body: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for frame, path in zip(frames, files[::stride], strict=True):
        for body_id, joints in _read_bodies(path).items():
            if not np.all(np.isfinite(joints)):
                raise InputError(f"{path}: body {body_id} has NaN or Inf joints")
            xyz = np.where(joints[:, 3:] < 0, np.nan, joints[:, :3]) * CM_TO_MM
            per_body[body_id][frame] = remap_joints(xyz, FROM_PANOPTIC_19)[0]
    videos = [root / "hdVideos" / f"hd_{c.name}.mp4" for c in cams]
    for body_id, by_frame in sorted(per_body.items()):
        present = sorted(by_frame)
        runs = np.split(present, np.flatnonzero(np.diff(present) > stride) + 1)
        for part, run in enumerate(runs):
            keep = [int(f) for f in run]
            world = np.stack([by_frame[f] for f in keep])
            name = f"{seq_name}.p{body_id}" + (f".{part}" if len(runs) > 1 else "")
            yield SourceSequence(
                name=name,
                subject=f"{seq_name}.p{body_id}",
                action=seq_name,
                fps=FPS / stride,
                cameras=cams,
                source_frames=keep,
                boxes=boxes_from_poses(cams, world),
                read_frames=[video_reader(v) for v in videos] if with_frames else None,
                poses_world=world,
                extra={"body_id": body_id},
            )
