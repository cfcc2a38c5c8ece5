"""What every converter shares: safe unpickling of annotation files, crop boxes from projected
poses and mmpose annotations, and the resumable loop that writes sequences in the project
format (image and video decoding and crops: ``metricpose.imaging``).

A converter turns its source into :class:`SourceSequence` objects (cameras, world poses,
which source frames to keep, and how to read a camera's frames); :func:`convert` does the rest,
so that resuming, ``--no-frames`` and the final validation behave the same for every dataset.
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metricpose.cameras import Camera
from metricpose.data.format import SequenceMeta, is_complete, write_sequence
from metricpose.errors import InputError
from metricpose.fileio import check_free_space, check_output_folder, require_file
from metricpose.imaging import FrameReader, center_scale_boxes, crop, image_reader, pose_boxes
from metricpose.skeleton import JOINT_NAMES


@dataclass
class SourceSequence:
    """One sequence as a converter found it, before cropping and writing.

    ``poses_world`` is (T, 17, 3) mm with NaN for joints the source lacks or could not
    reconstruct, or None for unlabelled video. ``boxes`` (V, T, 4) are full-image crop
    boxes; converters without poses give them directly. ``source_frames`` (T,) are the indices
    of the kept frames in the source videos/image lists; ``read_frames[v]`` decodes them for
    camera v.
    """

    name: str
    subject: str
    action: str
    fps: float
    cameras: list[Camera]
    source_frames: list[int]
    boxes: np.ndarray
    read_frames: list[FrameReader] | None
    poses_world: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: no other class can be constructed."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to construct {module}.{name}")


def load_arrays_pickle(path: Path) -> Any:
    """Load a pickle of dicts/lists/numpy arrays (the mmpose camera files) without running code.

    Python 2 pickles are read with latin-1 strings, as those files were written.
    """
    path = require_file(path, "camera pickle")
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(
            f"{path}: not a pickle of plain dicts and numpy arrays ({exc}); "
            "metricpose does not unpickle arbitrary objects"
        ) from None


def boxes_from_poses(cameras: list[Camera], poses_world: np.ndarray) -> np.ndarray:
    """(V, T, 4) crop boxes around each camera's projection of (T, 17, 3) world poses."""
    return np.stack([pose_boxes(cam.project(poses_world)) for cam in cameras])


