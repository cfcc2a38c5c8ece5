"""The end-to-end experiment on the synthetic studio (``metricpose demo``).

Generates the studio (cached), trains every variant with the preset's scarce labels and, as
the reference that says whether labels are the bottleneck at all, the baseline with every
training subject labelled (the ceiling); evaluates them on the test subjects, runs the
retrieval benchmark and the identity probe, and writes results.json, report.md and plots.
Each run is cached: an interrupted demo resumes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metricpose import __version__
from metricpose.checkpoint import load_model
from metricpose.config import PRESETS as VARIANTS
from metricpose.config import load_config
from metricpose.data.dataset import MultiViewDataset
from metricpose.data.format import open_dataset
from metricpose.errors import InputError
from metricpose.evaluate import Predictions, default_test_subjects, predict_dataset, score
from metricpose.fileio import atomic_write_text
from metricpose.metrics import fuse_views, mpjpe, orientation_decomposition
from metricpose.probe import heading_probe, identity_probe
from metricpose.pseudo_labels import write_pseudo_labels
from metricpose.report import (
    CEILING,
    LABEL_LIMITED_RATIO,
    per_person_ratio,
    summary_table,
    verdict,
    write_report,
)
from metricpose.retrieval import evaluate_retrieval
from metricpose.studio.generate import generate, synth_config
from metricpose.train import train


@dataclass
class DemoPreset:
    studio: str
    labels: list[str]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    variants: tuple[str, ...] = VARIANTS  # trained with the scarce labels; plus the ceiling
    eval_stride: int = 1  # instants between evaluated test frames
    query_stride: int = 2  # between retrieval queries
    probe_stride: int = 2


# Sized for 2 CPU cores in 20 minutes; the network's width, the steps, the learning rate,
# dropout and regressor width are the ones that let the all-labels ceiling learn most in that
# budget (docs/design.md, testbed): a quarter-width ResNet-18 takes 2500 steps in the time the
# half-width one took 1000, and its ceiling is lower (111 vs 119 mm); a 256-wide regressor
# learns as much as a 512-wide one and frees time for more steps (tenth round); a student that
# starts from its teacher needs only half of them, which pays for 3500 steps in every other
# run (eleventh round).
_CPU_DEMO = [
    "model.width=0.25",
    "train.steps=3500",
    "train.val_every=875",
    "train.lr=0.003",
    "model.dropout=0.0",
    "model.regressor_width=256",
]
PRESETS: dict[str, DemoPreset] = {
    # The CI smoke run: seconds per step, numbers meaningless.
    "tiny": DemoPreset(
        "tiny", ["S1"], [0],
        ["train.steps=30", "train.val_every=15", "batch.size=12", "train.val_frames=16", "model.regressor_width=128"],
        query_stride=2,
    ),
    # The README's main job: 13-18 minutes on 2 CPU cores (target 20). The paper's metric loss,
    # the calibrated extension and its pseudo-label student; the identity adversary (no effect
    # over three seeds, docs/results.md) is left to `seeds`, which tells effects from noise.
    # Every 4th instant of the studio's ten test people: frames of a take are alike, people are
    # not (sixteenth round), and scoring costs what every 2nd instant of two people did.
    "default": DemoPreset("default", ["S1"], [0], _CPU_DEMO, ("baseline", "metric", "metric_calibrated", "pseudo_labelled"), eval_stride=4, query_stride=8, probe_stride=8),
    # The default experiment over three seeds: is a difference beyond seed noise?
    "seeds": DemoPreset("default", ["S1"], [0, 1, 2], _CPU_DEMO, VARIANTS, eval_stride=4, query_stride=8, probe_stride=8),
    # Mean and spread over seeds and label amounts.
    "sweep": DemoPreset("default", ["S1", "fraction:0.05", "fraction:0.3"], [0, 1, 2], _CPU_DEMO, VARIANTS, eval_stride=4, query_stride=8, probe_stride=8),
    # The large study, for a GPU.
    "full": DemoPreset(
        "full", ["S1", "fraction:0.05", "fraction:0.3"], [0, 1, 2],
        ["train.steps=20000", "train.val_every=2000", "model.width=1.0", "batch.size=64", "data.num_workers=4"],
    ),
}  # fmt: skip


#: Student variant -> the variant whose trained run pseudo-labels the data for it, with the
#: same labels and seed, and whose weights it starts from: the calibrated run's triangulated
#: views are better labels than the baseline's (docs/design.md, seventh round), and its
#: network a better start than a random one (tenth round), from which the student trains
#: half the preset's steps (eleventh round: 145.1 mm after 1400 steps, 144.5 after 2800).
TEACHERS = {"pseudo_labelled": "metric_calibrated"}


def _fused_views_scores(pred: Predictions) -> dict[str, float]:
    """The run's predictions averaged over each instant's cameras (metrics.fuse_views): what
    agreement between views could teach at most; an error all views share stays."""
    fused = fuse_views(pred.pose_pred, pred.pose_gt, pred.pose_world, pred.instant)
    return {
        "fused_views_mpjpe": mpjpe(fused, pred.pose_gt),
        "fused_views_body_frame_mpjpe": orientation_decomposition(fused, pred.pose_gt)[
            "body_frame_mpjpe"
        ],
    }


def _run_name(variant: str, labels: str, seed: int) -> str:
    return f"{variant}__{labels.replace(':', '')}__seed{seed}"


def _quiet_third_parties() -> None:
    """Keep Lightning's banners, tips and deprecation notices out of the demo's output."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


