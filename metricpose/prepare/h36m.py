"""Human3.6M → the project format, from the official download or mmpose's preprocessed layout.

Official layout (what the dataset's site serves, unpacked)::

    ROOT/S1/MyPoseFeatures/D3_Positions/<Action>.cdf   "Pose": (1, N, 96) world mm, 32 joints
    ROOT/S1/Videos/<Action>.<camera id>.mp4            50 fps, 1000×1000 (two cameras 1000×1002)

mmpose layout: extracted frames ``ROOT/S1/S1_<Action>.<camera id>/S1_<Action>.<camera id>_<frame>.jpg``
and an annotation ``.npz`` (``imgname``, ``center``, ``scale``, ``S`` camera-frame metres).

Cameras come from the published calibration shipped with the package (h36m_cameras.json:
intrinsics, Human3.6M's own distortion model, and per-subject extrinsics).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from metricpose.cameras import Camera
from metricpose.errors import InputError
from metricpose.fileio import require_dir, require_file
from metricpose.imaging import video_frame_count, video_reader
from metricpose.prepare.common import (
    SourceSequence,
    boxes_from_poses,
    load_annotation_npz,
    mmpose_views,
    world_from_views,
)

SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
FPS = 50.0
#: Our 17 joints picked from the 32 of the D3_Positions files (the common Human3.6M subset).
FROM_H36M_32: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
#: Videos known to be damaged in the official release, as (subject, exact take, camera): that
#: camera is left out of that take only ("Directions 1" of S11 keeps all four), as VideoPose3D.
DAMAGED_VIDEOS = {("S11", "Directions", "54138969")}
#: Subject-specific spellings of the same action.
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}


def load_cameras() -> dict[str, list[Camera]]:
    """The published calibration: subject -> its 4 cameras (world → camera, mm, h36m distortion)."""
    text = resources.files("metricpose.prepare").joinpath("h36m_cameras.json").read_text()
    return {
        subject: [Camera.from_dict(entry, "h36m_cameras.json") for entry in entries]
        for subject, entries in json.loads(text).items()
    }


def action_label(take: str) -> str:
    """'Directions 1' -> 'Directions'; 'TakingPhoto' -> 'Photo'."""
    base = re.sub(r"[ _]?\d+$", "", take).strip()
    return ACTION_ALIASES.get(base, base)


def sequence_name(subject: str, take: str) -> str:
    return f"{subject}_{take.replace(' ', '_')}"


def read_cdf_poses(path: Path) -> np.ndarray:
    """(N, 17, 3) world mm from a D3_Positions .cdf; clear errors for broken files."""
    import cdflib

    path = require_file(path, "pose file")
    try:
        cdf = cdflib.CDF(str(path))
        variables = cdf.cdf_info().zVariables + cdf.cdf_info().rVariables
        if "Pose" not in variables:
            raise InputError(f"{path}: no 'Pose' variable (has {variables})")
        raw = np.asarray(cdf.varget("Pose"), dtype=np.float64)
    except InputError:
        raise
    except (
        Exception
    ) as exc:  # cdflib raises plain OSError/ValueError/struct errors on corrupt files
        raise InputError(f"{path}: unreadable CDF file ({type(exc).__name__}: {exc})") from None
    raw = raw.reshape(-1, raw.shape[-1]) if raw.ndim == 3 else raw
    if raw.ndim != 2 or raw.shape[1] != 96:
        raise InputError(f"{path}: 'Pose' must be (1, N, 96) (32 joints × xyz), got {raw.shape}")
    if not np.all(np.isfinite(raw)):
        raise InputError(f"{path}: 'Pose' contains NaN or Inf")
    return raw.reshape(-1, 32, 3)[:, FROM_H36M_32]


def official_sequences(
    root: Path, subjects: list[str] | None = None, stride: int = 5, with_frames: bool = True
) -> Iterator[SourceSequence]:
    """Sequences of the official layout, one per subject and take, all working cameras."""
    root = require_dir(root, "Human3.6M folder")
    calibration = load_cameras()
    for subject in subjects or SUBJECTS:
        if subject not in calibration:
            raise InputError(f"{subject}: no published calibration (known: {list(calibration)})")
        pose_dir = require_dir(root / subject / "MyPoseFeatures" / "D3_Positions", "pose folder")
        takes = sorted(p.stem for p in pose_dir.glob("*.cdf") if not p.name.startswith("_"))
        if not takes:
            raise InputError(f"{pose_dir}: no .cdf pose files")
        for take in takes:
            poses = read_cdf_poses(pose_dir / f"{take}.cdf")
            cameras = calibration[subject]
            frame_count = len(poses)
            videos: list[Path] = []
            if with_frames:
                cameras = [c for c in cameras if (subject, take, c.name) not in DAMAGED_VIDEOS]
                if len(cameras) < len(calibration[subject]):
                    warnings.warn(
                        f"{subject} {take}: leaving out the known damaged video of camera 54138969",
                        stacklevel=2,
                    )
                videos = [
                    require_file(root / subject / "Videos" / f"{take}.{c.name}.mp4", "video")
                    for c in cameras
                ]
                counts = [video_frame_count(v) for v in videos]
                if min(counts) != len(poses) or max(counts) != len(poses):
                    warnings.warn(
                        f"{subject} {take}: {len(poses)} pose frames but videos have {counts} "
                        f"frames; keeping the first {min([*counts, len(poses)])}",
                        stacklevel=2,
                    )
                frame_count = min([*counts, len(poses)])
            keep = list(range(0, frame_count, stride))
            world = poses[keep]
            yield SourceSequence(
                name=sequence_name(subject, take),
                subject=subject,
                action=action_label(take),
                fps=FPS / stride,
                cameras=cameras,
                source_frames=keep,
                boxes=boxes_from_poses(cameras, world),
                read_frames=[video_reader(v) for v in videos] if with_frames else None,
                poses_world=world,
                extra={"take": take},
            )


_MMPOSE_NAME = re.compile(r"^(S\d+)/(S\d+)_(.+)\.(\d+)/\2_\3\.\4_(\d+)\.jpg$")


def mmpose_sequences(root: Path, annotations: Path) -> Iterator[SourceSequence]:
    """Sequences of mmpose's preprocessed layout: instants seen by every listed camera.

    Frame files are numbered from 1; ``source_frames`` counts from 0 like the videos.
    """
    root = require_dir(root, "Human3.6M image folder")
    data = load_annotation_npz(annotations)
    calibration = load_cameras()
    groups: dict[tuple[str, str], dict[str, dict[int, int]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for row, name in enumerate(data["imgname"]):
        match = _MMPOSE_NAME.match(str(name))
        if not match:
            raise InputError(
                f"{annotations}: imgname {name!r} does not follow S<k>/S<k>_<Action>.<camera>/…_<frame>.jpg"
            )
        subject, _, take, camera, frame = match.groups()
        groups[(subject, take)][camera][int(frame) - 1] = row
    for (subject, take), by_camera in sorted(groups.items()):
        if subject not in calibration:
            raise InputError(f"{annotations}: {subject} has no published calibration")
        cameras = [c for c in calibration[subject] if c.name in by_camera]
        instants = sorted(set.intersection(*(set(by_camera[c.name]) for c in cameras)))
        if not instants:
            warnings.warn(
                f"{subject} {take}: no frame is seen by all its cameras; skipped", stacklevel=2
            )
            continue
        rows = np.array([[by_camera[c.name][t] for t in instants] for c in cameras])  # (V, T)
        world = world_from_views(cameras, data["S"][rows, :, :3] * 1000.0, annotations)
        gaps = np.diff(instants)
        boxes, readers = mmpose_views(root, data, rows, instants)
        yield SourceSequence(
            name=sequence_name(subject, take),
            subject=subject,
            action=action_label(take.replace("_", " ")),
            fps=FPS / (float(np.median(gaps)) if len(gaps) else 1.0),
            cameras=cameras,
            source_frames=instants,
            boxes=boxes,
            read_frames=readers,
            poses_world=world,
            extra={"take": take.replace("_", " ")},
        )