def clean_partial(out: Path) -> None:
    """Remove half-written sequence folders left by an interrupted conversion."""
    for stale in Path(out).glob(".*.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


def convert(
    sequences: Iterable[SourceSequence],
    out: Path,
    crop_size: int,
    with_frames: bool = True,
    source: str = "",
    progress: bool = True,
) -> dict[str, int]:
    """Write every sequence not already complete in ``out``; returns counts written/skipped.

    Sequences are written atomically, so a killed conversion resumes where it stopped and an
    interrupted sequence is redone from scratch.
    """
    from tqdm import tqdm

    out = Path(out)
    check_output_folder(out, needed_mb=1.0, purpose="conversion")
    clean_partial(out)
    counts = {"written": 0, "skipped": 0}
    for seq in tqdm(sequences, desc=f"prepare {source}", unit="seq", disable=not progress):
        if is_complete(out / seq.name):
            counts["skipped"] += 1
            continue
        frames_mb = len(seq.cameras) * len(seq.source_frames) * 3 * crop_size**2 / 2**20
        check_free_space(
            out, needed_mb=2 * frames_mb * with_frames + 1.0, purpose=f"sequence {seq.name}"
        )
        _write(seq, out, crop_size, with_frames, source)
        counts["written"] += 1
    return counts


def _write(seq: SourceSequence, out: Path, crop_size: int, with_frames: bool, source: str) -> None:
    T, V = len(seq.source_frames), len(seq.cameras)
    if seq.boxes.shape != (V, T, 4):
        raise AssertionError(f"{seq.name}: boxes {seq.boxes.shape}, expected {(V, T, 4)}")
    frames = None
    if with_frames and seq.read_frames is not None:
        frames = {}
        for v, (cam, read) in enumerate(zip(seq.cameras, seq.read_frames, strict=True)):
            crops = np.zeros((T, crop_size, crop_size, 3), dtype=np.uint8)
            for i, image in enumerate(read(seq.source_frames)):
                if i == 0 and image.shape[:2] != (cam.height, cam.width):
                    warnings.warn(
                        f"{seq.name}, camera {cam.name}: frames are {image.shape[1]}x{image.shape[0]} px "
                        f"but the calibration says {cam.width}x{cam.height}",
                        stacklevel=2,
                    )
                crops[i] = crop(image, seq.boxes[v, i], crop_size)
            frames[cam.name] = crops
    extra = {"source": source, "source_frames": [int(f) for f in seq.source_frames], **seq.extra}
    if seq.poses_world is not None and np.isnan(seq.poses_world).any():
        absent = np.isnan(seq.poses_world).any(axis=(0, 2))
        extra["missing_joints"] = [n for n, a in zip(JOINT_NAMES, absent, strict=True) if a]
    meta = SequenceMeta(
        subject=seq.subject,
        action=seq.action,
        fps=float(seq.fps),
        num_frames=T,
        crop_size=crop_size,
        cameras=[c.name for c in seq.cameras],
        extra=extra,
    )
    write_sequence(out, seq.name, meta, seq.cameras, seq.boxes, frames, seq.poses_world)


def load_annotation_npz(path: Path) -> dict[str, np.ndarray]:
    """mmpose's preprocessed annotations: imgname (N,), center (N, 2) px, scale (N,), S (N, 17, 4) m."""
    keys = ("imgname", "center", "scale", "S")
    path = require_file(path, "annotation file")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: unreadable .npz ({exc})") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(f"{path}: lacks {missing} (has {sorted(data)})")
    n = len(data["imgname"])
    for key in keys:
        if len(data[key]) != n:
            raise InputError(f"{path}: {key!r} has {len(data[key])} rows, imgname has {n}")
    if data["S"].ndim != 3 or data["S"].shape[1:2] != (17,) or data["S"].shape[2] < 3:
        raise InputError(f"{path}: 'S' must be (N, 17, 3 or 4), got {data['S'].shape}")
    for key in ("S", "center", "scale"):
        if not np.all(np.isfinite(data[key])):
            raise InputError(f"{path}: {key!r} contains NaN or Inf")
    if np.median(np.abs(data["S"][..., :3])) > 50:
        raise InputError(f"{path}: 'S' looks like millimetres; the mmpose layout stores metres")
    return data


def world_from_views(
    cameras: list[Camera], poses_cam: np.ndarray, where: Path, tolerance_mm: float = 20.0
) -> np.ndarray:
    """World poses from per-camera annotations of the same instants, checked for agreement.

    Args:
        poses_cam: (V, T, J, 3) camera-frame mm, one slice per camera.

    Returns:
        (T, J, 3) world mm (from the first camera).
    """
    world = cameras[0].camera_to_world(poses_cam[0])
    for v in range(1, len(cameras)):
        err = np.nanmax(np.abs(cameras[v].camera_to_world(poses_cam[v]) - world))
        if err > tolerance_mm:
            raise InputError(
                f"{where}: the 3D poses annotated for camera {cameras[v].name} disagree with "
                f"camera {cameras[0].name}'s by {err:.0f} mm in the world frame "
                "(mixed-up subjects or wrong calibration?)"
            )
    return world


def mmpose_views(
    root: Path, data: dict[str, np.ndarray], rows: np.ndarray, instants: list[int]
) -> tuple[np.ndarray, list[FrameReader]]:
    """Crop boxes (V, T, 4) and per-camera image readers of mmpose annotation rows (V, T)."""
    boxes = center_scale_boxes(data["center"][rows], data["scale"][rows])
    readers = [
        image_reader(
            {t: root / str(data["imgname"][r]) for t, r in zip(instants, row, strict=True)}
        )
        for row in rows
    ]
    return boxes, readers
