"""Plots: contact sheets of datasets, skeletons over images, 3D skeletons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metricpose.cameras import crop_intrinsics, project_points  # noqa: E402
from metricpose.data.format import SequenceFolder, open_dataset  # noqa: E402
from metricpose.errors import InputError  # noqa: E402
from metricpose.skeleton import BONES, JOINT_NAMES  # noqa: E402


def _bone_colour(child: int) -> str:
    if JOINT_NAMES[child].startswith("left"):
        return "tab:blue"
    return "tab:red" if JOINT_NAMES[child].startswith("right") else "0.2"


def plot_skeleton_3d(ax, pose_mm: np.ndarray, title: str = "") -> None:
    """Draw a (17, 3) pose on a 3D axis (z up, equal scale, left side blue, right red)."""
    p = pose_mm - pose_mm[0]
    for parent, child in BONES:
        ax.plot(*p[[parent, child]].T, color=_bone_colour(child), lw=2)
    lim = max(np.abs(p).max(), 900)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim), xticks=[], yticks=[], zticks=[])
    ax.set_box_aspect((1, 1, 1))
    if title:
        ax.set_title(title, fontsize=8)


def plot_skeleton_2d(ax, joints_px: np.ndarray) -> None:
    """Draw (17, 2) pixel joints over an image axis."""
    for parent, child in BONES:
        ax.plot(*joints_px[[parent, child]].T, color=_bone_colour(child), lw=1.2)


def crop_projection(
    seq: SequenceFolder, view: int, frame: int, poses_world: np.ndarray
) -> np.ndarray:
    """Project (17, 3) world mm joints into a sequence's crop of one view -> (17, 2) crop px."""
    cam = seq.cameras[view]
    K = crop_intrinsics(cam.K, seq.boxes[view, frame], seq.meta.crop_size)
    return project_points(cam.world_to_camera(poses_world), K, cam.dist, cam.dist_model)


def contact_sheet(root: Path, out: Path, num_frames: int = 4, seed: int = 0) -> Path:
    """Write a PNG: for a few frames of different sequences, every view (with the projected
    ground-truth skeleton where labelled) and a 3D plot of the pose."""
    seqs = [s for s in open_dataset(root) if s.has_frames]
    if not seqs:
        raise InputError(f"{root}: no sequence has frames to show")
    rng = np.random.default_rng(seed)
    picks = [seqs[i] for i in rng.choice(len(seqs), size=min(num_frames, len(seqs)), replace=False)]
    views = max(len(s.cameras) for s in picks)
    fig = plt.figure(figsize=(2.0 * (2 * views + 1), 2.1 * len(picks)))
    for row, seq in enumerate(picks):
        t = int(rng.integers(seq.meta.num_frames))
        for v, cam in enumerate(seq.cameras):
            for k, overlay in enumerate((False, True)):
                ax = fig.add_subplot(
                    len(picks), 2 * views + 1, row * (2 * views + 1) + 2 * v + k + 1
                )
                ax.imshow(seq.frames(cam.name)[t])
                if overlay and seq.labelled:
                    plot_skeleton_2d(ax, crop_projection(seq, v, t, seq.poses_3d[t]))
                ax.set_axis_off()
                if k == 0:
                    ax.set_title(
                        f"{seq.name} t={t} {cam.name}" if v == 0 else cam.name,
                        fontsize=7,
                        loc="left",
                    )
        if seq.labelled:
            ax3 = fig.add_subplot(
                len(picks), 2 * views + 1, (row + 1) * (2 * views + 1), projection="3d"
            )
            plot_skeleton_3d(ax3, seq.poses_3d[t], "3D (world)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
