"""MPI-INF-3DHP → the project format, from the official download or mmpose's preprocessed layout.

Official training set::

    ROOT/S<k>/Seq<j>/annot.mat            annot3: per camera (N, 84) camera-frame mm, 28 joints
    ROOT/S<k>/Seq<j>/camera.calibration   per camera: size, intrinsic 4×4, extrinsic 4×4 (mm)
    ROOT/S<k>/Seq<j>/imageSequence/video_<c>.avi

Official test set (one camera per sequence, camera-frame annotations)::

    ROOT/mpi_inf_3dhp_test_set/TS<k>/annot_data.mat   (MATLAB v7.3 / HDF5) annot3 and
                                                       univ_annot3 (N, 1, 17, 3), valid_frame (N, 1),
                                                       activity_annotation (N, 1) ids 1-7
    ROOT/mpi_inf_3dhp_test_set/TS<k>/imageSequence/img_<frame from 1, 6 digits>.jpg

The test set ships no calibration file: its intrinsics (least-squares estimates, within 0.25%
of the documented calibration) are in mpi_inf_3dhp_test_cameras.json; its world frame is the
camera frame. Each run of one activity becomes a sequence, so that ``metricpose evaluate``
reports the official per-activity table beside PCK@150 mm and AUC over all frames.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from metricpose.cameras import Camera, intrinsics_matrix
from metricpose.errors import InputError
from metricpose.fileio import require_dir, require_file
from metricpose.imaging import image_reader, video_frame_count, video_reader
from metricpose.prepare.common import (
    SourceSequence,
    boxes_from_poses,
    load_annotation_npz,
    load_arrays_pickle,
    mmpose_views,
    world_from_views,
)
from metricpose.skeleton import FROM_MPI_INF_3DHP_17, FROM_MPI_INF_3DHP_28, remap_joints

TRAIN_FPS = 25.0
# The test set's ``activity_annotation`` ids 1-7 (mpii_get_activity_name.m), as action names.
TEST_ACTIVITIES = {
    1: "standing_walking",
    2: "exercising",
    3: "sitting",
    4: "reaching_crouching",
    5: "on_the_floor",
    6: "sports",
    7: "miscellaneous",
}
ACTIVITY = "activity_annotation"
#: Cameras 11-13 look down from the ceiling; the usual protocols leave them out.
DEFAULT_CAMERAS = tuple(range(11))
ALL_CAMERAS = tuple(range(14))


def parse_calibration(path: Path) -> dict[int, Camera]:
    """Cameras of a ``camera.calibration`` file (Skeletool format), keyed by camera number."""
    path = require_file(path, "camera calibration")
    cameras: dict[int, Camera] = {}
    blocks = re.split(r"^name\s+", path.read_text(errors="replace"), flags=re.M)[1:]
    if not blocks:
        raise InputError(f"{path}: no 'name' entries; not a camera.calibration file")
    for block in blocks:
        fields: dict[str, list[str]] = {}
        lines = block.splitlines()
        for line in lines[1:]:
            parts = line.split()
            if parts:
                fields[parts[0]] = parts[1:]
        try:
            number = int(lines[0].split()[0])
            width, height = (int(v) for v in fields["size"][:2])
            K4 = np.array(fields["intrinsic"], dtype=np.float64).reshape(4, 4)
            E = np.array(fields["extrinsic"], dtype=np.float64).reshape(4, 4)
        except (KeyError, ValueError, IndexError) as exc:
            raise InputError(
                f"{path}: camera entry {lines[0].strip()!r} lacks or garbles size/intrinsic/"
                f"extrinsic ({type(exc).__name__}: {exc})"
            ) from None
        entry = {"name": f"cam{number}", "K": K4[:3, :3].tolist(), "R": E[:3, :3].tolist(),
                 "t": E[:3, 3].tolist(), "width": width, "height": height}  # fmt: skip
        cameras[number] = Camera.from_dict(entry, str(path))
    return cameras


def _mat_cells(path: Path, key: str) -> list[np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, IndexError, OSError... on corrupt files
        raise InputError(f"{path}: unreadable .mat file ({type(exc).__name__}: {exc})") from None
    if key not in mat:
        raise InputError(
            f"{path}: no {key!r} variable (has {sorted(k for k in mat if not k.startswith('__'))})"
        )
    return [np.asarray(c, dtype=np.float64) for c in np.asarray(mat[key]).ravel()]


def training_sequences(
    root: Path,
    subjects: list[str] | None = None,
    cameras: tuple[int, ...] = DEFAULT_CAMERAS,
    stride: int = 5,
    with_frames: bool = True,
) -> Iterator[SourceSequence]:
    """One sequence per subject and Seq, the chosen cameras (default: all but the ceiling ones)."""
    root = require_dir(root, "MPI-INF-3DHP folder")
    for subject in subjects or [f"S{k}" for k in range(1, 9)]:
        for seq_dir in sorted(require_dir(root / subject, "subject folder").glob("Seq*")):
            annot = require_file(seq_dir / "annot.mat", "annotation file")
            calibration = parse_calibration(seq_dir / "camera.calibration")
            annot3 = _mat_cells(annot, "annot3")
            missing = [c for c in cameras if c >= len(annot3) or c not in calibration]
            if missing:
                raise InputError(
                    f"{seq_dir}: cameras {missing} missing from annot.mat or camera.calibration"
                )
            poses_cam = []
            for c in cameras:
                cell = annot3[c]
                if cell.ndim != 2 or cell.shape[1] != 84:
                    raise InputError(
                        f"{annot}: annot3 of camera {c} must be (N, 84), got {cell.shape}"
                    )
                poses_cam.append(remap_joints(cell.reshape(-1, 28, 3), FROM_MPI_INF_3DHP_28)[0])
            frame_count = min(len(p) for p in poses_cam)
            videos = [seq_dir / "imageSequence" / f"video_{c}.avi" for c in cameras]
            if with_frames:
                counts = [video_frame_count(v) for v in videos]
                frame_count = min(frame_count, *counts)
            keep = list(range(0, frame_count, stride))
            cams = [calibration[c] for c in cameras]
            world = world_from_views(cams, np.stack([p[keep] for p in poses_cam]), annot)
            yield SourceSequence(
                name=f"{subject}_{seq_dir.name}",
                subject=subject,
                action=seq_dir.name,
                fps=TRAIN_FPS / stride,
                cameras=cams,
                source_frames=keep,
                boxes=boxes_from_poses(cams, world),
                read_frames=[video_reader(v) for v in videos] if with_frames else None,
                poses_world=world,
            )


def load_test_cameras() -> dict[str, Camera]:
    """The six test sequences' intrinsics (camera frame = world frame): per-sequence
    least-squares estimates, within 0.25% / 5 px of the documented calibration
    (docs/datasets.md)."""
    text = (
        resources.files("metricpose.prepare").joinpath("mpi_inf_3dhp_test_cameras.json").read_text()
    )
    return {
        name: Camera(
            K=intrinsics_matrix(e["f"], e["c"]),
            R=np.eye(3),
            t=np.zeros(3),
            width=e["width"],
            height=e["height"],
            name=name,
        )  # fmt: skip
        for name, e in json.loads(text).items()
    }


def _read_test_annotations(path: Path) -> dict[str, np.ndarray]:
    """``annot3`` and ``univ_annot3`` as (N, 17, 3) camera-frame mm in 3DHP's 17-joint order,
    ``valid_frame`` as (N,) bool and, where the file has it, ``activity_annotation`` as (N,)
    int ids 1-7."""
    import h5py

    path = require_file(path, "test annotation file")
    keys = ("annot3", "univ_annot3", "valid_frame")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise InputError(f"{path}: no {missing} variable (has {sorted(f)})")
            data = {k: np.asarray(f[k], dtype=np.float64) for k in (*keys, ACTIVITY) if k in f}
    except OSError as exc:
        raise InputError(f"{path}: not a MATLAB v7.3 (HDF5) file ({exc})") from None
    data["valid_frame"] = data["valid_frame"].ravel().astype(bool)
    if ACTIVITY in data:
        activity = data[ACTIVITY].ravel()
        valid = data["valid_frame"]
        if len(activity) != len(valid) or not np.isin(activity[valid], list(TEST_ACTIVITIES)).all():
            raise InputError(
                f"{path}: activity_annotation must hold one id 1-7 per frame "
                f"({len(data['valid_frame'])} frames), got {activity.shape} values "
                f"{sorted(set(activity.tolist()))[:8]}"
            )
        data[ACTIVITY] = activity.astype(int)
    for key in ("annot3", "univ_annot3"):
        a = data[key]
        data[key] = a.reshape(a.shape[0], -1, 3) if a.ndim == 4 else a
        if data[key].shape[1:] != (17, 3) or len(data["valid_frame"]) != len(data[key]):
            raise InputError(
                f"{path}: {key} must be (N, 1, 17, 3) with N valid_frame flags, got "
                f"{a.shape} and {len(data['valid_frame'])}"
            )
        if not np.all(np.isfinite(data[key][data["valid_frame"]])):
            raise InputError(f"{path}: {key} has NaN or Inf in valid frames")
    return data


def testset_sequences(
    root: Path, stride: int = 1, with_frames: bool = True
) -> Iterator[SourceSequence]:
    """The six test sequences TS1-TS6, valid frames only (every ``stride``-th of them)."""
    base = root / "mpi_inf_3dhp_test_set" if (root / "mpi_inf_3dhp_test_set").is_dir() else root
    require_dir(base, "MPI-INF-3DHP test set folder")
    cameras = load_test_cameras()
    found = sorted(p for p in base.glob("TS*") if p.is_dir())
    if not found:
        raise InputError(f"{base}: no TS1..TS6 folders")
    for folder in found:
        annot = _read_test_annotations(folder / "annot_data.mat")
        valid = np.flatnonzero(annot["valid_frame"])[::stride]
        if not len(valid):
            raise InputError(f"{folder / 'annot_data.mat'}: no valid frames (valid_frame all 0)")
        cam = cameras[folder.name]
        count = len(annot["valid_frame"])
        images = [folder / "imageSequence" / f"img_{i + 1:06d}.jpg" for i in range(count)]
        if with_frames:
            for i in valid:
                require_file(images[i], "test image")
        # The protocol's per-activity table needs the activity per crop, and an action is a
        # sequence's: each run of one activity becomes a sequence TS<k>_<run>.
        if ACTIVITY in annot:
            runs = np.split(valid, np.flatnonzero(np.diff(annot[ACTIVITY][valid])) + 1)
            named = [(f"{folder.name}_{r:03d}", TEST_ACTIVITIES[annot[ACTIVITY][run[0]]], run)
                     for r, run in enumerate(runs)]  # fmt: skip
        else:
            named = [(folder.name, "test", valid)]
        for name, action, run in named:
            keep = [int(i) for i in run]
            # Crops come from the true 3D positions (annot3); the stored poses are univ_annot3,
            # rescaled to a common height, against which the dataset's protocol scores PCK/AUC.
            seen = remap_joints(annot["annot3"][keep], FROM_MPI_INF_3DHP_17)[0]
            world = remap_joints(annot["univ_annot3"][keep], FROM_MPI_INF_3DHP_17)[0]
            yield SourceSequence(
                name=name,
                subject=folder.name,
                action=action,
                fps=TRAIN_FPS / stride,
                cameras=[cam],
                source_frames=keep,
                boxes=boxes_from_poses([cam], seen),
                read_frames=[image_reader(images)] if with_frames else None,
                poses_world=world,
                extra={"split": "test", "poses": "univ_annot3"},
            )


_MMPOSE_TRAIN = re.compile(r"^(S\d+)_(Seq\d+)_Cam(\d+)_(\d+)\.jpg$")
_MMPOSE_TEST = re.compile(r"^(TS\d+)_(\d+)\.jpg$")


def mmpose_sequences(
    root: Path, annotations: Path, cameras_pickle: Path
) -> Iterator[SourceSequence]:
    """mmpose's preprocessed 3DHP: flat images, an annotation .npz and a camera pickle.

    Training images are ``S<k>_Seq<j>_Cam<c>_<frame>.jpg`` and their pickle entries
    ``S<k>_Seq<j>_Cam<c>`` hold R and T with x_cam = R·x_world + T (metres); test images are
    ``TS<k>_<frame>.jpg`` with intrinsics-only entries. Frame numbers count from 1.
    """
    root = require_dir(root, "MPI-INF-3DHP image folder")
    data = load_annotation_npz(annotations)
    calib = load_arrays_pickle(cameras_pickle)
    groups: dict[str, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for row, name in enumerate(data["imgname"]):
        name = str(name)
        train, test = _MMPOSE_TRAIN.match(name), _MMPOSE_TEST.match(name)
        if train:
            subject, seq, cam, frame = train.groups()
            groups[f"{subject}_{seq}"][f"{subject}_{seq}_Cam{cam}"][int(frame) - 1] = row
        elif test:
            groups[test.group(1)][test.group(1)][int(test.group(2)) - 1] = row
        else:
            raise InputError(
                f"{annotations}: imgname {name!r} is neither S<k>_Seq<j>_Cam<c>_<frame>.jpg nor TS<k>_<frame>.jpg"
            )
    for seq_name, by_camera in sorted(groups.items()):
        keys = sorted(by_camera)
        cams = [_pickle_camera(calib, key, cameras_pickle) for key in keys]
        instants = sorted(set.intersection(*(set(by_camera[k]) for k in keys)))
        if not instants:  # one sequence needs instants every camera saw
            raise InputError(
                f"{annotations}: {seq_name}: no frame is listed for all of its cameras "
                f"({', '.join(keys)}); drop the cameras that do not overlap from the annotations"
            )
        rows = np.array([[by_camera[k][t] for t in instants] for k in keys])  # (V, T)
        poses_cam = remap_joints(data["S"][rows, :, :3] * 1000.0, FROM_MPI_INF_3DHP_17)[0]
        world = world_from_views(cams, poses_cam, annotations)
        is_test = seq_name.startswith("TS")
        boxes, readers = mmpose_views(root, data, rows, instants)
        yield SourceSequence(
            name=seq_name,
            subject=seq_name if is_test else seq_name.split("_")[0],
            action="test" if is_test else seq_name.split("_")[1],
            fps=TRAIN_FPS,
            cameras=cams,
            source_frames=instants,
            boxes=boxes,
            read_frames=readers,
            poses_world=world,
            # mmpose's test annotations hold annot3 (true 3D positions), not the univ_annot3
            # the official PCK/AUC score: recorded so that evaluate can say so.
            extra={"split": "test", "poses": "annot3"} if is_test else {},
        )


def _pickle_camera(calib: object, key: str, path: Path) -> Camera:
    if not isinstance(calib, dict) or key not in calib:
        raise InputError(f"{path}: no camera entry {key!r}")
    e = calib[key]
    try:
        f, c = np.ravel(e["f"]), np.ravel(e["c"])
        width, height = int(e["w"]), int(e["h"])
        R = np.asarray(e.get("R", np.eye(3)), dtype=np.float64)
        t = np.ravel(e.get("T", np.zeros(3))) * 1000.0
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: camera entry {key!r} lacks or garbles f/c/w/h ({exc})") from None
    if (width, height) == (2048, 204):  # a known typo in mmpose's training pickle
        height = 2048
    return Camera(
        K=intrinsics_matrix(f, c),
        R=R,
        t=t,
        width=width,
        height=height,
        name=key.split("_")[-1].lower(),
    )
