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

from bench_cpu_modes import cpu_mode_figures  # noqa: E402
from bench_inference import inference_rates  # noqa: E402
from bench_memory import training_peak_mb  # noqa: E402
from bench_retrieval import retrieval_figures  # noqa: E402
from bench_studio import synth_rate  # noqa: E402
from bench_training import demo_training_rate, step_ratio  # noqa: E402


def figure(
    name: str, value: float, unit: str, target: float | None = None, higher_is_better: bool = True
) -> dict:
    met = None if target is None else (value >= target if higher_is_better else value <= target)
    return {
        "name": name,
        "value": round(float(value), 3),
        "unit": unit,
        "target": target,
        "met": met,
    }


def demo_minutes() -> float:
    """Wall-clock minutes of the default demo from scratch (data, trainings, evaluation)."""
    import tempfile

    from metricpose.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        run_demo(Path(tmp) / "demo", "default", progress=False)
        return (time.perf_counter() - began) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--demo", action="store_true", help="also time the default demo (about 20 minutes)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    figures = []
    began = time.perf_counter()
    synth = synth_rate()
    figures.append(
        figure(
            f"metricpose synth, default studio ({synth['res']} px), 1 thread",
            synth["rate"],
            "crops/s",
            2000,
        )
    )
    step = step_ratio()
    figures += [
        figure("training step (2 views, 3 losses, data loading) / bare backbone fwd+bwd",
               step["full"] / step["bare"], "ratio", 0.85),
        figure("training step throughput (full method)", step["full"], "images/s"),
        figure("bare backbone fwd+bwd throughput", step["bare"], "images/s"),
        figure(f"data pipeline ({step['workers']} workers) / training step consumption",
               step["data"] / step["full"], "ratio", 2),
        figure("data pipeline throughput", step["data"], "images/s"),
    ]  # fmt: skip
    demo = demo_training_rate()
    figures += [
        figure(f"demo's baseline training, whole `metricpose train`, {demo['crop']} px, 1 thread, {demo['precision']}",
               demo["demo"], "images/s"),
        figure(f"bare backbone fwd+bwd+AdamW, {demo['crop']} px, same batch, 1 thread", demo["bare"], "images/s"),
        figure("demo's training / bare backbone", demo["demo"] / demo["bare"], "ratio", 0.85),
    ]  # fmt: skip
    modes = cpu_mode_figures()
    figures += [
        figure("training step fp32 (default network, batch 64, 64 px)", modes["fp32"], "images/s"),
        figure(f"training step bf16 autocast (CPU computes bf16: {'yes' if modes['bf16_hardware'] else 'no'})",
               modes["bf16"], "images/s"),
        figure("bf16 autocast / fp32", modes["bf16"] / modes["fp32"], "ratio"),
        figure("channels_last / contiguous input", modes["fp32"] / modes["contiguous"], "ratio"),
        figure("torch.compile / eager training step (eager: mean of the runs before and after)",
               2 * modes["compiled"] / (modes["fp32"] + modes["eager_again"]), "ratio"),
        figure("torch.compile first two steps (compilation)", modes["compile_warm_up_s"], "s"),
        figure("two 1-thread trainings side by side / one 2-thread training (demo's choice)",
               modes["two_runs_one_thread"] / modes["one_run_two_threads"], "ratio", 1.0),
    ]  # fmt: skip
    rates = inference_rates()
    for batch, (eager, onnx) in rates.items():
        figures += [
            figure(f"inference batch {batch}, eager PyTorch", eager, "images/s"),
            figure(f"inference batch {batch}, ONNX Runtime", onnx, "images/s"),
            figure(f"inference batch {batch}, ONNX Runtime / eager", onnx / eager, "ratio"),
        ]
    r = retrieval_figures()
    figures += [
        figure("FAISS exact search, 1M x 128-d, one query", r["exact_ms"], "ms"),
        figure("numpy brute force, 1M x 128-d, one query", r["numpy_ms"], "ms"),
        figure(f"FAISS IVF (2048 lists, nprobe {r['ivf_nprobe']}), one query", r["ivf_ms"], "ms", 5, False),
        figure("FAISS IVF recall@10 against exact search", r["ivf_recall"], "recall", 0.95),
        figure("FAISS IVF build (train + add 1M)", r["build_ivf_s"], "s"),
    ]  # fmt: skip
    figures.append(
        figure(
            "peak memory, training at default sizes (metric_adv)",
            training_peak_mb(),
            "MB",
            4096,
            False,
        )
    )
    if args.demo:
        figures.append(figure("default demo, end to end", demo_minutes(), "minutes", 20, False))
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
