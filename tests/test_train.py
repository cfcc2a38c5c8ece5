"""Training on the tiny studio: the presets run, the metric loss learns, resume is exact."""

import csv
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from metricpose.checkpoint import build_model, load_model, safe_load
from metricpose.config import ConfigError, load_config
from metricpose.data.dataset import MultiViewDataset
from metricpose.errors import InputError, TrainingInterrupted
from metricpose.evaluate import predict_dataset, score
from metricpose.train import (
    NonFiniteLossError,
    PoseModule,
    StepClock,
    StopOnSignal,
    _trainer_options,
    check_resumed_config,
    hold_out_sequences,
    labelled_instants,
    lock_output_folder,
    one_cycle,
    train,
)

TINY = [
    "batch.size=8",
    "train.val_frames=8",
    "model.regressor_width=64",
    "model.width=0.25",
    "train.log_every=1",
]


def config_for(data, preset, *extra):
    return load_config(
        preset,
        [
            f"data.root={data}",
            "data.train_subjects=[S1,S5]",
            "data.test_subjects=[S9]",
            *TINY,
            *extra,
        ],
    )


@pytest.mark.parametrize("preset", ["baseline", "metric", "metric_adv"])
def test_presets_train_and_save_a_loadable_model(tiny_studio, tmp_path, preset):
    summary = train(
        config_for(tiny_studio, preset, "train.steps=6", "train.val_every=3"),
        tmp_path / "run",
        progress=False,
    )
    assert summary["steps"] == 6
    for name in (
        "model.pt",
        "config.yaml",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "logs/metrics.csv",
    ):
        assert (tmp_path / "run" / name).exists(), name
    model, config = load_model(tmp_path / "run" / "model.pt")
    assert config["loss"]["metric_weight"] == (0.0 if preset == "baseline" else 0.3)
    header = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/pose" in header and ("train/metric" in header) == (preset != "baseline")
    assert ("train/adversarial" in header) == (preset == "metric_adv")
    # The Lightning checkpoint loads safely too and gives the same network.
    from_ckpt, _ = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    for (k, a), b in zip(model.state_dict().items(), from_ckpt.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_metric_loss_learns_view_invariance(tiny_studio, tmp_path):
    config = config_for(
        tiny_studio,
        "metric",
        "train.steps=150",
        "train.val_every=150",
        "loss.time_window=4",
        "batch.size=16",
        "loss.metric_weight=1.0",
    )
    train(config, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train/metric")
    values = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert np.mean(values[-20:]) < 0.8 * np.mean(values[:10])
    # Same instant from two cameras is closer than different instants (every 3rd instant of
    # the training subjects).
    model, _ = load_model(tmp_path / "run" / "model.pt")
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S5"], num_views=1)
    pred = predict_dataset(model, ds, frame_stride=3)
    emb = torch.as_tensor(pred.embedding)
    d = torch.cdist(emb, emb)
    same_instant = torch.as_tensor(pred.instant[:, None] == pred.instant[None]) & ~torch.eye(
        len(emb), dtype=torch.bool
    )
    far = torch.as_tensor(np.abs(pred.frame[:, None] - pred.frame[None]) >= 4) | torch.as_tensor(
        pred.sequence[:, None] != pred.sequence[None]
    )
    assert d[same_instant].mean() < 0.8 * d[far].mean()


def test_mirroring_swaps_sides_and_is_an_involution(tiny_studio):
    from torch.utils.data import default_collate

    from metricpose.data.dataset import FrameKey
    from metricpose.train import mirror_instants

    ds = MultiViewDataset(tiny_studio)
    batch = default_collate([ds[FrameKey(i, (0, 2))] for i in (3, 40)])
    flip = torch.tensor([True, False])
    m = mirror_instants(batch, flip)
    assert torch.equal(m["images"][0, 1], batch["images"][0, 1].flip(1))
    assert torch.equal(m["images"][1], batch["images"][1])
    left_wrist, right_wrist = 13, 16
    torch.testing.assert_close(
        m["pose_cam"][0, :, left_wrist, 0], -batch["pose_cam"][0, :, right_wrist, 0]
    )
    torch.testing.assert_close(
        m["pose_cam"][0, :, left_wrist, 1:], batch["pose_cam"][0, :, right_wrist, 1:]
    )
    back = mirror_instants(m, flip)
    assert torch.equal(back["images"], batch["images"]) and torch.equal(
        back["pose_cam"], batch["pose_cam"]
    )


def test_label_protocols(tiny_studio):
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S5"])
    s1 = labelled_instants(ds, "S1", ["S1", "S5"], seed=0)
    assert s1.sum() == 64 and (np.array(ds.subjects)[ds.subject_index[s1]] == "S1").all()
    frac = labelled_instants(ds, "fraction:0.25", ["S1", "S5"], seed=0)
    assert frac.sum() == 8 * 4  # 4 of 16 frames in each of the 8 sequences
    assert np.array_equal(frac, labelled_instants(ds, "fraction:0.25", ["S1", "S5"], seed=0))
    assert not np.array_equal(frac, labelled_instants(ds, "fraction:0.25", ["S1", "S5"], seed=1))


def test_validation_holds_out_whole_sequences(tiny_studio):
    """Validation never shares a take with training: neighbouring frames are near-duplicates."""
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S5"])
    labelled = labelled_instants(ds, "S1", ["S1", "S5"], seed=0)
    supervised, val = hold_out_sequences(ds, labelled, seed=0)
    held = set(ds.seq_index[val])
    assert len(held) == 1  # 10% of S1's 4 takes, at least one
    assert not held & set(ds.seq_index[supervised])
    assert set(val) | set(np.flatnonzero(supervised)) == set(np.flatnonzero(labelled))
    assert (ds.frame_index[val] == np.arange(16)).all()  # the whole take
    # One labelled sequence: its last 10% of frames, never all of it.
    one = labelled & (ds.seq_index == ds.seq_index[np.flatnonzero(labelled)[0]])
    supervised, val = hold_out_sequences(ds, one, seed=0)
    assert len(val) == 2 and supervised.sum() == 14 and ds.frame_index[val].tolist() == [14, 15]


def test_a_second_training_into_the_same_folder_is_refused_naming_the_first(tmp_path):
    first = lock_output_folder(tmp_path)
    with pytest.raises(InputError, match=f"pid {os.getpid()}"):
        lock_output_folder(tmp_path)
    first.close()  # the first run ended (or was killed: the OS drops the lock)
    lock_output_folder(tmp_path).close()


def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path):
    started = load_config("metric", ["data.root=/d"])
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(started, sort_keys=False))
    check_resumed_config(saved, load_config("metric", ["data.root=/elsewhere", "train.threads=2"]))
    with pytest.raises(
        InputError,
        match=r"loss.metric_weight: 0.3 -> 0.5",
    ):
        check_resumed_config(
            saved, load_config("metric", ["data.root=/d", "loss.metric_weight=0.5"])
        )
    with pytest.raises(InputError, match=r"train.steps: 1500 -> 3000\) \(train.steps cannot grow"):
        check_resumed_config(saved, load_config("metric", ["data.root=/d", "train.steps=3000"]))


