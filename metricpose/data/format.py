"""The on-disk multi-view dataset format that every producer writes and every consumer reads.

Layout (documented for users in docs/dataset_format.md)::

    DATASET/
      <sequence>/                  one subject + action/take
        meta.json                  {"format": "metricpose-sequence", "version": 1, "subject",
                                    "action", "fps", "num_frames", "crop_size", "cameras"}
        cameras.json               list of cameras (see metricpose.cameras.Camera.to_dict)
        poses_3d.npy               (T, 17, 3) float, world mm, Human3.6M order; absent if unlabelled
        boxes.npy                  (V, T, 4) float, crop box (x0, y0, x1, y1) in full-image px
        frames/<camera name>.npy   (T, S, S, 3) uint8 RGB crops, memory-mapped when read

A sequence folder is complete once ``meta.json`` exists: writers build the folder under a
temporary name and rename it into place, so an interrupted write never looks complete.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metricpose.cameras import Camera, crop_intrinsics
from metricpose.errors import InputError
from metricpose.skeleton import BONES, JOINT_NAMES, NUM_JOINTS, root_relative

FORMAT_NAME = "metricpose-sequence"
FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: A median bone shorter than this (in the file's unit) means the poses are not in millimetres.
_MIN_MEDIAN_BONE_MM = 20.0
_MAX_COORDINATE_MM = 1e8  # 100 km
_MAX_BONE_MM = 2000.0  # no human bone is 2 m long


class DatasetError(InputError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


@dataclass
class SequenceMeta:
    subject: str
    action: str
    fps: float
    num_frames: int
    crop_size: int
    cameras: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "subject": self.subject,
            "action": self.action,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "crop_size": self.crop_size,
            "cameras": self.cameras,
            **self.extra,
        }


def _check_name(name: str, what: str, where: Path) -> None:
    # Names become file names; refuse anything that could leave the dataset folder.
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise DatasetError(
            f"{where}: {what} {name!r} is not a safe name (letters, digits, _ . + -)"
        )


def write_sequence(
    root: Path,
    name: str,
    meta: SequenceMeta,
    cameras: list[Camera],
    boxes: np.ndarray,
    frames: dict[str, np.ndarray] | None,
    poses_3d: np.ndarray | None,
    masks: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write one sequence atomically (temporary folder, then rename). Returns its folder.

    ``masks``: per camera name, (T, S, S) bool person silhouettes in the crops (optional)."""
    root = Path(root)
    _check_name(name, "sequence name", root)
    final = root / name
    tmp = root / f".{name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    writing = tmp / "cameras.json"
    try:
        (tmp / "frames").mkdir(parents=True)
        writing.write_text(json.dumps([c.to_dict() for c in cameras], indent=1))
        writing = tmp / "boxes.npy"
        np.save(writing, np.asarray(boxes, dtype=np.float32))
        if poses_3d is not None:
            writing = tmp / "poses_3d.npy"
            np.save(writing, np.asarray(poses_3d, dtype=np.float32))
        for cam_name, crops in (frames or {}).items():
            writing = tmp / "frames" / f"{cam_name}.npy"
            np.save(writing, np.ascontiguousarray(crops, dtype=np.uint8))
        for cam_name, silhouettes in (masks or {}).items():
            writing = tmp / "masks" / f"{cam_name}.npy"
            writing.parent.mkdir(exist_ok=True)
            np.save(writing, np.ascontiguousarray(silhouettes, dtype=bool))
        # Declared, so that a frames file lost later is an error rather than a sequence left out.
        declared = {**meta.to_dict(), "frames": bool(frames)}
        writing = tmp / "meta.json"
        writing.write_text(json.dumps(declared, indent=1))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written sequence left behind
        what = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise OSError(f"{final / writing.relative_to(tmp)}: cannot write ({what})") from None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def is_complete(folder: Path) -> bool:
    return (Path(folder) / "meta.json").is_file()


