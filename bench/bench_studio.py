"""Studio generation speed on one core: the whole `metricpose synth` path."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from metricpose.studio.generate import generate, synth_config


def synth_rate(preset: str = "default", subjects: tuple[str, ...] = ("S1", "S5")) -> dict:
    """Crops per second of `metricpose synth` for ``preset`` restricted to a few subjects
    (motion, rendering, writing), one torch thread; and the preset's crop size in px."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = synth_config(preset, subjects=list(subjects))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp) / "warm-up", synth_config(preset, subjects=["S1"], actions=["walking"], takes=1), progress=False)  # fmt: skip
            began = time.perf_counter()
            generate(Path(tmp) / "studio", config, progress=False)
            seconds = time.perf_counter() - began
    finally:
        torch.set_num_threads(threads)
    crops = len(subjects) * len(config.actions) * config.takes * config.frames * config.cameras
    return {"rate": crops / seconds, "res": config.res}
