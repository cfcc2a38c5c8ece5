"""How much better than one view could a network get by learning from its own multi-view
predictions? Two teachers, built from a trained run's predictions on the test people:

- mean: the views' 3D predictions rotated into the world frame and averaged
  (metricpose.metrics.fuse_views);
- triangulated: each view's prediction placed at the true root (an oracle: a method would
  triangulate the root from the person boxes) and reduced to its image directions (x/z, y/z:
  each view's depth guess dropped), then triangulated with the calibrated cameras (linear DLT),
  from all four cameras of an instant or from camera pairs (0+1, 2+3) as a two-view batch has.

Usage: python docs/experiments/triangulation_headroom.py DATA RUN_DIR [RUN_DIR ...]
(docs/design.md, sixth round, has the numbers for the demo's runs).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from metricpose.cameras import triangulate_points
from metricpose.checkpoint import load_model
from metricpose.data.dataset import MultiViewDataset
from metricpose.evaluate import predict_dataset
from metricpose.metrics import fuse_views, mpjpe, orientation_decomposition


def triangulate(directions: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(V, 17, 2) normalised image coordinates from V cameras (x_cam = R x_world + t, mm) ->
    (17, 3) world points, mm (linear DLT, metricpose.cameras.triangulate_points)."""
    as_group = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
    return triangulate_points(as_group(directions), as_group(R), as_group(t))[0].numpy()


def main(data: str, runs: list[str], stride: int = 2) -> None:
    torch.set_num_threads(1)
    test = MultiViewDataset(data, subjects=["S9", "S11"], num_views=1)
    cameras = [  # in the order of predict_dataset(): every camera of every stride-th instant
        test.sequences[test.seq_index[i]].cameras[v]
        for i in range(0, len(test), stride)
        for v in range(int(test.num_cameras[i]))
    ]
    R = np.stack([c.R for c in cameras])
    t = np.stack([np.asarray(c.t, dtype=np.float64).reshape(3) for c in cameras])
    for run in runs:
        model, _ = load_model(Path(run) / "model.pt")
        p = predict_dataset(model, test, frame_stride=stride)
        root = np.einsum("mij,mkj->mki", R, p.pose_world[:, :1]) + t[:, None]  # (M, 1, 3) camera mm
        placed = p.pose_pred + root
        directions = placed[..., :2] / placed[..., 2:3]
        row = {"run": Path(run).name, "single": mpjpe(p.pose_pred, p.pose_gt)}
        row["mean"] = mpjpe(fuse_views(p.pose_pred, p.pose_gt, p.pose_world, p.instant), p.pose_gt)
        for name, split in (("triangulated_4", 4), ("triangulated_pairs", 2)):
            teacher = np.empty_like(p.pose_pred)
            for instant in np.unique(p.instant):
                rows = np.flatnonzero(p.instant == instant)
                for group in np.split(rows, range(split, len(rows), split)):
                    world = triangulate(directions[group], R[group], t[group])
                    for m in group:
                        teacher[m] = (world - world[0]) @ R[m].T
            row[name] = mpjpe(teacher, p.pose_gt)
            row[name + "_body_frame"] = orientation_decomposition(teacher, p.pose_gt)[
                "body_frame_mpjpe"
            ]
        print(
            json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
