"""Batches for semi-supervised multi-view training."""

from __future__ import annotations

import numpy as np

from metricpose.data.dataset import FrameKey
from metricpose.errors import InputError


class MixedBatchSampler:
    """Draws one batch of instants per training step, each seen from two distinct cameras.

    A batch holds ``round(labelled_fraction * batch_size)`` instants drawn from the labelled
    pool and fills the rest with instants of **one** training subject (drawn anew each step),
    so that the metric loss finds hard negatives among time-separated frames of the same
    person rather than among other people, whom looks alone tell apart.

    Step ``k``'s global batch (``batch_size`` instants per process) depends only on (seed, k),
    and process ``rank`` of ``world_size`` takes every ``world_size``-th instant of it: a resumed
    run sees the same batches as an uninterrupted one, and N processes together see exactly the
    batch one process would draw with N times the batch size (each with its share of labelled
    instants).
    """

    def __init__(
        self,
        labelled: np.ndarray,
        subject_index: np.ndarray,
        num_cameras: np.ndarray,
        batch_size: int,
        labelled_fraction: float,
        steps: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        unlabelled_views: int = 2,
    ) -> None:
        self.labelled_pool = np.flatnonzero(labelled)
        # The metric part needs instants seen by two cameras; single-view sources (the 3DHP test
        # set, mmpose's one-camera samples) only contribute labelled instants, whose two "views"
        # are then two augmentations of the same crop.
        multiview = num_cameras >= 2
        pools = [np.flatnonzero((subject_index == s) & multiview) for s in np.unique(subject_index)]
        self.by_subject = [p for p in pools if len(p)]
        self.num_cameras = num_cameras
        self.batch_size = batch_size
        self.num_labelled = int(round(labelled_fraction * batch_size))
        if unlabelled_views not in (2, 4):
            raise ValueError(f"unlabelled_views must be 2 or 4, got {unlabelled_views}")
        self.unlabelled_views = unlabelled_views
        if self.num_labelled and not len(self.labelled_pool):
            raise InputError("the batch asks for labelled instants but none are labelled")
        if self.num_labelled < batch_size and not self.by_subject:
            raise InputError(
                "the batch asks for unlabelled multi-view instants but no sequence has two "
                "cameras; set batch.labelled_fraction=1.0 for single-view data"
            )
        self.steps, self.seed, self.start_step = steps, seed, start_step
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size = rank, world_size

    def batch(self, step: int) -> list[FrameKey]:
        """This process's share of step ``step``'s global batch."""
        rng = np.random.default_rng([self.seed, step])
        W = self.world_size
        chosen = rng.choice(
            self.labelled_pool,
            size=self.num_labelled * W,
            replace=len(self.labelled_pool) < self.num_labelled * W,
        )
        # With four views per unlabelled instant, each takes two batch slots (two camera pairs).
        rest = (self.batch_size - self.num_labelled) * W // (self.unlabelled_views // 2)
        unlabelled = np.zeros(0, dtype=int)
        if rest:
            pool = self.by_subject[rng.integers(len(self.by_subject))]
            unlabelled = rng.choice(pool, size=rest, replace=len(pool) < rest)
        groups = []  # the keys of one instant stay together on one process
        for index in chosen:
            views = rng.choice(self.num_cameras[index], size=2, replace=self.num_cameras[index] < 2)
            groups.append([FrameKey(int(index), (int(views[0]), int(views[1])))])
        for index in unlabelled:
            n = self.unlabelled_views
            views = rng.choice(self.num_cameras[index], size=n, replace=self.num_cameras[index] < n)
            groups.append(
                [
                    FrameKey(int(index), (int(a), int(b)))
                    for a, b in zip(views[::2], views[1::2], strict=True)
                ]
            )
        return [key for group in groups[self.rank :: W] for key in group]
