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
        return _as_tensors(self._arrays(key))

    def batch(self, keys: list[int | FrameKey]) -> dict[str, torch.Tensor]:
        """The samples of ``keys`` stacked along a new first axis: what ``default_collate`` of
        ``[dataset[k] for k in keys]`` gives, converted to tensors once per field instead of
        once per sample (a tenth of a small training step went to those conversions)."""
        samples = [self._arrays(k) for k in keys]
        return _as_tensors({name: np.stack([s[name] for s in samples]) for name in samples[0]})

    def _arrays(self, key: int | FrameKey) -> dict[str, np.ndarray]:
        """One sample as numpy arrays (see the class docstring)."""
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
        K = np.stack(
            [
                crop_intrinsics(c.K, seq.boxes[v, t], seq.meta.crop_size)
                for v, c in zip(views, cams, strict=True)
            ]
        )
        if seq.labelled:
            world = seq.poses_3d[t]
            pose_cam = seq.poses_camera(t, views)
        else:
            world = np.zeros((17, 3))
            pose_cam = np.zeros((len(views), 17, 3))
        return {
            "images": np.stack([seq.frames(c.name)[t] for c in cams]),
            "K": K,
            "R": np.stack([c.R for c in cams]),
            "t": np.stack([c.t for c in cams]),
            "pose_cam": pose_cam,
            "pose_world": world,
            "labelled": np.array(seq.labelled),
            "subject": np.array(self.subject_index[index], dtype=np.int64),
            "sequence": np.array(self.seq_index[index], dtype=np.int64),
            "frame": np.array(t, dtype=np.int64),
            "index": np.array(index, dtype=np.int64),
            "views": np.array(views, dtype=np.int64),
        }


#: Sample fields stored as float32 tensors (cameras and poses); the others keep their dtype
#: (uint8 images, bool labelled flag, int64 ids).
_FLOAT_FIELDS = ("K", "R", "t", "pose_cam", "pose_world")


def _as_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {
        name: torch.from_numpy(np.asarray(a, dtype=np.float32 if name in _FLOAT_FIELDS else None))
        for name, a in arrays.items()
    }
