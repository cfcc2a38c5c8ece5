"""Studio rendering speed on one core."""

from __future__ import annotations

import time

import numpy as np
import torch

from metricpose.studio.body import make_subject
from metricpose.studio.motion import generate_take
from metricpose.studio.render import CameraBackdrop, Studio, render_take
from metricpose.studio.rig import default_rig


def render_rate(res: int = 64, frames: int = 256) -> float:
    """Crops per second of one camera's view of a take, one torch thread, backdrop excluded
    (it is ray-cast once per camera and dataset)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        subject = make_subject("S1", rng)
        take = generate_take(subject, "walking", frames, 12.5, rng)
        camera = default_rig()[0]
        backdrop = CameraBackdrop(Studio.random(rng), camera)
        render_take(
            subject, backdrop, camera, take["joints"][:32], take["rotations"][:32], res, seed=0
        )  # warm-up
        began = time.perf_counter()
        render_take(subject, backdrop, camera, take["joints"], take["rotations"], res, seed=0)
        return frames / (time.perf_counter() - began)
    finally:
        torch.set_num_threads(threads)