def list_sequences(root: Path) -> list[Path]:
    """Complete sequence folders under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_complete(p)
    )


def load_json(path: Path) -> Any:
    """Parsed JSON; one DatasetError naming the file if it is missing or invalid."""
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply to be a metricpose file") from None


def recorded_test_subjects(root: Path) -> list[str] | None:
    """The test people recorded in a studio's ``studio.json`` (written by the studio's
    generate), or None for any other dataset and for studios rendered before it recorded them."""
    path = Path(root) / "studio.json"
    if not path.is_file():
        return None
    studio = load_json(path)
    if not isinstance(studio, dict):
        raise DatasetError(f"{path}: not a studio description (a JSON object)")
    recorded = studio.get("test_subjects")
    if recorded is not None and not (
        isinstance(recorded, list) and all(isinstance(s, str) for s in recorded)
    ):
        raise DatasetError(f"{path}: 'test_subjects' must be a list of subject names")
    return recorded


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A numeric .npy array (never unpickled); one DatasetError naming the file otherwise."""
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    _check_npy_size(path)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npy array ({exc})") from None
    except MemoryError:
        raise DatasetError(f"{path}: the array does not fit in memory") from None
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: expected numbers, got an array of {arr.dtype}")
    return arr


def _check_npy_size(path: Path) -> None:
    """The shape an .npy header declares must fit in the file: a header claiming terabytes
    would otherwise make numpy try to allocate them before finding the file short."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            data_bytes = path.stat().st_size - f.tell()
    except (ValueError, OSError, EOFError, TypeError):
        return  # np.load reports what is wrong with the header itself
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > data_bytes:
        raise DatasetError(
            f"{path}: header declares shape {tuple(shape)} ({declared} bytes) but the file holds "
            f"{data_bytes} bytes of data (truncated or corrupt)"
        )


def _refuse_links_out(folder: Path) -> None:
    """A sequence folder, or a file in it, that is a symbolic link leading out of the dataset
    is refused: a dataset is one folder tree that can be checked, copied and trusted as a whole."""
    root = folder.parent.resolve()
    if folder.resolve().parent != root:
        raise DatasetError(f"{folder}: a link to {folder.resolve()}, outside the dataset {root}")
    inside = folder.resolve()
    for path in [*folder.glob("*"), *folder.glob("frames/*"), *folder.glob("masks/*")]:
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise DatasetError(f"{path}: a link to {path.resolve()}, outside its sequence folder")


class SequenceFolder:
    """One sequence of a dataset, validated on open; frames are memory-mapped lazily."""

    def __init__(self, folder: Path, check_frames: bool = True) -> None:
        self.folder = Path(folder)
        _refuse_links_out(self.folder)
        meta_path = self.folder / "meta.json"
        raw = load_json(meta_path)
        self.meta = _parse_meta(raw, meta_path)
        cams_path = self.folder / "cameras.json"
        cams = load_json(cams_path)
        if not isinstance(cams, list) or not cams:
            raise DatasetError(f"{cams_path}: expected a non-empty list of cameras")
        self.cameras = []
        for entry in cams:
            if not isinstance(entry, dict):
                raise DatasetError(
                    f"{cams_path}: each camera must be an object, got {type(entry).__name__}"
                )
            try:
                self.cameras.append(Camera.from_dict(entry, str(cams_path)))
            except ValueError as exc:
                raise DatasetError(str(exc)) from None
        names = [c.name for c in self.cameras]
        if names != self.meta.cameras:
            raise DatasetError(
                f"{cams_path}: camera names {names} differ from meta.json's {self.meta.cameras}"
            )
        for n in names:
            _check_name(n, "camera name", cams_path)
        T, V = self.meta.num_frames, len(self.cameras)

        boxes_path = self.folder / "boxes.npy"
        self.boxes = load_array(boxes_path).astype(np.float64)
        if self.boxes.shape != (V, T, 4):
            raise DatasetError(
                f"{boxes_path}: expected shape {(V, T, 4)} (cameras, frames, 4), got {self.boxes.shape}"
            )
        if not np.all(np.isfinite(self.boxes)):
            raise DatasetError(f"{boxes_path}: contains NaN or Inf")
        if np.any(self.boxes[..., 2] <= self.boxes[..., 0]) or np.any(
            self.boxes[..., 3] <= self.boxes[..., 1]
        ):
            raise DatasetError(f"{boxes_path}: some boxes have x1 <= x0 or y1 <= y0")

        poses_path = self.folder / "poses_3d.npy"
        self.poses_3d: np.ndarray | None = None
        self.missing_joints = _parse_missing_joints(
            self.meta.extra.get("missing_joints"), meta_path
        )
        if poses_path.exists():
            self.poses_3d = _check_poses(load_array(poses_path), T, self.missing_joints, poses_path)

        self._frames: dict[str, np.ndarray] = {}
        declared = self.meta.extra.get("frames")  # written since format 1 by write_sequence
        if declared is not None and not isinstance(declared, bool):
            raise DatasetError(f"{meta_path}: 'frames' must be true or false, got {declared!r}")
        self.has_frames = self._every_camera_has("frames", names, required=declared)
        if check_frames and self.has_frames:
            for n in names:
                self.frames(n)
        self.has_masks = self._every_camera_has("masks", names, required=None)
        if check_frames and self.has_masks:
            for n in names:
                self.masks(n, mmap=True)

    def _every_camera_has(self, kind: str, names: list[str], required: bool | None) -> bool:
        """Whether every camera has ``kind/<camera>.npy``. A missing one is an error naming it
        when ``required``, or, with ``required`` None, when other cameras have theirs (a
        file lost later is an error rather than a sequence quietly read without them)."""
        present = [(self.folder / kind / f"{n}.npy").is_file() for n in names]
        if (required or (required is None and any(present))) and not all(present):
            missing = self.folder / kind / f"{names[present.index(False)]}.npy"
            raise DatasetError(
                f"{missing}: {kind} file missing (the sequence expects {kind} for cameras {names})"
            )
        return all(present)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def labelled(self) -> bool:
        """True when every frame has all 17 joints (sources lacking joints count as unlabelled)."""
        return self.poses_3d is not None and not self.missing_joints

    def replace_poses(self, poses_3d: np.ndarray) -> None:
        """Label every frame with other (T, 17, 3) world poses, mm, in memory only (the files
        stay as they are): pseudo-labels (metricpose.pseudo_labels)."""
        self.poses_3d = poses_3d
        self.missing_joints = []

    def crop_cameras(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every frame's cameras as its crops see them: intrinsics (T, V, 3, 3)
        (``cameras.crop_intrinsics``), R (T, V, 3, 3), t (T, V, 3) mm and distortion (T, V, 5)."""
        T, cams = self.meta.num_frames, self.cameras
        K = np.stack([crop_intrinsics(c.K, self.boxes[v], self.meta.crop_size) for v, c in enumerate(cams)], 1)  # fmt: skip
        per_frame = lambda arrays: np.repeat(np.stack(arrays)[None], T, 0)  # noqa: E731
        R = per_frame([c.R for c in cams])
        t = per_frame([np.asarray(c.t, dtype=np.float64).reshape(3) for c in cams])
        dist = per_frame([np.asarray(c.dist, dtype=np.float64) for c in cams])
        return K, R, t, dist

    def poses_camera(self, frame: int, views: tuple[int, ...] | None = None) -> np.ndarray:
        """(V, 17, 3) root-relative pose of one frame in the chosen cameras' frames, mm."""
        world = self.poses_3d[frame].astype(np.float64)
        cams = self.cameras if views is None else [self.cameras[v] for v in views]
        return np.stack([root_relative(c.world_to_camera(world)) for c in cams])

    def frames(self, camera_name: str) -> np.ndarray:
        """(T, S, S, 3) uint8 crops of one camera, memory-mapped."""
        if camera_name not in self._frames:
            path = self.folder / "frames" / f"{camera_name}.npy"
            arr = load_array(path, mmap=True)
            S, T = self.meta.crop_size, self.meta.num_frames
            if arr.shape != (T, S, S, 3):
                raise DatasetError(
                    f"{path}: expected shape {(T, S, S, 3)} (frames, size, size, RGB), got {arr.shape}"
                )
            if arr.dtype != np.uint8:
                raise DatasetError(f"{path}: expected uint8 pixels, got {arr.dtype}")
            # A plain ndarray over the same mapping: np.memmap's own indexing costs ~25 µs per
            # crop, a tenth of a small training step.
            self._frames[camera_name] = arr.view(np.ndarray)
        return self._frames[camera_name]

    def masks(self, camera_name: str, mmap: bool = False) -> np.ndarray:
        """(T, S, S) bool person silhouettes of one camera's crops (``has_masks``: every camera
        has them); ``mmap``: only checked and memory-mapped, as stored."""
        path = self.folder / "masks" / f"{camera_name}.npy"
        if not path.is_file():
            raise DatasetError(f"{path}: masks file missing")
        arr = load_array(path, mmap=mmap)
        S, T = self.meta.crop_size, self.meta.num_frames
        if arr.shape != (T, S, S):
            raise DatasetError(
                f"{path}: expected shape {(T, S, S)} (frames, size, size), got {arr.shape}"
            )
        if arr.dtype != np.bool_ and arr.dtype != np.uint8:
            raise DatasetError(f"{path}: expected bool (or 0/1 uint8) masks, got {arr.dtype}")
        return arr if mmap else arr.astype(bool)


