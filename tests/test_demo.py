"""The tiny demo end to end: the CI smoke run of the README's main job."""

import json

import pytest

from metricpose.cli import main


@pytest.mark.slow
def test_tiny_demo_writes_results_report_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "tiny", "--no-progress"]) == 0
    doc = json.loads((out / "results.json").read_text())
    settings = [(r["variant"], r["labels"]) for r in doc["runs"]]
    assert settings == [
        ("baseline", "S1"), ("metric", "S1"), ("metric_adv", "S1"), ("metric_calibrated", "S1"),
        ("baseline", "all"),
    ]  # fmt: skip
    by_setting = {s: r["mpjpe"] for s, r in zip(settings, doc["runs"], strict=True)}
    assert doc["regime"]["ratio"] == pytest.approx(
        by_setting["baseline", "all"] / by_setting["baseline", "S1"]
    )
    assert doc["machine"]["torch"] and doc["machine"]["threads_per_run"] >= 1
    for run in doc["runs"]:
        assert 0 < run["pa_mpjpe"] <= run["n_mpjpe"] + 1e-6 <= run["mpjpe"] + 2e-6
        assert 0 <= run["retrieval"]["hit@1"] <= run["retrieval"]["hit@10"] <= 1
        assert run["retrieval"]["mean_pa_mpjpe@1"] > 0
        assert 0 <= run["identity_probe_acc"] <= 1 and run["train_seconds"] > 0
        assert 0 <= run["heading_probe_deg"] <= 180
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
