"""The end-to-end experiment on the synthetic studio (``metricpose demo``).

Generates the studio (cached), trains ``baseline``, ``metric`` and ``metric_adv`` for each
label setting and seed of the preset (each run cached: an interrupted demo resumes), evaluates
them on the test subjects, runs the retrieval benchmark and the identity probe, and writes
results.json, report.md and plots.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metricpose import __version__
from metricpose.checkpoint import atomic_write_bytes, load_model
from metricpose.config import load_config
from metricpose.data.dataset import MultiViewDataset
from metricpose.errors import InputError
from metricpose.evaluate import predict, score
from metricpose.probe import heading_probe, identity_probe
from metricpose.retrieval import evaluate_retrieval
from metricpose.studio.generate import generate, synth_config
from metricpose.train import train

VARIANTS = ("baseline", "metric", "metric_adv")


@dataclass
class DemoPreset:
    studio: str
    labels: list[str]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    eval_stride: int = 1  # instants between evaluated test frames
    query_stride: int = 2  # between retrieval queries
    probe_stride: int = 2


PRESETS: dict[str, DemoPreset] = {
    # The CI smoke run: seconds per step, numbers meaningless.
    "tiny": DemoPreset(
        "tiny", ["S1"], [0],
        ["train.steps=30", "train.val_every=15", "batch.size=8", "train.val_frames=16", "model.regressor_width=128"],
        query_stride=2,
    ),
    # The README's main job: ~10 minutes on 2 CPU cores.
    "default": DemoPreset("default", ["S1"], [0], ["train.steps=1000", "train.val_every=500"], query_stride=3),
    # The default experiment over three seeds: is a difference beyond seed noise?
    "seeds": DemoPreset("default", ["S1"], [0, 1, 2], ["train.steps=1000", "train.val_every=500"], query_stride=3),
    # Mean and spread over seeds and label amounts (about an hour on 2 CPU cores).
    "sweep": DemoPreset("default", ["S1", "fraction:0.05", "fraction:0.3"], [0, 1, 2], ["train.steps=1000", "train.val_every=500"], query_stride=3),
    # The large study, for a GPU.
    "full": DemoPreset(
        "full", ["S1", "fraction:0.05", "fraction:0.3", "all"], [0, 1, 2],
        ["train.steps=20000", "train.val_every=2000", "model.width=1.0", "batch.size=64", "data.num_workers=4"],
    ),
}  # fmt: skip


def _run_name(variant: str, labels: str, seed: int) -> str:
    return f"{variant}__{labels.replace(':', '')}__seed{seed}"


def run_demo(
    out: Path,
    preset_name: str = "default",
    data: Path | None = None,
    progress: bool = True,
    threads: int = 0,
    overrides: list[str] | None = None,
    variants: tuple[str, ...] = VARIANTS,
) -> dict[str, Any]:
    if preset_name not in PRESETS:
        raise InputError(f"unknown demo preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown demo variants {unknown}; choose from {', '.join(VARIANTS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    data = Path(data) if data else out / "data" / f"studio-{preset.studio}"
    print(f"[demo] studio data: {data}")
    generate(data, synth_config(preset.studio), progress=progress)

    runs = []
    for labels in preset.labels:
        for seed in preset.seeds:
            for variant in variants:
                run_overrides = [
                    f"data.root={data}",
                    f"data.labels={labels}",
                    f"seed={seed}",
                    *preset.overrides,
                    *(overrides or []),
                ]
                config = load_config(variant, run_overrides)
                run_dir = out / "runs" / _run_name(variant, labels, seed)
                summary_file = run_dir / "train_summary.json"
                if summary_file.exists():
                    print(f"[demo] {run_dir.name}: trained before, reusing")
                else:
                    print(f"[demo] training {run_dir.name}")
                    train(
                        config,
                        run_dir,
                        resume=(run_dir / "checkpoints" / "last.ckpt").exists(),
                        progress=progress,
                    )
                summary = json.loads(summary_file.read_text())
                runs.append(
                    {
                        "variant": variant,
                        "labels": labels,
                        "seed": seed,
                        "dir": run_dir,
                        "config": config,
                        "train_seconds": summary["train_seconds"],
                    }
                )

    test = MultiViewDataset(data, subjects=runs[0]["config"]["data"]["test_subjects"], num_views=1)
    train_set = MultiViewDataset(
        data, subjects=runs[0]["config"]["data"]["train_subjects"], num_views=1
    )
    references = None
    gallery = None
    results = []
    for run in runs:
        print(f"[demo] evaluating {run['dir'].name}")
        model, _ = load_model(run["dir"] / "model.pt")
        pred = predict(
            model,
            test,
            frame_stride=preset.eval_stride,
            keep_images=gallery is None and run["variant"] == "metric",
        )
        gallery = gallery or (pred if pred.images is not None else None)
        scores = score(pred)
        retrieval = evaluate_retrieval(
            pred, preset.query_stride, seed=run["seed"], references=references is None
        )
        cross = None
        if len(set(pred.subject)) > 1:  # the cross-subject variant needs two test subjects
            cross = evaluate_retrieval(
                pred, preset.query_stride, cross_subject=True, references=False
            )
        references = references or {k: retrieval[k] for k in ("oracle_3d", "random")}
        train_pred = predict(model, train_set, frame_stride=preset.probe_stride)
        probe = identity_probe(train_pred, seed=run["seed"])
        heading = heading_probe(train_pred, pred)
        results.append({
            "variant": run["variant"], "labels": run["labels"], "seed": run["seed"],
            **{k: scores["overall"][k] for k in ("mpjpe", "n_mpjpe", "pa_mpjpe", "pck150", "auc")},
            "retrieval": retrieval["embedding"],
            "retrieval_cross_subject": cross["embedding"] if cross else None,
            "identity_probe_acc": probe["accuracy"],
            "heading_probe_deg": heading["median_error_deg"],
            "train_seconds": run["train_seconds"],
            "per_action_mpjpe": {a: m["mpjpe"] for a, m in scores["per_action"].items()},
            "run_dir": str(run["dir"]),
        })  # fmt: skip
    document = {
        "runs": results,
        "seed": preset.seeds[0] if len(preset.seeds) == 1 else preset.seeds,
        "config": {
            "preset": preset_name,
            "studio": preset.studio,
            "overrides": preset.overrides + list(overrides or []),
            "base": {v: _strip(load_config(v)) for v in VARIANTS},
        },
        "references": references,
        "identity_chance": 1.0 / len(train_set.subjects),
        "test_crops": scores["count"],
        "test_subjects": test.subjects,
        "version": __version__,
        "total_seconds": time.perf_counter() - began,
    }
    atomic_write_bytes(out / "results.json", json.dumps(document, indent=1).encode())
    from metricpose.report import write_report

    write_report(out, document, gallery)
    print(f"[demo] done in {document['total_seconds'] / 60:.1f} min: {out / 'report.md'}")
    return document


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "data"} | {
        "data": {k: v for k, v in config["data"].items() if k != "root"}
    }