def _parse_missing_joints(raw: Any, path: Path) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise DatasetError(f"{path}: 'missing_joints' must be a list of joint names")
    unknown = [n for n in raw if n not in JOINT_NAMES]
    if unknown:
        raise DatasetError(f"{path}: 'missing_joints' names unknown joints {unknown}")
    return list(raw)


def _check_poses(poses: np.ndarray, T: int, missing: list[str], path: Path) -> np.ndarray:
    """Validate (T, 17, 3) world poses in mm; NaN is allowed only in the declared missing joints."""
    if poses.shape != (T, NUM_JOINTS, 3):
        raise DatasetError(
            f"{path}: expected shape {(T, NUM_JOINTS, 3)} (frames, joints, xyz), got {poses.shape}"
        )
    present = np.array([n not in missing for n in JOINT_NAMES])
    if not np.all(np.isfinite(poses[:, present])):
        bad = np.argwhere(~np.isfinite(poses) & present[None, :, None])[0]
        raise DatasetError(f"{path}: NaN or Inf (first at frame {bad[0]}, joint {bad[1]})")
    # float32 storage overflows beyond 3e38 and no studio is 100 km wide.
    if np.nanmax(np.abs(poses)) > _MAX_COORDINATE_MM:
        bad = np.argwhere(np.abs(poses) > _MAX_COORDINATE_MM)[0]
        raise DatasetError(
            f"{path}: coordinate {poses[tuple(bad)]:.3g} mm at frame {bad[0]}, joint {bad[1]} is "
            f"implausible (more than {_MAX_COORDINATE_MM:.0e} mm from the world origin)"
        )
    check_pose_units(poses, path)
    return poses.astype(np.float32)