def test_every_step_count_has_a_schedule():
    """20 steps used to end in ZeroDivisionError inside OneCycleLR."""
    for steps in range(1, 130):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule = one_cycle(optimizer, 1e-3, steps)
        for _ in range(steps):
            optimizer.step()
            schedule.step()
        assert 0 < optimizer.param_groups[0]["lr"] <= 1e-3


def test_a_failed_training_leaves_no_empty_output_folder(tmp_path):
    out = tmp_path / "run"
    config = load_config("baseline", [f"data.root={tmp_path / 'no-such-dataset'}"])
    with pytest.raises(InputError, match="no-such-dataset"):
        train(config, out, progress=False)
    assert not out.exists()


def test_the_triangulated_preset_trains_from_its_start_step(tiny_studio, tmp_path):
    """The triangulation term joins at loss.triangulation_start_step and not before."""
    config = config_for(tiny_studio, "triangulated", "batch.size=12", "train.steps=6",
                        "train.val_every=6", "loss.triangulation_start_step=3")  # fmt: skip
    train(config, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "metrics.csv").open()))
    steps = sorted({int(r["step"]) for r in rows if r.get("train/triangulation")})
    assert steps == [3, 4, 5]
    assert all(float(r["train/triangulation"]) > 0 for r in rows if r.get("train/triangulation"))