@dataclass
class DemoRun:
    """One training run of the demo and how it is scored."""

    variant: str
    labels: str
    seed: int
    config: dict[str, Any]
    run_dir: Path
    teacher: Path | None = None  # a run whose model pseudo-labels the data first
    keep_images: bool = False  # its test crops become the report's retrieval gallery
    references: bool = False  # it also scores the oracle and random retrieval references

    @property
    def name(self) -> str:
        return self.run_dir.name


@dataclass
class Scoring:
    """What every run is scored on: the preset's strides over the test and training people."""

    data: Path
    test_subjects: list[str]
    train_subjects: list[str]
    preset: DemoPreset


def _train(run: DemoRun, threads: int, progress: bool) -> None:
    """Train one run (in a worker process when the demo trains several at once), after
    pseudo-labelling the data with its teacher if it has one."""
    _quiet_third_parties()
    if threads:
        torch.set_num_threads(threads)
    if run.teacher is not None:
        print(f"[demo] {run.name}: pseudo-labels from {run.teacher.name}", flush=True)
        write_pseudo_labels(
            run.teacher / "model.pt",
            run.config["data"]["root"],
            run.config["data"]["pseudo_labels"],
        )
    train(
        run.config,
        run.run_dir,
        resume=(run.run_dir / "checkpoints" / "last.ckpt").exists(),
        progress=progress,
    )
    seconds = json.loads((run.run_dir / "train_summary.json").read_text())["train_seconds"]
    print(f"[demo] {run.name}: trained in {seconds / 60:.1f} min", flush=True)


def _score_several(
    runs: list[DemoRun], scoring: Scoring, threads: int
) -> list[tuple[dict[str, Any], Predictions | None, dict[str, Any] | None]]:
    return [_score(run, scoring, threads) for run in runs]


def _trained(run: DemoRun) -> bool:
    return (run.run_dir / "train_summary.json").exists()