def check_pose_units(poses: np.ndarray, path: Path) -> None:
    """Raise one error naming ``path`` if (T, 17, 3) poses cannot be millimetres: a bone
    longer than any person's, or a median bone so short that the file is in metres (NaN
    joints are ignored)."""
    bones = np.linalg.norm(
        poses[:, [c for _, c in BONES]] - poses[:, [p for p, _ in BONES]], axis=-1
    )
    median_bone = np.nanmedian(bones)
    if np.nanmax(bones) > _MAX_BONE_MM:
        bad = np.unravel_index(np.nanargmax(bones), bones.shape)
        raise DatasetError(
            f"{path}: a bone {bones[bad]:.3g} mm long at frame {bad[0]} is implausible for a "
            f"person (more than {_MAX_BONE_MM:.0f} mm)"
        )
    if median_bone < _MIN_MEDIAN_BONE_MM:
        raise DatasetError(
            f"{path}: median bone length is {median_bone:.3g}, implausibly short for "
            "millimetres; are the poses in metres? Multiply by 1000."
        )


def _parse_meta(raw: Any, path: Path) -> SequenceMeta:
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    if raw.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path}: 'format' must be {FORMAT_NAME!r}, got {raw.get('format')!r}")
    if raw.get("version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: unsupported format version {raw.get('version')!r} (this reader: {FORMAT_VERSION})"
        )
    required = {
        "subject": str,
        "action": str,
        "fps": (int, float),
        "num_frames": int,
        "crop_size": int,
        "cameras": list,
    }
    for key, typ in required.items():
        if key not in raw:
            raise DatasetError(f"{path}: missing key {key!r}")
        if not isinstance(raw[key], typ) or isinstance(raw[key], bool):
            raise DatasetError(f"{path}: {key!r} has the wrong type ({type(raw[key]).__name__})")
    if raw["num_frames"] <= 0 or raw["crop_size"] <= 0 or not 0 < raw["fps"] < math.inf:
        raise DatasetError(f"{path}: num_frames, crop_size and fps must be positive")
    if not raw["cameras"] or not all(isinstance(c, str) for c in raw["cameras"]):
        raise DatasetError(f"{path}: 'cameras' must be a non-empty list of names")
    _check_name(raw["subject"], "subject", path)
    extra = {k: v for k, v in raw.items() if k not in required and k not in ("format", "version")}
    return SequenceMeta(
        subject=raw["subject"],
        action=raw["action"],
        fps=float(raw["fps"]),
        num_frames=raw["num_frames"],
        crop_size=raw["crop_size"],
        cameras=list(raw["cameras"]),
        extra=extra,
    )


