"""Pseudo-labels from a fixed teacher: a trained run's predictions on the unlabelled training
people, triangulated across the calibrated cameras (each view's prediction placed at the root
triangulated from the person boxes' centres and reduced to its image directions), written as
the 3D labels of a copy of the dataset (a dataset may not link out of its folder). A student trained
on that copy with `data.labels=all` learns the unlabelled people from the teacher's
triangulated poses; the test people and the labelled people keep their true labels.

Unlike the `triangulated` preset's online teacher (the network's own current predictions, which
it can make self-consistent by distorting the body), a fixed teacher cannot drift.

Usage: python docs/experiments/pseudo_labels.py DATA RUN_DIR OUT --labelled S1 --test S9,S11
(docs/design.md, sixth round, has the numbers).
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from metricpose.cameras import crop_intrinsics
from metricpose.checkpoint import load_model
from metricpose.data.format import open_dataset
from metricpose.losses import triangulate_views
from metricpose.skeleton import BONES


def triangulated_poses(model: torch.nn.Module, seq) -> np.ndarray:
    """(T, 17, 3) world poses, mm, triangulated from the model's predictions of every camera."""
    cams, size = seq.cameras, seq.meta.crop_size
    T = seq.meta.num_frames
    with torch.no_grad():
        pose = torch.stack([  # (V, T, 17, 3) mm, root-relative camera frame
            torch.cat([model(torch.from_numpy(np.array(seq.frames(c.name)[s : s + 256])))["pose_cam"]
                       for s in range(0, T, 256)]).double()
            for c in cams
        ])  # fmt: skip
    K = torch.tensor(
        np.stack([crop_intrinsics(c.K, seq.boxes[v], size) for v, c in enumerate(cams)])
    )
    R = torch.tensor(np.stack([c.R for c in cams]))[:, None].expand(-1, T, -1, -1)
    t = torch.tensor(np.stack([np.asarray(c.t).reshape(3) for c in cams]))[:, None].expand(
        -1, T, -1
    )
    Rg, tg = R.transpose(0, 1), t.transpose(0, 1)  # (T, V, ...)
    world = triangulate_views(pose.transpose(0, 1), K.transpose(0, 1), Rg, tg, size)  # (T, 17, 3)
    root = world[:, :1]  # predictions are root-relative: this is the root from the box centres
    # Where the rays nearly miss each other the linear solution can fly off (0.4% of the
    # demo's frames have a bone over 1 m): there the views' average stands in.
    averaged = (pose.transpose(0, 1) @ Rg).mean(1) + root  # rows: (Rᵀ x)ᵀ = xᵀ R
    bones = torch.stack([torch.linalg.norm(world[:, a] - world[:, b], dim=-1) for a, b in BONES], 1)
    wild = ~torch.isfinite(world).all(-1).all(-1) | (bones.max(1).values > 1000.0)
    world[wild] = averaged[wild]
    return world.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--labelled", default="S1")
    parser.add_argument("--test", default="S9,S11")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep = set(args.labelled.split(",")) | set(args.test.split(","))
    model, _ = load_model(args.run / "model.pt")
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    for seq in open_dataset(args.data):
        target = args.out / seq.folder.name
        if target.exists():
            continue
        building = args.out / (seq.folder.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        shutil.copytree(seq.folder, building, ignore=shutil.ignore_patterns("meta.json"))
        if seq.meta.subject not in keep:
            np.save(building / "poses_3d.npy", triangulated_poses(model, seq).astype(np.float32))
        shutil.copy(seq.folder / "meta.json", building / "meta.json")  # complete from here on
        building.rename(target)
    print(f"pseudo-labelled copy of {args.data}: {args.out}")


if __name__ == "__main__":
    main()
