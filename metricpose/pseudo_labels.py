"""Pseudo-labels from a fixed teacher (``metricpose pseudo-label``, ``data.pseudo_labels``).

A trained model predicts every camera of the unlabelled multi-view video; its predictions are
triangulated across the calibrated cameras (each view placed at the root triangulated from the
person boxes' centres and reduced to its image directions, ``cameras.triangulate_views``) and
the result serves as 3D labels for a student. Unlike the online triangulation term, a fixed
teacher cannot make its views agree by distorting the body. The teacher also sees each crop
mirrored and the labels are smoothed along time, which makes them 14 mm better on the demo's
people (docs/design.md, tenth round). Where the dataset has the person's silhouettes, the labels
are then fitted to them (``silhouettes.fit_to_silhouettes``): 23 mm better again, and a
student 10 mm better (twelfth round).

Folder format (written by ``write_pseudo_labels``, read by ``apply_pseudo_labels``)::

    LABELS/pseudo_labels.json   the teacher checkpoint and its SHA-256, the settings
                                (mirror, smooth_s, silhouettes), the dataset, the method;
                                per sequence folder name its frame count, the frames where
                                the views' average stood in for a triangulation that flew
                                off, per frame the views' residual in px (null there;
                                unsmoothed), and whether the labels were fitted to
                                silhouettes
    LABELS/<sequence>.npy       (T, 17, 3) float32 world poses, mm, Human3.6M joint order

True labels the protocol grants always win over pseudo-labels; test subjects are never touched
(the student is evaluated on a dataset opened without pseudo-labels).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from metricpose.cameras import triangulate_views
from metricpose.checkpoint import load_model
from metricpose.data.dataset import MultiViewDataset
from metricpose.data.format import DatasetError, SequenceFolder, open_dataset
from metricpose.errors import InputError
from metricpose.evaluate import mirrored_prediction
from metricpose.fileio import atomic_write_bytes, atomic_write_text
from metricpose.silhouettes import fit_to_silhouettes, sequence_views
from metricpose.skeleton import BONES

INDEX_FILE = "pseudo_labels.json"
#: A triangulated bone longer than this (mm) means the rays nearly missed each other and the
#: linear solution flew off (0.4% of the demo's frames): the views' average stands in there.
_WILD_BONE_MM = 1000.0
_SAVE_EVERY_S = 10.0


def triangulated_poses(
    model: torch.nn.Module, seq: SequenceFolder, batch_size: int = 256, mirror: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's predictions of every camera of ``seq`` triangulated into world poses.

    ``mirror``: each view's prediction is the mean of the model's answers for the crop and for
    the crop mirrored left-right (``mirrored_prediction``).

    Returns:
        (T, 17, 3) float64 world poses, mm; (T,) the views' disagreement: mean distance in
        crop px between each view's placed prediction and the triangulated joints, both
        projected into that view (inf where the views' average stood in); (T,) bool, True
        where the views' average stood in.
    """
    cams, size, T = seq.cameras, seq.meta.crop_size, seq.meta.num_frames
    device = next(model.parameters()).device
    views = len(cams)
    predict = mirrored_prediction if mirror else lambda m, x: m(x)["pose_cam"]
    with torch.no_grad():
        chunks = [
            predict(model, torch.from_numpy(_frames(seq, s, s + batch_size)).to(device)).cpu()
            for s in range(0, views * T, batch_size)
        ]
    # (T, V, 17, 3) root-relative camera frame, mm
    pose = torch.cat(chunks).double().reshape(views, T, -1, 3).transpose(0, 1)
    K, R, t = (torch.from_numpy(a) for a in seq.crop_cameras()[:3])  # (T, V, ...)
    world = triangulate_views(pose, K, R, t, size)  # (T, 17, 3)
    residual = _reprojection_px(world, pose, K, R, t)
    averaged = (pose @ R).mean(1) + world[:, :1]  # rows: (Rᵀ x)ᵀ = xᵀ R; the boxes' root
    bones = torch.stack([torch.linalg.norm(world[:, a] - world[:, b], dim=-1) for a, b in BONES], 1)
    wild = ~torch.isfinite(world).all(-1).all(-1) | (bones.max(1).values > _WILD_BONE_MM)
    world[wild] = averaged[wild]
    residual[wild] = torch.inf
    return world.numpy(), residual.numpy(), wild.numpy()


def smoothed_along_time(poses: np.ndarray, fps: float, sigma_s: float) -> np.ndarray:
    """(T, 17, 3) poses smoothed along time with a Gaussian of ``sigma_s`` seconds (edges
    repeat the first and last frame); ``sigma_s`` 0 returns them as they are. A teacher's
    per-frame labels jitter (60 mm per frame and joint on the demo's people, where the truth
    moves 22); people move smoothly."""
    if sigma_s <= 0:
        return poses
    return gaussian_filter1d(poses, sigma_s * fps, axis=0, mode="nearest")