def open_dataset(
    root: Path, subjects: list[str] | None = None, check_frames: bool = True
) -> list[SequenceFolder]:
    """Open and validate every complete sequence (optionally only some subjects)."""
    seqs = []
    for folder in list_sequences(root):
        seq = SequenceFolder(folder, check_frames=check_frames)
        if subjects is None or seq.meta.subject in subjects:
            seqs.append(seq)
    if not seqs:
        which = f" for subjects {subjects}" if subjects else ""
        raise DatasetError(f"{root}: no complete sequences{which}")
    return seqs


def check_dataset(root: Path) -> tuple[dict[str, Any], list[str]]:
    """Validate every sequence; return a summary and the list of problems (empty if none)."""
    root = Path(root)
    problems: list[str] = []
    summary: dict[str, Any] = {
        "sequences": 0,
        "frames": 0,
        "crops": 0,
        "labelled_frames": 0,
        "subjects": {},
        "cameras": set(),
    }
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        return summary, [f"{root}: cannot list the dataset folder ({exc.strerror})"]
    for folder in folders:
        if not is_complete(folder):
            problems.append(f"{folder}: incomplete sequence (no meta.json)")
            continue
        try:
            seq = SequenceFolder(folder)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        T = seq.meta.num_frames
        summary["sequences"] += 1
        summary["frames"] += T
        summary["crops"] += T * len(seq.cameras) if seq.has_frames else 0
        summary["labelled_frames"] += T if seq.labelled else 0
        summary["subjects"][seq.meta.subject] = summary["subjects"].get(seq.meta.subject, 0) + T
        summary["cameras"].update(c.name for c in seq.cameras)
    if not summary["sequences"] and not problems:
        problems.append(f"{root}: no sequences found")
    summary["cameras"] = sorted(summary["cameras"])
    return summary, problems
