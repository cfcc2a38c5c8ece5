"""PyTorch access to a multi-view dataset: synchronised samples of one instant from V cameras."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from metricpose.cameras import crop_intrinsics
from metricpose.data.format import DatasetError, SequenceFolder, open_dataset


@dataclass(frozen=True)
class FrameKey:
    """One instant: (sequence index, frame index) plus the camera indices to return."""

    index: int  # flat index into the dataset's instants
    views: tuple[int, ...]


class MultiViewDataset(Dataset):
    """Instants of every sequence, each seen from several cameras.

    ``dataset[i]`` returns instant ``i`` from the first ``num_views`` cameras;
    ``dataset[FrameKey(i, views)]`` from chosen cameras (the training sampler's way).

    A sample is a dict of tensors:
        images (V, S, S, 3) uint8; K (V, 3, 3) crop intrinsics; R (V, 3, 3); t (V, 3) mm;
        pose_cam (V, 17, 3) root-relative camera-frame mm (zeros when unlabelled);
        pose_world (17, 3) mm; labelled (); subject (), sequence (), frame (), index (), views (V,).

    Frames are memory-mapped per worker process, so it is safe and cheap with many
    DataLoader workers.
    """

    def __init__(
        self,
        root: Path | str,
        subjects: list[str] | None = None,
        num_views: int = 2,
        frame_stride: int = 1,
    ) -> None:
        self.root = Path(root)
        self.sequences: list[SequenceFolder] = [
            s for s in open_dataset(self.root, subjects) if s.has_frames
        ]
        if not self.sequences:
            raise DatasetError(f"{self.root}: no sequence with frames for subjects {subjects}")
        self.subjects = sorted({s.meta.subject for s in self.sequences})
        self.num_views = num_views
        seq_ids, frames = [], []
        for i, seq in enumerate(self.sequences):
            t = np.arange(0, seq.meta.num_frames, frame_stride)
            seq_ids.append(np.full(len(t), i))
            frames.append(t)
        #: (N,) sequence index and frame index of every instant.
        self.seq_index = np.concatenate(seq_ids)
        self.frame_index = np.concatenate(frames)
        self.subject_index = np.array(
            [self.subjects.index(self.sequences[i].meta.subject) for i in self.seq_index]
        )
        self.labelled = np.array([self.sequences[i].labelled for i in self.seq_index])
        self.num_cameras = np.array([len(self.sequences[i].cameras) for i in self.seq_index])
        self._pid = None

    def __len__(self) -> int:
        return len(self.seq_index)

    def _reopen_after_fork(self) -> None:
        # Memory maps opened in the parent are not shared safely with forked workers.
        import os

        if self._pid != os.getpid():
            for seq in self.sequences:
                seq._frames.clear()
            self._pid = os.getpid()

    def __getitem__(self, key: int | FrameKey) -> dict[str, torch.Tensor]:
        self._reopen_after_fork()
        if isinstance(key, FrameKey):
            index, views = key.index, key.views
        else:
            # A sequence with fewer cameras than views repeats them (single-view datasets).
            index = int(key)
            ncams = int(self.num_cameras[index])
            views = tuple(v % ncams for v in range(self.num_views))
        seq = self.sequences[self.seq_index[index]]
        t = int(self.frame_index[index])
        cams = [seq.cameras[v] for v in views]
        images = np.stack([seq.frames(c.name)[t] for c in cams])
        K = np.stack(
            [
                crop_intrinsics(c.K, seq.boxes[v, t], seq.meta.crop_size)
                for v, c in zip(views, cams, strict=True)
            ]
        )
        R = np.stack([c.R for c in cams])
        tr = np.stack([c.t for c in cams])
        if seq.labelled:
            world = seq.poses_3d[t]
            pose_cam = seq.poses_camera(t, views)
        else:
            world = np.zeros((17, 3))
            pose_cam = np.zeros((len(views), 17, 3))
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "K": torch.as_tensor(K, dtype=torch.float32),
            "R": torch.as_tensor(R, dtype=torch.float32),
            "t": torch.as_tensor(tr, dtype=torch.float32),
            "pose_cam": torch.as_tensor(pose_cam, dtype=torch.float32),
            "pose_world": torch.as_tensor(world, dtype=torch.float32),
            "labelled": torch.tensor(seq.labelled),
            "subject": torch.tensor(int(self.subject_index[index])),
            "sequence": torch.tensor(int(self.seq_index[index])),
            "frame": torch.tensor(t),
            "index": torch.tensor(index),
            "views": torch.tensor(views),
        }
