"""Where the full training step spends its time: torch.profiler over a few steps.

Run with `python bench/profile_training.py`; prints the top operators and the share of the step
spent in data loading, forward, backward and the optimiser.
"""

from __future__ import annotations

import time

from bench_training import full_method
from torch.profiler import ProfilerActivity, profile, record_function


def main(steps: int = 8, batch_size: int = 32) -> None:
    with full_method(batch_size) as (module, sampler, collate):
        optimiser = module.configure_optimizers()["optimizer"]
        phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimiser": 0.0}

        def step(i: int) -> None:
            t0 = time.perf_counter()
            with record_function("data"):
                batch = collate(sampler.batch(i))
            t1 = time.perf_counter()
            with record_function("forward+losses"):
                loss = module.training_step(batch, i)
            t2 = time.perf_counter()
            with record_function("backward"):
                optimiser.zero_grad()
                loss.backward()
            t3 = time.perf_counter()
            with record_function("optimiser"):
                optimiser.step()
            t4 = time.perf_counter()
            for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[key] += dt

        step(0)
        phases = dict.fromkeys(phases, 0.0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(1, steps + 1):
                step(i)
        total = sum(phases.values())
        print(
            "share of the step: "
            + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in phases.items())
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