def _score(
    run: DemoRun, scoring: Scoring, threads: int
) -> tuple[dict[str, Any], Predictions | None, dict[str, Any] | None]:
    """Score a trained run (in a worker process when the demo trains several at once): pose
    metrics and retrieval on the test people, identity and heading probes on the training
    people.

    Returns its row of results.json, its test predictions with images (``keep_images`` runs
    only) and the retrieval references (``references`` runs only).
    """
    _quiet_third_parties()
    if threads:
        torch.set_num_threads(threads)
    preset = scoring.preset
    summary = json.loads((run.run_dir / "train_summary.json").read_text())
    model, _ = load_model(run.run_dir / "model.pt")
    test = MultiViewDataset(scoring.data, subjects=scoring.test_subjects, num_views=1)
    pred = predict_dataset(
        model, test, frame_stride=preset.eval_stride, keep_images=run.keep_images
    )
    scores = score(pred)
    flip_test = score(predict_dataset(model, test, frame_stride=preset.eval_stride, flip_test=True))
    retrieval = evaluate_retrieval(
        pred, preset.query_stride, seed=run.seed, references=run.references
    )
    cross = None
    if len(set(pred.subject)) > 1:  # the cross-subject variant needs two test subjects
        cross = evaluate_retrieval(pred, preset.query_stride, cross_subject=True, references=False)
    train_set = MultiViewDataset(scoring.data, subjects=scoring.train_subjects, num_views=1)
    train_pred = predict_dataset(model, train_set, frame_stride=preset.probe_stride)
    probe = identity_probe(train_pred, seed=run.seed)
    heading = heading_probe(train_pred, pred)
    row = {
        "variant": run.variant, "labels": run.labels, "seed": run.seed,
        **{k: scores["overall"][k] for k in ("mpjpe", "n_mpjpe", "pa_mpjpe", "pck150", "auc")},
        "flip_test_mpjpe": flip_test["overall"]["mpjpe"],
        "retrieval": retrieval["embedding"],
        "retrieval_cross_subject": cross["embedding"] if cross else None,
        "identity_probe_acc": probe["accuracy"],
        "heading_probe_deg": heading["median_error_deg"],
        **orientation_decomposition(pred.pose_pred, pred.pose_gt),
        **_fused_views_scores(pred),
        "train_seconds": summary["train_seconds"],
        "train_images_per_second": summary.get("images_per_second"),  # None: trained before it was measured
        "train_precision": summary.get("precision"),  # None: trained before it was recorded
        "per_action_mpjpe": {a: m["mpjpe"] for a, m in scores["per_action"].items()},
        "per_subject_mpjpe": {s: m["mpjpe"] for s, m in scores["per_subject"].items()},
        "test_crops": scores["count"],
        "run_dir": str(run.run_dir),
    }  # fmt: skip
    references = {k: retrieval[k] for k in ("oracle_3d", "random")} if run.references else None
    print(f"[demo] {run.name}: scored, MPJPE {row['mpjpe']:.1f} mm", flush=True)
    return row, (pred if run.keep_images else None), references


