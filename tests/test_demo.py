"""The tiny demo end to end: the CI smoke run of the README's main job."""

import json
from pathlib import Path

import pytest
import yaml

from metricpose.cli import main
from metricpose.demo import DemoRun, _add_gap_closed, _training_order, regime
from metricpose.report import verdict


@pytest.mark.slow
def test_tiny_demo_writes_results_report_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "tiny", "--no-progress"]) == 0
    doc = json.loads((out / "results.json").read_text())
    settings = [(r["variant"], r["labels"]) for r in doc["runs"]]
    assert settings == [
        ("baseline", "S1"), ("metric", "S1"), ("metric_adv", "S1"), ("metric_calibrated", "S1"),
        ("triangulated", "S1"), ("pseudo_labelled", "S1"), ("baseline", "all"),
    ]  # fmt: skip
    # The student learned from its teacher's triangulated views: every training subject's
    # sequences are labelled, the test subjects' are not.
    labels = (
        out / "pseudo_labels" / "metric_calibrated__S1__seed0" / "pseudo_labels.json"
    ).read_text()
    labels = json.loads(labels)
    assert labels["teacher"] == str(
        (out / "runs" / "metric_calibrated__S1__seed0" / "model.pt").resolve()
    )
    assert {name.split("_")[0] for name in labels["sequences"]} == set(doc["train_subjects"])
    student = yaml.safe_load(
        (out / "runs" / "pseudo_labelled__S1__seed0" / "config.yaml").read_text()
    )  # and it started from its teacher's weights, for half the preset's 30 steps
    assert student["train"]["init_weights"] == str(
        out / "runs" / "metric_calibrated__S1__seed0" / "model.pt"
    )
    by_setting = {s: r["mpjpe"] for s, r in zip(settings, doc["runs"], strict=True)}
    assert doc["regime"]["ratio"] == pytest.approx(
        by_setting["baseline", "all"] / by_setting["baseline", "S1"]
    )
    # The studio's test people that were rendered (the tiny studio has one of its ten).
    assert doc["test_subjects"] == ["S9"] and set(doc["regime"]["ratio_per_test_person"]) == {"S9"}
    assert doc["machine"]["torch"] and doc["machine"]["threads_per_run"] >= 1
    for run in doc["runs"]:
        assert 0 < run["pa_mpjpe"] <= run["n_mpjpe"] + 1e-6 <= run["mpjpe"] + 2e-6
        assert run["per_subject_mpjpe"] == {"S9": pytest.approx(run["mpjpe"])}
        assert 0 <= run["retrieval"]["hit@1"] <= run["retrieval"]["hit@10"] <= 1
        assert run["retrieval"]["mean_pa_mpjpe@1"] > 0
        assert 0 <= run["identity_probe_acc"] <= 1 and run["train_seconds"] > 0
        assert 0 <= run["heading_probe_deg"] <= 180
        # the flip test scores the same crops, each pose averaged with its mirror image's
        assert run["flip_test_mpjpe"] > 0 and run["flip_test_mpjpe"] != run["mpjpe"]
        # the steps' images over their own span: above their average over the whole training
        config = yaml.safe_load((Path(run["run_dir"]) / "config.yaml").read_text())
        assert config["train"]["steps"] == (15 if run["variant"] == "pseudo_labelled" else 30)
        images = config["train"]["steps"] * 2 * config["batch"]["size"]
        assert run["train_images_per_second"] >= images / run["train_seconds"]
    # The oracle retrieves the same instant from another camera: zero error, every query a hit.
    assert doc["references"]["oracle_3d"]["mean_pa_mpjpe@1"] < 1e-3
    assert doc["references"]["oracle_3d"]["hit@1"] == 1.0
    assert doc["references"]["random"]["mean_pa_mpjpe@1"] > 20
    report = (out / "report.md").read_text()
    assert "| metric_adv | S1 |" in report and "| baseline | all |" in report
    assert "Regime:" in report and "Relative MPJPE gain" in report
    printed = capsys.readouterr().out
    assert "gap closed" in printed and "Claim (>= 21% lower MPJPE" in printed
    assert "litlogger" not in printed
    for png in ("mpjpe_vs_labels.png", "training_curves.png", "retrieval_gallery.png"):
        assert (out / png).stat().st_size > 10_000
    # A second call reuses the trained runs and gives the same numbers.
    assert main(["demo", "--out", str(out), "--preset", "tiny", "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["mpjpe"] for r in again["runs"]] == [r["mpjpe"] for r in doc["runs"]]
    assert "trained before, reusing" in capsys.readouterr().out


def test_gap_closed_and_regime_hand_computed():
    def row(variant, labels, seed, a, b):  # two test people, A and B, with as many crops
        return {"variant": variant, "labels": labels, "seed": seed, "mpjpe": (a + b) / 2,
                "per_subject_mpjpe": {"A": a, "B": b}}  # fmt: skip

    runs = [
        row("baseline", "S1", 0, 180.0, 220.0), row("metric", "S1", 0, 170.0, 190.0),
        row("baseline", "all", 0, 90.0, 110.0), row("baseline", "S1", 1, 200.0, 220.0),
        row("metric", "S1", 1, 210.0, 220.0), row("baseline", "all", 1, 100.0, 120.0),
    ]  # fmt: skip
    _add_gap_closed(runs)
    # Per seed: (baseline - variant) / (baseline - ceiling).
    assert [r["gap_closed"] for r in runs] == [0.0, 0.2, None, 0.0, -0.05, None]
    reg = regime(runs, "S1")
    assert reg["baseline_mpjpe"] == 205.0 and reg["ceiling_mpjpe"] == 105.0
    assert reg["ratio"] == pytest.approx(105 / 205) and reg["label_limited"]
    # Per test person, over seeds: A (90 + 100) / (180 + 200), B (110 + 120) / (220 + 220).
    assert reg["ratio_per_test_person"] == pytest.approx({"A": 0.5, "B": 230 / 440})
    # metric per person: A (170 + 210) / (180 + 200) = 1.0, B (190 + 220) / (220 + 220).
    said = verdict({"regime": reg, "runs": runs})
    assert "runs 0.50-0.52 over 2 people" in said and "(per test person -7% to +0%)" in said
    # No gap (the ceiling no better than the baseline): nothing to close.
    flat = [dict(r, mpjpe=200.0) for r in runs[:3]]
    _add_gap_closed(flat)
    assert all(r["gap_closed"] is None for r in flat)


def test_teachers_train_first_and_students_as_soon_as_their_teachers_are_trained(tmp_path):
    def run(name, steps, batch, teacher=None):
        config = {"train": {"steps": steps}, "batch": {"size": batch}}
        return DemoRun(name, "S1", 0, config, tmp_path / name, teacher and tmp_path / teacher)

    runs = [
        run("baseline", 3500, 32), run("metric", 3500, 48), run("ceiling", 3500, 32),
        run("teacher", 3500, 48), run("student", 1750, 32, "teacher"),
        run("second", 1750, 32, "student"),
    ]  # fmt: skip
    order = [r.variant for r in _training_order(runs, runs)]
    # Teachers lead; a student, once it can start, goes before the longer independent runs
    # (it still has its pseudo-labels to make); then by steps x batch.
    assert order == ["student", "teacher", "second", "metric", "baseline", "ceiling"]