def _frames(seq: SequenceFolder, start: int, stop: int) -> np.ndarray:
    """Crops [start, stop) of all cameras' frames laid end to end (camera-major), (N, S, S, 3).

    Batches then span cameras: a demo sequence has 16 frames per camera, and labelling with
    one batch of 64 per sequence took 1.6-2x less time than with 4 batches of 16 (40 demo
    sequences, 1 thread; the poses identical)."""
    T = seq.meta.num_frames
    return np.concatenate([
        np.asarray(seq.frames(c.name)[max(start - v * T, 0) : stop - v * T])
        for v, c in enumerate(seq.cameras)
        if v * T < stop and (v + 1) * T > start
    ])  # fmt: skip


def _reprojection_px(
    world: torch.Tensor, pose: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """(T,) mean px distance, over views and joints, between the triangulated joints
    ``world`` (T, 17, 3) and the views' predictions ``pose`` (T, V, 17, 3) placed at its root,
    both projected into each view's crop."""
    seen = (R[:, :, None] @ world[:, None, ..., None])[..., 0] + t[:, :, None]  # (T, V, 17, 3)
    placed = pose + seen[:, :, :1]
    project = lambda x: (K[:, :, None] @ (x / x[..., 2:])[..., None])[..., :2, 0]  # noqa: E731
    return torch.linalg.norm(project(seen) - project(placed), dim=-1).mean((1, 2))


def write_pseudo_labels(
    checkpoint: Path,
    data: Path,
    out: Path,
    subjects: list[str] | None = None,
    mirror: bool = True,
    smooth_s: float = 0.16,
    silhouettes: bool = True,
) -> dict[str, Any]:
    """Label every sequence of ``subjects`` (default: the teacher's training subjects) seen by
    two cameras or more. Finished sequences are kept, so an interrupted run continues.
    ``mirror``: the teacher also sees each crop mirrored (``mirrored_prediction``);
    ``smooth_s``: the labels are smoothed along time with a Gaussian of that many seconds
    (``smoothed_along_time``; 0: not smoothed). The residuals are the unsmoothed views'.
    ``silhouettes``: where every camera of a person's sequences has masks, the labels are
    then fitted to them (``silhouettes.fit_to_silhouettes``), keeping the person's median bone
    lengths.

    Returns the index written to ``out / pseudo_labels.json``.
    """
    model, config = load_model(checkpoint)
    model.eval()
    subjects = subjects or list(config["data"]["train_subjects"])
    sequences = [s for s in open_dataset(data, subjects) if s.has_frames]
    if not sequences:
        raise InputError(f"{data}: no sequence with frames for subjects {subjects}")
    out = Path(out)
    index_path = out / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    teacher = {"teacher": str(Path(checkpoint).resolve()), "teacher_sha256": _sha256(checkpoint)}
    settings = {"mirror": mirror, "smooth_s": smooth_s, "silhouettes": silhouettes}
    for expected, other in (
        (teacher, f"of another teacher ({index.get('teacher')}, or that file before it was trained again)"),
        (settings, "written with other settings ({})".format(", ".join(f"{k}={index.get(k)}" for k in settings))),
    ):  # fmt: skip
        if index and any(index.get(key) != value for key, value in expected.items()):
            raise InputError(f"{out}: holds pseudo-labels {other}; choose an empty folder")
    index = {
        **teacher,
        **settings,
        "data": str(Path(data).resolve()),
        "method": "the teacher's views triangulated (cameras.triangulate_views), fitted to "
        "the silhouettes where they exist (silhouettes.fit_to_silhouettes)",
        "units": "world mm",
        "sequences": index.get("sequences", {}),
    }
    saved = time.monotonic()
    pending = [s for s in sequences if len(s.cameras) >= 2 and s.name not in index["sequences"]]
    for person in dict.fromkeys(s.meta.subject for s in pending):
        # A person's sequences are labelled together: the silhouette fit keeps that person's
        # bone lengths (the median over all of them).
        mine = [s for s in pending if s.meta.subject == person]
        labelled = [triangulated_poses(model, seq, mirror=mirror) for seq in mine]
        poses = [
            smoothed_along_time(p, seq.meta.fps, smooth_s)
            for seq, (p, *_) in zip(mine, labelled, strict=True)
        ]
        fitted = silhouettes and all(seq.has_masks for seq in mine)
        if fitted:
            poses = _fitted_to_silhouettes(mine, poses)
        for seq, pose, (_, residual, fallback) in zip(mine, poses, labelled, strict=True):
            buffer = io.BytesIO()
            np.save(buffer, pose.astype(np.float32))
            atomic_write_bytes(out / f"{seq.name}.npy", buffer.getvalue())
            index["sequences"][seq.name] = {
                "frames": int(seq.meta.num_frames),
                "fallback_frames": np.flatnonzero(fallback).tolist(),
                "residual_px": [round(float(r), 3) if np.isfinite(r) else None for r in residual],
                "fitted_to_silhouettes": fitted,
            }
        # The index lists only written sequences; saving it every few seconds, not after each
        # of hundreds of sequences, costs an interrupted run at most those seconds of labelling.
        if time.monotonic() - saved > _SAVE_EVERY_S:
            atomic_write_text(index_path, json.dumps(index, indent=1))
            saved = time.monotonic()
    if not index["sequences"]:
        raise InputError(f"{data}: no sequence of {subjects} has two cameras to triangulate")
    atomic_write_text(index_path, json.dumps(index, indent=1))
    return index


def _fitted_to_silhouettes(
    sequences: list[SequenceFolder], poses: list[np.ndarray]
) -> list[np.ndarray]:
    """One person's label poses (per sequence (T, 17, 3) world mm) fitted to the sequences'
    silhouettes, keeping the person's median bone lengths. Sequences seen by the same number
    of cameras with one lens model are fitted together; one whose cameras mix lens models
    keeps its poses."""
    start = np.concatenate(poses)
    bones = np.stack([np.linalg.norm(start[:, a] - start[:, b], axis=-1) for a, b in BONES], 1)
    person_bones = np.median(bones, 0)
    rows = np.cumsum([0] + [len(p) for p in poses])
    fitted = start.copy()
    groups: dict[tuple[int, str], list[int]] = {}
    for i, seq in enumerate(sequences):
        models = {c.dist_model for c in seq.cameras}
        if len(models) == 1:
            groups.setdefault((len(seq.cameras), models.pop()), []).append(i)
    for (_, dist_model), members in groups.items():
        take = np.concatenate([np.arange(rows[i], rows[i + 1]) for i in members])
        views = [sequence_views(sequences[i]) for i in members]
        masks, K, R, t, dist = (np.concatenate(parts) for parts in zip(*views, strict=True))
        fitted[take] = fit_to_silhouettes(
            start[take], masks, K, R, t, dist, dist_model, person_bones
        )
    return np.split(fitted, rows[1:-1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def apply_pseudo_labels(
    dataset: MultiViewDataset, folder: Path, granted: np.ndarray, keep: float = 1.0
) -> np.ndarray:
    """Give the dataset's instants without granted true labels their pseudo-labels.

    Each listed sequence's poses are replaced in memory by the pseudo-labels, except at the
    granted instants, which keep their truth; sequences without pseudo-labels are left as
    they are.

    Args:
        granted: (N,) bool, instants whose true labels the protocol lets training use.
        keep: share (0-1] of the candidate instants that get a pseudo-label, those whose
            views agree best (lowest reprojection residual); the rest stay unlabelled.

    Returns:
        (N,) bool, the instants that now carry a pseudo-label.
    """
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.exists():
        raise DatasetError(f"{index_path}: missing (write it with metricpose pseudo-label)")
    listed = json.loads(index_path.read_text())["sequences"]
    pseudo = np.zeros(len(dataset), dtype=bool)
    residual = np.full(len(dataset), np.inf)
    for i, seq in enumerate(dataset.sequences):
        name = seq.folder.name
        if name not in listed:
            continue
        path = folder / f"{name}.npy"
        T = seq.meta.num_frames
        if listed[name].get("frames") != T or len(listed[name].get("residual_px", ())) != T:
            raise DatasetError(
                f"{index_path}: {name} is listed with {listed[name].get('frames')} frames, "
                f"the dataset has {T}: labels of another dataset?"
            )
        try:
            poses = np.load(path).astype(np.float64)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read pseudo-labels ({exc})") from None
        if poses.shape != (T, 17, 3):
            raise DatasetError(
                f"{path}: expected shape {(T, 17, 3)} (the sequence's frames, 17, 3), "
                f"got {poses.shape}"
            )
        if not np.isfinite(poses).all():
            raise DatasetError(f"{path}: contains NaN or Inf")
        rows = np.flatnonzero(dataset.seq_index == i)
        keep_truth = dataset.frame_index[rows[granted[rows]]]
        if len(keep_truth):
            poses[keep_truth] = seq.poses_3d[keep_truth]
        seq.replace_poses(poses)
        pseudo[rows[~granted[rows]]] = True
        per_frame = np.array([np.inf if r is None else r for r in listed[name]["residual_px"]])
        residual[rows] = per_frame[dataset.frame_index[rows]]
    if keep < 1.0 and pseudo.any():
        order = np.flatnonzero(pseudo)[np.argsort(residual[pseudo], kind="stable")]
        pseudo[order[int(round(keep * len(order))) :]] = False
    dataset.labelled |= pseudo
    return pseudo
