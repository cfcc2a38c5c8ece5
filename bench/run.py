"""Benchmarks: each figure is measured side by side in one run and reported with its target.

Run with `make bench`. Prints a table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_studio import render_rate  # noqa: E402
from bench_training import step_ratio  # noqa: E402


def demo_minutes() -> float:
    """Wall-clock minutes of the default demo from scratch (data, 3 trainings, evaluation)."""
    import tempfile

    from metricpose.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        run_demo(Path(tmp) / "demo", "default", progress=False)
        return (time.perf_counter() - began) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--demo", action="store_true", help="also time the default demo (about 10 minutes)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    figures = []
    began = time.perf_counter()
    rate = render_rate(res=64, frames=256)
    figures.append(
        {
            "name": "studio rendering, 64 px, 1 thread",
            "value": round(rate, 1),
            "unit": "crops/s",
            "target": 1000,
            "met": rate >= 1000,
        }
    )
    ratio, full, bare = step_ratio()
    figures.append(
        {
            "name": "training step (2 views, 3 losses, data loading) / bare backbone fwd+bwd",
            "value": round(ratio, 3),
            "unit": "ratio",
            "target": 0.85,
            "met": ratio >= 0.85,
        }
    )
    figures.append(
        {
            "name": "training step throughput (full method)",
            "value": round(full, 1),
            "unit": "images/s",
            "target": None,
            "met": None,
        }
    )
    figures.append(
        {
            "name": "bare backbone fwd+bwd throughput",
            "value": round(bare, 1),
            "unit": "images/s",
            "target": None,
            "met": None,
        }
    )
    if args.demo:
        minutes = demo_minutes()
        figures.append(
            {
                "name": "default demo, end to end",
                "value": round(minutes, 2),
                "unit": "minutes",
                "target": 10,
                "met": minutes <= 10,
            }
        )
    machine = f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch threads, torch {torch.__version__}".strip()
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"machine": machine, "figures": figures}, indent=1))
    print(f"machine: {machine}")
    print(f"{'figure':<75} {'value':>10} {'unit':<9} {'target':>7}  met")
    for f in figures:
        target = "" if f["target"] is None else f["target"]
        met = "" if f["met"] is None else ("yes" if f["met"] else "NO")
        print(f"{f['name']:<75} {f['value']:>10} {f['unit']:<9} {target:>7}  {met}")
    print(f"({time.perf_counter() - began:.0f} s; results in {out / 'latest.json'})")


if __name__ == "__main__":
    main()