def test_config_validation():
    with pytest.raises(ConfigError, match="did you mean 'loss.margin'"):
        load_config("metric", ["loss.margn=0.3"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_config("metric", ["loss.margin=abc"])
    with pytest.raises(ConfigError, match="one of"):
        load_config("metric", ["loss.metric=contrastive"])
    with pytest.raises(ConfigError, match="overlaps"):
        load_config("metric", ["data.test_subjects=[S1]"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("fancy")
    with pytest.raises(
        ConfigError, match="unlabelled_views=4"
    ):  # two views: nothing to triangulate
        load_config("triangulated", ["batch.unlabelled_views=2"])
    with pytest.raises(ConfigError, match="3 slots"):  # an odd slot would be lost silently
        load_config("triangulated", ["batch.size=8"])
    with pytest.raises(ConfigError, match="one of 2, 4"):
        load_config("baseline", ["batch.unlabelled_views=3"])
    assert load_config("metric_adv", ["train.steps=7"])["train"]["steps"] == 7
    assert load_config("metric", ["train.lr=3e-4"])["train"]["lr"] == 3e-4


def test_nonfinite_loss_stops_with_a_clear_message(tiny_studio, tmp_path):
    config = config_for(
        tiny_studio,
        "baseline",
        "train.steps=3",
        "train.val_every=3",
        "train.lr=1e30",
        "train.grad_clip=0.0",
    )
    with pytest.raises(NonFiniteLossError, match=r"step \d+: loss term 'pose'.*seq \d+:frame \d+"):
        train(config, tmp_path / "run", progress=False)


def _last_step(path):
    try:
        return int(safe_load(path)["global_step"])
    except (FileNotFoundError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_repeated_kills_at_random_points_end_like_an_uninterrupted_run(tiny_studio, tmp_path):
    """SIGKILL three times at seeded random moments (checkpoints and validation every 3 steps,
    so kills land mid-step, mid-validation and mid-write), plant the temporary file a kill
    during a checkpoint write leaves, resume each time: the weights and the test MPJPE equal an
    uninterrupted run's. Batches, augmentation and dropout are functions of (seed, step), so
    the only tolerance needed is float summation order (none observed: 1e-5)."""
    args = [f"data.root={tiny_studio}", "data.train_subjects=[S1,S5]", "data.test_subjects=[S9]", *TINY,
            "train.steps=60", "train.val_every=3"]  # fmt: skip
    command = [sys.executable, "-m", "metricpose.cli", "train", "--config", "metric_adv", "--no-progress",
               *[a for s in args for a in ("--set", s)]]  # fmt: skip
    subprocess.run([*command, "--out", str(tmp_path / "straight")], check=True, capture_output=True)

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    rng = np.random.default_rng(0)
    steps_at_kill = []
    for attempt in range(3):
        resume = ["--resume"] if attempt else []
        proc = subprocess.Popen([*command, "--out", str(killed), *resume],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        target = max(_last_step(last), 0) + int(rng.integers(3, 7))
        deadline = time.time() + 120
        while _last_step(last) < target and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.1)))  # a few steps at most: lands anywhere in them
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        steps_at_kill.append(_last_step(last))
        safe_load(last)  # whatever the moment of the kill, the file under the final name is whole
    assert 0 < steps_at_kill[-1] < 60, f"the runs were not interrupted mid-way: {steps_at_kill}"
    (last.parent / ".last.ckpt.tmp-99999").write_bytes(b"half a checkpoint")
    subprocess.run([*command, "--out", str(killed), "--resume"], check=True, capture_output=True)
    assert not list(last.parent.glob(".*.tmp-*"))  # the killed writers' temporaries are gone
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]

    a, _ = load_model(tmp_path / "straight" / "model.pt")
    b, _ = load_model(killed / "model.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)
    test = MultiViewDataset(tiny_studio, subjects=["S9"], num_views=1)
    errors = [score(predict_dataset(m, test, frame_stride=4))["overall"]["mpjpe"] for m in (a, b)]
    assert abs(errors[0] - errors[1]) < 0.01


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_training_after_the_step_with_a_checkpoint(
    tiny_studio, tmp_path, signal_number
):
    """SIGTERM/SIGINT (a scheduler's stop, Ctrl+C) between checkpoints: the step under way ends,
    last.ckpt is written at it, the exit is the shell's 128 + signal with one line, and --resume
    finishes the run where it stopped."""
    args = [f"data.root={tiny_studio}", "data.train_subjects=[S1,S5]", "data.test_subjects=[S9]", *TINY,
            "train.steps=200", "train.val_every=200"]  # fmt: skip
    command = [sys.executable, "-m", "metricpose.cli", "train", "--config", "baseline", "--no-progress",
               "--out", str(tmp_path / "run"), *[a for s in args for a in ("--set", s)]]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "logs" / "metrics.csv"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the CSV logger writes its first rows after a few steps
    proc.send_signal(signal_number)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr
    step = _last_step(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert 0 < step < 200
    assert f"stopped by {signal.Signals(signal_number).name} after step {step}" in stderr
    assert not (tmp_path / "run" / "model.pt").exists()  # an interrupted run is not a model
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trained 200 steps" in done.stdout


class _SignalAfterBatchEnd(L.Callback):
    """Sends a signal to this process after StopOnSignal's batch-end check of step `at`."""

    def __init__(self, signal_number: int, at: int) -> None:
        self.signal_number, self.at = signal_number, at

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.at:
            signal.raise_signal(self.signal_number)


class _Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_the_batch_end_check_still_stops_with_a_checkpoint(tmp_path, signal_number):
    """A signal landing between StopOnSignal's batch-end check and Lightning's loop boundary:
    Lightning's own SIGTERM handler would end fit there with SystemExit(0) and no checkpoint
    (seen in CI as exit 0). StopOnSignal owns the signals during fit, so the next step ends the
    run with last.ckpt at it."""
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    last = tmp_path / "last.ckpt"
    stop = StopOnSignal(last)
    trainer = L.Trainer(
        max_steps=20, callbacks=[stop, _SignalAfterBatchEnd(signal_number, at=3)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    stop.install()
    try:
        with pytest.raises(TrainingInterrupted) as stopped:
            trainer.fit(_Regression(), torch.utils.data.DataLoader(data, batch_size=8))
    finally:
        stop.restore()
    assert (stopped.value.signal_number, stopped.value.step) == (signal_number, 4)
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert signal.getsignal(signal.SIGTERM) is not stop._handle  # the caller's handlers are back


class _TwoViewRegression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        return self.layer(batch["images"]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _HoldEachStep(L.Callback):
    def on_train_batch_end(self, *args) -> None:
        time.sleep(0.25)


def test_the_step_clock_counts_every_view_from_the_first_step_to_the_last():
    """4 steps of 4 instants x 2 views, each step held 0.25 s: at most 32 images/s, and close
    to it (counting instants instead of images would halve it)."""
    items = [{"images": torch.randn(2, 4)} for _ in range(16)]
    clock = StepClock()
    trainer = L.Trainer(
        max_steps=4, callbacks=[_HoldEachStep(), clock], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(_TwoViewRegression(), torch.utils.data.DataLoader(items, batch_size=4))
    assert clock.images == 32
    assert 24 < clock.images_per_second <= 32


def test_the_interruption_crosses_process_boundaries():
    """The demo trains in a process pool: the exception must unpickle in the parent (a custom
    __init__ alone makes the pool's result thread fail and the demo hang)."""
    stop = TrainingInterrupted(signal.SIGTERM, 17, Path("run/checkpoints/last.ckpt"))
    again = pickle.loads(pickle.dumps(stop))
    assert (again.signal_number, again.step, str(again)) == (signal.SIGTERM, 17, str(stop))


def test_resume_from_a_corrupt_checkpoint_names_it(tiny_studio, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    config = config_for(tiny_studio, "baseline", "train.steps=2")
    with pytest.raises(InputError, match="last.ckpt: corrupt or truncated checkpoint"):
        train(config, out, resume=True, progress=False)


def test_ddp_processes_share_out_the_single_process_batch():
    from metricpose.data.sampler import MixedBatchSampler

    n = 200
    labelled, subject, cameras = np.arange(n) < 50, np.arange(n) % 4, np.full(n, 4)
    single = MixedBatchSampler(labelled, subject, cameras, 16, 0.5, 100, 0).batch(7)
    shares = [MixedBatchSampler(labelled, subject, cameras, 8, 0.5, 100, 0, rank=r, world_size=2).batch(7)
              for r in (0, 1)]  # fmt: skip
    assert shares[0] != shares[1]
    assert shares[0] == single[0::2] and shares[1] == single[1::2]  # the same global batch
    assert shares[0] == MixedBatchSampler(labelled, subject, cameras, 8, 0.5, 100, 0, rank=0,
                                          world_size=2).batch(7)  # a function of (seed, step)  # fmt: skip
    for share in shares:
        assert all(k.index < 50 for k in share[:4])  # each process gets its labelled half
        assert all(k.views[0] != k.views[1] for k in share)
    assert len({int(k.index % 4) for share in shares for k in share[4:]}) == 1  # one subject


@pytest.mark.slow
def test_two_ddp_processes_train_like_one_with_the_global_batch(tiny_studio, tmp_path):
    """torchrun with 2 gloo processes × 8 instants against 1 process × 16: same instants,
    augmentation and negatives, so the same weights. Dropout is off (its masks are drawn per
    process) and BatchNorm keeps running statistics (CPU has no SyncBatchNorm; on GPUs
    Lightning's sync_batchnorm normalises over the global batch instead). Both in fp32: bf16's
    rounding (train.precision=auto on CPUs that compute it) is larger than the order of the sums."""
    common = [f"data.root={tiny_studio}", "data.train_subjects=[S1,S5]", "data.test_subjects=[S9]", "train.precision=32-true",
              "train.val_frames=8", "model.regressor_width=64", "model.width=0.25", "model.dropout=0.0",
              "model.norm_eval=true", "train.steps=4", "train.val_every=4", "train.accelerator=cpu",
              # a labelled share that splits evenly: 4 per process, 8 of 16 in one process
              "batch.labelled_fraction=0.5"]  # fmt: skip
    cli = ["-m", "metricpose.cli", "train", "--config", "metric_adv", "--no-progress"]
    ddp = [*common, "batch.size=8", "train.devices=2"]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29543",
                    *cli, "--out", str(tmp_path / "ddp"), *[a for s in ddp for a in ("--set", s)]],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    one = [*common, "batch.size=16"]
    subprocess.run([sys.executable, *cli, "--out", str(tmp_path / "one"), *[a for s in one for a in ("--set", s)]],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    a, _ = load_model(tmp_path / "ddp" / "model.pt")
    b, _ = load_model(tmp_path / "one" / "model.pt")
    fresh = build_model(
        load_config("metric_adv", ["model.regressor_width=64", "model.width=0.25"]),
        pretrained=False,
    )
    # Per tensor, the two runs' difference must be tiny against what training changed. Exact
    # equality is not to be had: float sums run in another order across processes, and Adam
    # turns that noise into lr-sized steps where a gradient is near zero.
    ratios = {}
    for name, x in fresh.state_dict().items():
        if x.is_floating_point() and "running" not in name and "pose_" not in name:
            moved = (a.state_dict()[name] - x).norm()
            if moved > 0:
                ratios[name] = float((a.state_dict()[name] - b.state_dict()[name]).norm() / moved)
    worst = max(ratios, key=ratios.get)
    print(f"worst tensor {worst}: difference / update = {ratios[worst]:.2e}")
    assert ratios[worst] < 0.05, (worst, ratios[worst])


@pytest.mark.slow
def test_ddp_two_cpu_processes_share_negatives(tiny_studio, tmp_path):
    """torchrun starts two gloo processes; the metric loss's pool of negatives holds both
    processes' instants (2 x batch)."""
    args = [f"data.root={tiny_studio}", "data.train_subjects=[S1,S5]", "data.test_subjects=[S9]", *TINY,
            "train.steps=4", "train.val_every=2", "train.devices=2", "train.accelerator=cpu"]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
               "-m", "metricpose.cli", "train", "--config", "metric", "--no-progress", "--out", str(tmp_path / "ddp"),
               *[a for s in args for a in ("--set", s)]]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    rows = (tmp_path / "ddp" / "logs" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train/negative_pool")
    pools = {float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]}
    assert pools == {16.0}  # batch.size 8 on each of 2 processes
    assert (tmp_path / "ddp" / "model.pt").exists()


def test_four_views_per_unlabelled_instant_stay_together_on_one_process():
    """batch.unlabelled_views=4: each unlabelled instant fills two slots with two disjoint
    camera pairs (four distinct cameras), and under DDP both slots go to the same process;
    the labelled part draws the same instants as with two views."""
    from metricpose.data.sampler import MixedBatchSampler

    n = 200
    labelled, subject, cameras = np.arange(n) < 50, np.arange(n) % 4, np.full(n, 4)
    two = MixedBatchSampler(labelled, subject, cameras, 16, 0.5, 100, 0).batch(7)
    four = MixedBatchSampler(labelled, subject, cameras, 16, 0.5, 100, 0, unlabelled_views=4).batch(
        7
    )
    assert len(four) == 16 and [k.index for k in four[:8]] == [k.index for k in two[:8]]
    unlabelled = four[8:]
    for first, second in zip(unlabelled[0::2], unlabelled[1::2], strict=True):
        assert first.index == second.index
        assert sorted(first.views + second.views) == [0, 1, 2, 3]
    shares = [MixedBatchSampler(labelled, subject, cameras, 8, 0.5, 100, 0, rank=r, world_size=2,
                                unlabelled_views=4).batch(7) for r in (0, 1)]  # fmt: skip
    for share in shares:  # 4 labelled slots, then 2 unlabelled instants in adjacent slot pairs
        assert len(share) == 8
        assert all(a.index == b.index for a, b in zip(share[4::2], share[5::2], strict=True))
    assert sorted((k.index, k.views) for k in shares[0] + shares[1]) == sorted(
        (k.index, k.views) for k in four
    )


def test_same_seed_same_weights(tiny_studio, tmp_path):
    config = config_for(tiny_studio, "metric_adv", "train.steps=5", "train.val_every=5")
    a = train(config, tmp_path / "a", progress=False)
    b = train(config, tmp_path / "b", progress=False)
    assert a["steps"] == b["steps"] == 5
    wa, _ = load_model(tmp_path / "a" / "model.pt")
    wb, _ = load_model(tmp_path / "b" / "model.pt")
    for (name, x), y in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    other = train(
        config_for(tiny_studio, "metric_adv", "train.steps=5", "train.val_every=5", "seed=1"),
        tmp_path / "c",
        progress=False,
    )
    wc, _ = load_model(tmp_path / "c" / "model.pt")
    assert other["steps"] == 5 and not torch.equal(wa.embed.weight, wc.embed.weight)


def test_training_refuses_a_nearly_full_disk(tiny_studio, tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(
        "metricpose.fileio.shutil.disk_usage", lambda p: usage(10**9, 10**9, 50 * 2**20)
    )
    with pytest.raises(OSError, match="run: only 50 MB free; training needs about 200 MB"):
        train(
            config_for(tiny_studio, "baseline", "train.steps=2"), tmp_path / "run", progress=False
        )


def test_training_can_start_from_another_run_s_weights(tiny_studio, tmp_path):
    """train.init_weights: the network starts as the given model (weights and pose
    statistics), so with a vanishing learning rate it ends where that model was; another
    network shape is refused naming the file."""
    first = tmp_path / "first" / "model.pt"
    train(config_for(tiny_studio, "baseline", "train.steps=4", "train.val_every=4"),
          first.parent, progress=False)  # fmt: skip
    config = config_for(tiny_studio, "baseline", "train.steps=2", "train.val_every=2",
                        "train.lr=1e-12", "data.labels=all", f"train.init_weights={first}")  # fmt: skip
    train(config, tmp_path / "second", progress=False)
    start, _ = load_model(first)
    end, _ = load_model(tmp_path / "second" / "model.pt")
    for (name, a), b in zip(start.state_dict().items(), end.state_dict().values(), strict=True):
        if "running_" not in name and "num_batches" not in name:  # BatchNorm keeps counting
            assert torch.allclose(a, b, atol=1e-6), name
    wider = config_for(tiny_studio, "baseline", "train.steps=2", "model.regressor_width=32",
                       f"train.init_weights={first}")  # fmt: skip
    with pytest.raises(
        InputError, match=f"{first}: train.init_weights holds a network of another shape"
    ):
        train(wider, tmp_path / "third", progress=False)


def test_mixed_precision_trains_with_gradient_clipping(tiny_studio, tmp_path):
    # Lightning refuses to clip the gradients of a fused optimiser under any mixed precision:
    # bf16-mixed (fused, clipped by the module) and the GPU's 16-mixed must still train.
    config = config_for(
        tiny_studio, "metric", "train.steps=3", "train.val_every=3", "train.precision=bf16-mixed"
    )
    assert config["train"]["grad_clip"] > 0
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 3
    model, _ = load_model(tmp_path / "run" / "model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("precision", "fused"), [("32-true", True), ("bf16-mixed", True), ("16-mixed", False)]
)
def test_the_optimiser_is_fused_unless_fp16_scales_the_loss_and_clipping_bounds_the_norm(
    precision, fused
):
    config = load_config(
        "baseline", [*TINY, "train.accelerator=cpu", f"train.precision={precision}"]
    )
    module = PoseModule(config, num_subjects=2)
    optimiser = module.configure_optimizers()["optimizer"]
    assert optimiser.defaults["fused"] is fused
    for i, p in enumerate(module.parameters()):
        p.grad = torch.full_like(p, float(i + 1))
    module.configure_gradient_clipping(optimiser, gradient_clip_val=2.5)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()]))
    assert norm == pytest.approx(2.5, rel=1e-4)


def test_training_values_are_logged_on_the_steps_the_loggers_write(tiny_studio, tmp_path):
    # Logged only every train.log_every steps (logging costs ~4% of a step): those steps'
    # own values, as a run logging every step records them.
    logged = {}
    for every in (1, 3):
        config = config_for(
            tiny_studio, "metric", "train.steps=6", "train.val_every=6", f"train.log_every={every}"
        )
        train(config, tmp_path / f"every{every}", progress=False)
        rows = csv.DictReader((tmp_path / f"every{every}" / "logs" / "metrics.csv").open())
        logged[every] = {
            (int(r["step"]), key): float(r[key])
            for r in rows
            for key in ("train/loss", "train/pose", "train/metric")
            if r.get(key)
        }
    assert sorted({step for step, _ in logged[3]}) == [2, 5]
    assert logged[3] == {k: v for k, v in logged[1].items() if k[0] in (2, 5)}


@pytest.mark.parametrize("bf16_hardware", [True, False])
def test_auto_precision_is_bf16_only_on_cpus_that_compute_it(monkeypatch, bf16_hardware):
    monkeypatch.setattr("metricpose.train.cpu_has_fast_bf16", lambda: bf16_hardware)
    cpu = load_config("baseline", ["train.accelerator=cpu"])
    assert _trainer_options(cpu)["precision"] == ("bf16-mixed" if bf16_hardware else "32-true")
    gpu = load_config("baseline", ["train.accelerator=gpu"])
    assert _trainer_options(gpu)["precision"] == "16-mixed"
    chosen = load_config("baseline", ["train.accelerator=cpu", "train.precision=32-true"])
    assert _trainer_options(chosen)["precision"] == "32-true"
