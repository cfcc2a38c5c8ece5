"""CPU execution modes of the training step, each measured against fp32 in the same run:
bf16 autocast, channels_last memory format, torch.compile (inductor), and two trainings side
by side (one thread each) against one training with every thread — the way the demo spends
two cores."""

from __future__ import annotations

import multiprocessing
import time

import torch

from metricpose.models.posenet import PoseNet
from metricpose.train import cpu_has_fast_bf16


def _step_rate(
    crop: int = 64,
    batch: int = 64,
    bf16: bool = False,
    channels_last: bool = True,
    steps: int = 6,
    threads: int = 0,
    compiled: bool = False,
    timings: dict[str, float] | None = None,
) -> float:
    """Images/s of forward + backward + AdamW on the default network (fp32 or bf16 autocast;
    ``compiled``: torch.compile, whose first steps' seconds go to ``timings["warm_up_s"]``)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = PoseNet("resnet18", 0.5, 128, 1024, 2, 0.25)
    if not channels_last:  # the network's input is channels_last by default
        model.normalise_images = lambda x: (  # type: ignore[method-assign]
            (x.permute(0, 3, 1, 2).float() - model.image_mean) / model.image_std
        ).contiguous()
    if compiled:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)
    images = torch.rand(batch, crop, crop, 3) * 255

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images)
            loss = out["pose_cam"].float().pow(2).mean() + out["embedding"].float().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    began = time.perf_counter()
    step()
    step()
    if timings is not None:
        timings["warm_up_s"] = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - began)


def _one_thread_rate(_: int) -> float:
    return _step_rate(threads=1)


def side_by_side_ratio() -> tuple[float, float]:
    """(images/s of two 1-thread trainings together, images/s of one training on 2 threads)."""
    together = _step_rate(threads=2)
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:  # each measures its rate while the other runs
        rates = pool.map(_one_thread_rate, range(2))
    torch.set_num_threads(2)
    return sum(rates), together


def cpu_mode_figures() -> dict[str, float]:
    """Throughputs for the bench table, all measured in this one call."""
    fp32 = _step_rate()
    bf16 = _step_rate(bf16=True, steps=2)  # can be 10x slower without bf16 hardware: fewer steps
    plain = _step_rate(channels_last=False)
    compile_timing: dict[str, float] = {}
    compiled = _step_rate(compiled=True, timings=compile_timing)
    again = _step_rate()  # eager once more: the machine may have changed speed meanwhile
    parallel, single = side_by_side_ratio()
    return {
        "fp32": fp32,
        "bf16": bf16,
        "contiguous": plain,
        "compiled": compiled,
        "eager_again": again,
        "compile_warm_up_s": compile_timing["warm_up_s"],
        "two_runs_one_thread": parallel,
        "one_run_two_threads": single,
        "bf16_hardware": float(cpu_has_fast_bf16()),  # what train.precision=auto decides by
    }