def _run_all(
    runs: list[DemoRun], scoring: Scoring, workers: int, threads: int, progress: bool
) -> list[tuple[dict[str, Any], Predictions | None, dict[str, Any] | None]]:
    """Train and score every run, ``workers`` tasks at a time; a run with a teacher starts
    once its teacher is trained. Returns the runs' scores (:func:`_score`) in their order.

    A free lane takes a training that can start, else a scoring: scorings fill the lanes that
    the trainings leave idle, rather than lengthening the busiest one. The default demo's time
    beyond its busiest lane's training: 4.0 min with all scoring at the end, 3.6 with each run
    scored in its lane, 2.4 this way (docs/results.md)."""
    to_train = [run for run in runs if not _trained(run)]
    to_score = [run for run in runs if _trained(run)]
    for run in to_score:
        print(f"[demo] {run.name}: trained before, reusing", flush=True)
    if workers <= 1 or len(runs) <= 1:
        for run in to_train:  # runs list a teacher before its students
            _train(run, threads, progress)
        return _score_several(runs, scoring, threads)
    to_train = _training_order(to_train, runs)
    trained = {run.run_dir for run in to_score}
    print(
        f"[demo] training {len(to_train)} and scoring {len(runs)} runs, {workers} at a time, "
        f"{threads} thread(s) each",
        flush=True,
    )
    scores: dict[Path, Any] = {}
    context = multiprocessing.get_context("spawn")  # no forked Lightning or OpenMP state
    # SIGTERM leaves through the pool's exit, which passes it on to the trainings: each ends
    # its step and writes last.ckpt, so that the demo resumes there.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with context.Pool(workers, maxtasksperchild=1) as pool:
            running: dict[Any, tuple[str, Any]] = {}  # task -> ("train", run) / ("score", runs)
            while to_train or to_score or running:
                while len(running) < workers:
                    ready = [r for r in to_train if r.teacher is None or r.teacher in trained]
                    if ready:
                        to_train.remove(ready[0])
                        task = pool.apply_async(_train, (ready[0], threads, False))
                        running[task] = ("train", ready[0])
                    elif to_score:
                        # The waiting scorings shared among the free lanes, several per task:
                        # each task is a new process (maxtasksperchild), seconds to start.
                        share = -(-len(to_score) // (workers - len(running)))
                        batch, to_score = to_score[:share], to_score[share:]
                        task = pool.apply_async(_score_several, (batch, scoring, threads))
                        running[task] = ("score", batch)
                    else:
                        break
                if not running:
                    raise RuntimeError(
                        f"{to_train[0].name}: its teacher {to_train[0].teacher} is no run"
                    )
                time.sleep(0.2)
                for task, (kind, subject) in list(running.items()):
                    if task.ready():
                        del running[task]
                        if kind == "train":
                            task.get()  # raises the training's error here
                            trained.add(subject.run_dir)
                            to_score.append(subject)
                        else:
                            for run, outcome in zip(subject, task.get(), strict=True):
                                scores[run.run_dir] = outcome
    finally:
        signal.signal(signal.SIGTERM, previous)
    return [scores[run.run_dir] for run in runs]


def _training_order(to_train: list[DemoRun], runs: list[DemoRun]) -> list[DemoRun]:
    """The order in which free lanes take trainings that can start: teachers first; then a
    student as soon as its teacher is trained (it has its pseudo-labels to make before it
    trains: the chain teacher -> labels -> student must not wait for the other runs); then the
    longest runs (steps x batch), so that the lanes end together."""
    teachers = {run.teacher for run in runs}
    return sorted(
        to_train,
        key=lambda run: (
            run.run_dir not in teachers,
            run.teacher is None,
            -run.config["train"]["steps"] * run.config["batch"]["size"],
        ),
    )


def _exit_on_sigterm(signal_number: int, frame: Any) -> None:
    raise SystemExit(128 + signal_number)


def _default_workers() -> int:
    """Two runs side by side on a CPU machine: small convolutions use one core each better
    than two cores one run (bench/README.md); one at a time on a GPU."""
    if torch.cuda.is_available():
        return 1
    return max(1, min(2, len(os.sched_getaffinity(0))))


def run_demo(
    out: Path,
    preset_name: str = "default",
    data: Path | None = None,
    progress: bool = True,
    threads: int = 0,
    overrides: list[str] | None = None,
    variants: tuple[str, ...] | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    if preset_name not in PRESETS:
        raise InputError(f"unknown demo preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    variants = tuple(variants or preset.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown demo variants {unknown}; choose from {', '.join(VARIANTS)}")
    if "baseline" not in variants:
        variants = ("baseline", *variants)  # every gain is measured against it
    for student, teacher in TEACHERS.items():
        if student in variants and teacher not in variants:
            variants = (
                *variants[: variants.index(student)],
                teacher,
                *variants[variants.index(student) :],
            )
    _quiet_third_parties()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or _default_workers()
    threads = threads or (1 if workers > 1 else 0)
    if threads:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    if data is None:  # the preset's own studio, rendered once (generate skips finished takes)
        data = out / "data" / f"studio-{preset.studio}"
        print(f"[demo] studio data: {data}", flush=True)
        generate(data, synth_config(preset.studio), progress=progress)
    else:  # a studio or dataset of the user's (metricpose synth --seed N --random-rig ...)
        data = Path(data)
        print(f"[demo] data: {data}", flush=True)
    subjects = sorted({s.meta.subject for s in open_dataset(data)})
    test_subjects = [
        s for s in default_test_subjects(data, load_config("baseline")) if s in subjects
    ]
    train_subjects = [s for s in subjects if s not in test_subjects]
    if not test_subjects or not train_subjects:
        raise InputError(
            f"{data}: the demo needs test subjects (a studio's test people, or S9, S11) and "
            f"training subjects; found {subjects}"
        )

    runs = []
    settings = [(v, lab) for lab in preset.labels for v in variants] + [("baseline", CEILING)]
    for seed in preset.seeds:
        for variant, labels in settings:
            run_overrides = [
                f"data.root={data}",
                f"data.train_subjects={','.join(train_subjects)}",
                f"data.labels={labels}",
                f"seed={seed}",
                *preset.overrides,
                *(overrides or []),
            ]
            teacher = None
            if variant in TEACHERS:  # the teacher variant's run with the same labels and seed
                teacher = out / "runs" / _run_name(TEACHERS[variant], labels, seed)
                run_overrides += [
                    f"data.pseudo_labels={out / 'pseudo_labels' / teacher.name}",
                    f"train.init_weights={teacher / 'model.pt'}",
                ]
            run_dir = out / "runs" / _run_name(variant, labels, seed)
            config = load_config(variant, run_overrides)
            if teacher is not None:  # it starts from its teacher's weights: half the steps do
                config["train"]["steps"] = max(1, config["train"]["steps"] // 2)
            runs.append(DemoRun(variant, labels, seed, config, run_dir, teacher))
    runs[0].references = True
    gallery_run = next((run for run in runs if run.variant == "metric"), None)
    if gallery_run is not None:
        gallery_run.keep_images = True
    scoring = Scoring(data, test_subjects, train_subjects, preset)
    outcomes = _run_all(runs, scoring, workers, threads, progress)
    results = [row for row, _, _ in outcomes]
    gallery = next((pred for _, pred, _ in outcomes if pred is not None), None)
    references = next(refs for _, _, refs in outcomes if refs is not None)
    _add_gap_closed(results)
    document = {
        "runs": results,
        "regime": regime(results, preset.labels[0]),
        "seed": preset.seeds[0] if len(preset.seeds) == 1 else preset.seeds,
        "config": {
            "preset": preset_name,
            "studio": preset.studio,
            "overrides": preset.overrides + list(overrides or []),
            "variants": {r.variant: _strip(r.config) for r in runs if r.labels != CEILING},
        },
        "train_subjects": train_subjects,
        "references": references,
        "identity_chance": 1.0 / len(train_subjects),
        "test_crops": results[0]["test_crops"],
        "test_subjects": test_subjects,
        "machine": machine(threads, workers),
        "version": __version__,
        "total_seconds": time.perf_counter() - began,
    }
    atomic_write_text(out / "results.json", json.dumps(document, indent=1))
    write_report(out, document, gallery)
    print()
    print(summary_table(document))
    print()
    print(verdict(document))
    print(f"[demo] done in {document['total_seconds'] / 60:.1f} min: {out / 'report.md'}")
    return document


def _add_gap_closed(results: list[dict[str, Any]]) -> None:
    """For every run with scarce labels: the share of the label gap of its seed that it closes,
    (baseline − run) / (baseline − ceiling), MPJPE; 1 means as good as labelling everyone.
    None where there is no gap (the ceiling is no better than the baseline)."""
    by_key = {(r["variant"], r["labels"], r["seed"]): r["mpjpe"] for r in results}
    for r in results:
        base = by_key.get(("baseline", r["labels"], r["seed"]))
        ceiling = by_key.get(("baseline", CEILING, r["seed"]))
        r["gap_closed"] = (
            None
            if r["labels"] == CEILING or base is None or ceiling is None or base <= ceiling
            else (base - r["mpjpe"]) / (base - ceiling)
        )


def regime(results: list[dict[str, Any]], labels: str) -> dict[str, Any]:
    """Is the testbed label-limited? Mean ceiling and baseline MPJPE over seeds, their ratio,
    and the same ratio for each test person (how much the answer depends on who is tested)."""
    base_runs = [r for r in results if r["variant"] == "baseline" and r["labels"] == labels]
    ceiling_runs = [r for r in results if r["variant"] == "baseline" and r["labels"] == CEILING]
    if not base_runs or not ceiling_runs:
        return {"labels": labels, "baseline_mpjpe": None, "ceiling_mpjpe": None, "ratio": None}
    base = float(np.mean([r["mpjpe"] for r in base_runs]))
    ceiling = float(np.mean([r["mpjpe"] for r in ceiling_runs]))
    ratio = ceiling / base
    return {
        "labels": labels,
        "baseline_mpjpe": base,
        "ceiling_mpjpe": ceiling,
        "ratio": ratio,
        "label_limited": ratio <= LABEL_LIMITED_RATIO,
        "target_ratio": LABEL_LIMITED_RATIO,
        "ratio_per_test_person": per_person_ratio(ceiling_runs, base_runs),
    }


def machine(threads: int, workers: int) -> dict[str, Any]:
    """What the numbers were measured on: CPU kernels (and so results) differ by processor
    and thread count."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "threads_per_run": threads or torch.get_num_threads(),
        "parallel_runs": workers,
    }


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "data"} | {
        "data": {k: v for k, v in config["data"].items() if k != "root"}
    }
