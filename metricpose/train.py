"""Semi-supervised training with Lightning (``metricpose train``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from metricpose.checkpoint import AtomicCheckpointIO, build_model, load_model, safe_load, save_model
from metricpose.config import parse_labels
from metricpose.data.dataset import FrameKey, MultiViewDataset
from metricpose.data.sampler import MixedBatchSampler
from metricpose.errors import InputError, TrainingInterrupted
from metricpose.fileio import (
    atomic_write_text,
    check_free_space,
    check_output_folder,
    no_empty_output_on_failure,
    remove_stale_temporaries,
)
from metricpose.losses import (
    IdentityAdversary,
    adversary_coefficient,
    bone_length_loss,
    calibrated_metric_loss,
    ddp_share,
    multiview_metric_loss,
    pose_loss,
    triangulation_loss,
)
from metricpose.pseudo_labels import apply_pseudo_labels
from metricpose.skeleton import mirror_pose


class NonFiniteLossError(InputError):
    """A loss term became NaN or Inf; the message names the step, the term and the batch."""


class StopOnSignal(Callback):
    """Ends training cleanly on SIGTERM/SIGINT: the step under way finishes, last.ckpt is written
    at it (atomically) and TrainingInterrupted is raised. A second signal stops at once."""

    def __init__(self, last_checkpoint: Path) -> None:
        self.last_checkpoint = last_checkpoint
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signal_number: int, frame: Any) -> None:
        if self.received is not None:  # asked twice: do not wait for the step
            self.restore()
            raise KeyboardInterrupt
        self.received = signal_number

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python only delivers signals to the main thread
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        # fit() puts Lightning's SIGTERM handler in front of ours; it ends fit at its next loop
        # boundary with SystemExit(0) and no checkpoint at the step. Ours takes the signals back
        # for the run; Lightning's teardown reinstates what it found (ours), restore() the rest.
        for number in self._previous:
            signal.signal(number, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.received is None:
            return
        trainer.save_checkpoint(self.last_checkpoint)
        raise TrainingInterrupted(self.received, trainer.global_step, self.last_checkpoint)


class StepClock(Callback):
    """Training throughput as a run gets it: images per second from the start of its first step
    to the end of its last, with the data loading, logging and validation between them (the
    figure that decides how many steps fit into a time budget; bench/README.md)."""

    def __init__(self) -> None:
        self.began: float | None = None
        self.ended: float | None = None
        self.images = 0

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, *args: Any) -> None:
        if self.began is None:
            self.began = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self.images += batch["images"].shape[0] * batch["images"].shape[1]  # instants x views
        self.ended = time.perf_counter()

    @property
    def images_per_second(self) -> float | None:
        if self.began is None or self.ended is None or self.ended <= self.began:
            return None
        return self.images / (self.ended - self.began)


def labelled_instants(
    dataset: MultiViewDataset, spec: str, train_subjects: list[str], seed: int
) -> np.ndarray:
    """(N,) bool: instants whose 3D labels the protocol lets training use.

    ``S1`` / ``S1,S5``: every labelled instant of those subjects. ``fraction:f``: a seeded
    random share f of every labelled sequence's instants (so labels spread over sequences).
    """
    kind, value = parse_labels(spec, train_subjects)
    has_label = dataset.labelled.copy()
    if kind == "subjects":
        allowed = np.isin(np.array(dataset.subjects)[dataset.subject_index], value)
        return has_label & allowed
    rng = np.random.default_rng([seed, 7])
    chosen = np.zeros(len(dataset), dtype=bool)
    for seq in np.unique(dataset.seq_index):
        idx = np.flatnonzero((dataset.seq_index == seq) & has_label)
        if len(idx):
            chosen[rng.choice(idx, size=max(1, int(round(value * len(idx)))), replace=False)] = True
    return chosen


def supervised_instants(
    dataset: MultiViewDataset, data: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool instants whose 3D label training uses — the true labels ``data.labels``
    grants, less the validation takes, plus the instants ``data.pseudo_labels`` labels — and
    the validation instants (whole held-out takes with true labels)."""
    labelled = labelled_instants(dataset, data["labels"], data["train_subjects"], seed)
    supervised, val_pool = hold_out_sequences(dataset, labelled, seed)
    if data["pseudo_labels"]:
        supervised |= apply_pseudo_labels(
            dataset, Path(data["pseudo_labels"]), labelled, data["pseudo_labels_keep"]
        )
    return supervised, val_pool


#: Bytes a training step holds per input float (saved activations and their gradients of the
#: ResNet and heads, measured roughly at 64 px: a 64-image step peaks ~0.3 GB above idle).
_STEP_BYTES_PER_INPUT_FLOAT = 400


def training_disk_mb(module: torch.nn.Module) -> float:
    """MB a run writes at most at once: last.ckpt, best.ckpt and one temporary (weights and
    AdamW's two moments each), model.pt, and logs."""
    weights_mb = sum(p.numel() * p.element_size() for p in module.state_dict().values()) / 2**20
    return (3 * 3 + 1) * weights_mb + 20


def check_batch_memory(batch_size: int, crop_size: int) -> None:
    """Refuse a batch whose training step cannot fit in the memory available now, before
    anything starts (a too-large batch otherwise grows until the kernel kills the process)."""
    needed = batch_size * 2 * crop_size**2 * 3 * _STEP_BYTES_PER_INPUT_FLOAT
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every system reports it
        return
    if needed > 0.8 * available:
        raise InputError(
            f"'batch.size' {batch_size} ({2 * batch_size} crops of {crop_size} px per step) needs "
            f"about {needed / 2**30:.1f} GB; {available / 2**30:.1f} GB of memory is available"
        )


#: Options a resumed run may change: they decide how it runs, not what it computes.
RESUME_SAFE_KEYS = ("train.threads", "data.num_workers", "train.log_every", "data.root")


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumed_config(saved_file: Path, config: dict[str, Any]) -> None:
    """Refuse to resume with another configuration than the run was started with: the saved
    config.yaml and model.pt would then describe a run that never happened."""
    if not saved_file.exists():
        return
    try:
        saved = yaml.safe_load(saved_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{saved_file}: unreadable saved config ({exc})") from None
    before, now = _flatten(saved or {}), _flatten(config)
    changed = sorted(
        k
        for k in before.keys() | now.keys()
        if before.get(k) != now.get(k) and k not in RESUME_SAFE_KEYS
    )
    if changed:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        why = (
            " (train.steps cannot grow: the one-cycle learning rate was laid out for the first "
            "count and has annealed by its end; a longer run is a new run)"
            if "train.steps" in changed
            else ""
        )
        raise InputError(
            f"{saved_file}: --resume with a different configuration ({details}){why}; resume with "
            "the options the run was started with, or train into a new --out"
        )


def lock_output_folder(out: Path) -> Any:
    """Take ``out/.lock`` for this training (the first DDP process only); a second training
    into the same folder gets an error naming the holder instead of mixing the two runs' files.
    The lock is an OS file lock, so a killed run leaves none behind. Returns the open file."""
    import fcntl

    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) != 0:
        return None
    handle = open(out / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(
            f"{out}: another training is writing to this folder ({holder}); wait for it to "
            "finish or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    return handle


def hold_out_sequences(
    dataset: MultiViewDataset, labelled: np.ndarray, seed: int, share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Split the labelled instants into training and validation by whole sequences (takes).

    Validation on neighbouring frames of training takes measures memory, not generalisation
    (near-duplicates score 45-60 mm where new takes score 150+), so a seeded ``share`` of the
    labelled sequences (at least one, never all) is held out whole. With a single labelled
    sequence its last ``share`` of labelled frames is held out instead.

    Returns:
        (N,) bool, the instants the 3D loss may use, and the validation instants' indices.
    """
    sequences = np.unique(dataset.seq_index[labelled])
    held = np.zeros(len(dataset), dtype=bool)
    if len(sequences) >= 2:
        rng = np.random.default_rng([seed, 13])
        count = min(len(sequences) - 1, max(1, int(round(share * len(sequences)))))
        held = np.isin(dataset.seq_index, rng.choice(sequences, size=count, replace=False))
    elif len(sequences) == 1:
        index = np.flatnonzero(labelled)
        held[index[len(index) - max(1, int(round(share * len(index)))) :]] = True
    held &= labelled
    return labelled & ~held, np.flatnonzero(held)


def shard_rows(local: int, world_size: int, rank: int, per_instant: int = 1) -> torch.Tensor:
    """Positions in the global batch of this process's rows: its instants are every
    ``world_size``-th one, from ``rank`` (see MixedBatchSampler); each has ``per_instant`` rows."""
    instants = torch.arange(local) * world_size + rank
    return (instants[:, None] * per_instant + torch.arange(per_instant)).flatten()


def colour_augment(
    images: torch.Tensor,
    generator: torch.Generator,
    rows: torch.Tensor | None = None,
    total: int = 0,
) -> torch.Tensor:
    """Random channel order and per-channel gains (0.6-1.4) per image, so that clothing
    colour cannot identify a person. (B, S, S, 3) 0-255 -> float (B, S, S, 3).

    Under DDP the random draws are made for the ``total`` images of the global batch and
    ``rows`` picks this process's: an image is augmented alike however many processes run."""
    B = images.shape[0]
    rows = torch.arange(B) if rows is None else rows
    total = max(total, B)
    perm = torch.argsort(torch.rand(total, 3, generator=generator), dim=1)[rows].to(images.device)
    gains = (0.6 + 0.8 * torch.rand(total, 1, 1, 3, generator=generator))[rows].to(images.device)
    shuffled = torch.gather(
        images.float(), 3, perm[:, None, None, :].expand(-1, *images.shape[1:3], -1)
    )
    return (shuffled * gains).clamp(0, 255)


def mirror_instants(batch: dict[str, torch.Tensor], flip: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mirror whole instants (every view of the chosen ones): images flipped left-right, poses
    mirrored in the camera's x axis with left and right joints swapped. A mirrored instant is
    still a valid multi-view pair, of a mirrored world; the camera rotations are not mirrored,
    so this must not be combined with the losses that use them (the config refuses it).

    flip: (B,) bool.
    """
    out = dict(batch)
    f_img = flip[:, None, None, None, None]
    out["images"] = torch.where(f_img, batch["images"].flip(3), batch["images"])
    mirrored = mirror_pose(batch["pose_cam"])
    out["pose_cam"] = torch.where(flip[:, None, None, None], mirrored, batch["pose_cam"])
    return out


class StepBatches(IterableDataset):
    """Collated batches of the sampler's remaining steps, in step order. With DataLoader
    workers, worker w builds steps w, w + W, ...; the loader returns them round-robin, which
    is step order again."""

    def __init__(self, sampler: MixedBatchSampler, collate) -> None:
        self.sampler, self.collate = sampler, collate

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.sampler.start_step + worker, self.sampler.steps, workers):
            yield self.collate(self.sampler.batch(step))


#: The config weight (``loss.<name>``) of each loss term ``PoseModule._loss_terms`` returns.
_WEIGHT_OF_TERM = {
    "pose": "pose_weight",
    "metric": "metric_weight",
    "calibrated": "calibrated_weight",
    "triangulation": "triangulation_weight",
    "bones": "bone_weight",
    "adversarial": "adversarial_weight",
}


def _nonfinite_term(
    terms: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], step: int
) -> str | None:
    """A message naming the first NaN or infinite loss term and the batch's first instants,
    or None when every term is finite."""
    for name, value in terms.items():
        if not torch.isfinite(value):
            ids = ", ".join(
                f"seq {s}:frame {f}"
                for s, f in zip(
                    batch["sequence"].tolist()[:8], batch["frame"].tolist()[:8], strict=True
                )
            )
            return f"step {step}: loss term '{name}' is {value.item()} (batch instants: {ids}, ...)"
    return None


class PoseModule(L.LightningModule):
    """The network, its losses and its optimiser."""

    def __init__(
        self, config: dict[str, Any], num_subjects: int, supervised: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters("config", "num_subjects")
        self.config = config
        self.model = build_model(config)
        loss = config["loss"]
        self.adversary = (
            IdentityAdversary(config["model"]["embedding_dim"], num_subjects)
            if loss["adversarial_weight"] > 0
            else None
        )
        # Which instants may use their 3D label (the protocol), by dataset index.
        self.register_buffer(
            "supervised",
            torch.as_tensor(supervised if supervised is not None else np.zeros(0, bool)),
            persistent=False,
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Seed every step from (seed, step): dropout and augmentation are then the same in a
        # resumed run as in an uninterrupted one.
        torch.manual_seed(self.config["seed"] * 1_000_003 + self.global_step)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        images, batch = self._augmented(batch)
        out = self.model(images)
        terms = self._loss_terms(out, batch, crop_size=images.shape[1])
        problem = _nonfinite_term(terms, batch, self.global_step)
        if problem is not None:
            if self.config["train"]["nonfinite"] == "skip":
                self.print(f"skipping batch: {problem}")
                return None
            raise NonFiniteLossError(
                problem
                + "; the weights were not updated. Set train.nonfinite=skip to skip such batches."
            )
        loss = self.config["loss"]
        total = sum(loss[_WEIGHT_OF_TERM[name]] * value for name, value in terms.items())
        B = batch["images"].shape[0]
        self._log_step({f"train/{k}": v for k, v in terms.items()}, B, prog_bar=True)
        self._log_step({"train/loss": total}, B)
        return total

    def _log_step(
        self, values: dict[str, torch.Tensor], batch_size: int, prog_bar: bool = False
    ) -> None:
        """Log a step's values on the steps whose values the loggers write (every
        train.log_every): Lightning's logging costs ~1 ms a call, two to four calls a step,
        ~4% of a demo step (docs/design.md, fifteenth round)."""
        if (self.global_step + 1) % self.config["train"]["log_every"] == 0:
            self.log_dict(values, on_step=True, prog_bar=prog_bar, batch_size=batch_size)

    def _augmented(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's crops as the network sees them, (2B, S, S, 3) instant-major with the
        views inner, mirrored and recoloured as ``augment`` says, and the batch with its poses
        mirrored alike. The draws depend on the seed and step only (alike under DDP)."""
        B = batch["images"].shape[0]
        g = torch.Generator().manual_seed(self.config["seed"] * 7919 + self.global_step)
        W, rank = self.trainer.world_size if self._trainer else 1, self.global_rank
        if self.config["augment"]["flip"]:
            flip = torch.rand(B * W, generator=g)[shard_rows(B, W, rank)] < 0.5
            batch = mirror_instants(batch, flip.to(self.device))
        images = batch["images"].flatten(0, 1)
        if self.config["augment"]["colour"]:
            images = colour_augment(images, g, shard_rows(B, W, rank, 2), 2 * B * W)
        return images, batch

    def _loss_terms(
        self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], crop_size: int
    ) -> dict[str, torch.Tensor]:
        """Every loss term the config weighs above zero, unweighted (``_WEIGHT_OF_TERM``
        names each one's weight); the metric losses' diagnostics are logged here."""
        cfg = self.config["loss"]
        B = batch["images"].shape[0]
        terms: dict[str, torch.Tensor] = {}
        # The 3D loss is taken in metres so that its size is comparable with the metric loss
        # (distances on the unit sphere); in millimetres it would drown the other terms.
        sup = self.supervised[batch["index"]].repeat_interleave(2)
        gt = batch["pose_cam"].flatten(0, 1)[sup] / 1000
        # Processes may hold different numbers of labelled rows (the unlabelled part can be
        # a labelled subject's): weigh each process's mean by its share.
        terms["pose"] = pose_loss(out["pose_cam"][sup] / 1000, gt, cfg["pose"]) * ddp_share(
            sup.sum(), self.device
        )
        emb = out["embedding"].view(B, 2, -1)
        if cfg["metric_weight"] > 0:
            terms["metric"], stats = multiview_metric_loss(
                emb[:, 0], emb[:, 1], batch["sequence"], batch["frame"], batch["subject"],
                time_window=cfg["time_window"], kind=cfg["metric"],
                temperature=cfg["temperature"], margin=cfg["margin"],
            )  # fmt: skip
            self._log_step({f"train/{k}": v for k, v in stats.items()}, B)
        pose = out["pose_cam"].view(B, 2, *out["pose_cam"].shape[1:]) / 1000  # (B, views, 17, 3) m
        R = batch["R"]
        if cfg["calibrated_weight"] > 0:
            terms["calibrated"], stats = calibrated_metric_loss(
                pose[:, 0], pose[:, 1], R[:, 0], R[:, 1],
                batch["sequence"], batch["frame"], batch["subject"],
                temperature=cfg["calibrated_temperature_mm"] / 1000, time_window=cfg["time_window"],
            )  # fmt: skip
            self._log_step({f"train/{k}": v for k, v in stats.items()}, B)
        if cfg["triangulation_weight"] > 0 and self.global_step >= cfg["triangulation_start_step"]:
            terms["triangulation"] = triangulation_loss(
                pose.flatten(0, 1), batch["K"].flatten(0, 1), R.flatten(0, 1),
                batch["t"].flatten(0, 1) / 1000, batch["index"].repeat_interleave(2), crop_size,
            )  # fmt: skip
        if cfg["bone_weight"] > 0:
            terms["bones"] = bone_length_loss(
                pose.flatten(0, 1), batch["subject"].repeat_interleave(2)
            )
        if self.adversary is not None:
            coefficient = adversary_coefficient(self.global_step, cfg["adversarial_warmup_steps"])
            terms["adversarial"], accuracy = self.adversary(
                out["embedding"], batch["subject"].repeat_interleave(2), coefficient
            )
            self._log_step({"train/identity_acc": accuracy}, B)
        return terms

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning's own clipping refuses any fused optimiser under mixed precision, bf16's
        # too, where no loss scaling is involved; under fp16 the gradients arrive unscaled
        # here because that optimiser is not fused (configure_optimizers).
        if gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.model(batch["images"].flatten(0, 1))
        err = torch.linalg.norm(out["pose_cam"] - batch["pose_cam"].flatten(0, 1), dim=-1).mean()
        self.log(
            "val/mpjpe", err, batch_size=batch["images"].shape[0], prog_bar=True, sync_dist=True
        )

    def configure_optimizers(self):
        t = self.config["train"]
        # The fused kernel takes ~1 ms of a demo step where the unfused one takes ~6 (bench/
        # README.md). With fp16's loss scaling a fused optimiser unscales the gradients inside
        # its step, after the clipping (configure_gradient_clipping), so fp16 keeps the unfused.
        fused = not _trainer_options(self.config)["precision"].startswith("16")
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=t["lr"], weight_decay=t["weight_decay"], fused=fused
        )
        scheduler = one_cycle(optimizer, t["lr"], t["steps"])
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def one_cycle(
    optimizer: torch.optim.Optimizer, lr: float, steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle schedule with a 5% warm-up. OneCycleLR divides by (warm-up share · steps − 1),
    zero for exactly one warm-up step (e.g. 20 steps): then the warm-up is shortened to none."""
    share = 0.05 if abs(0.05 * steps - 1) > 1e-9 else 0.5 / steps
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=share, final_div_factor=20
    )


def _pose_statistics(
    dataset: MultiViewDataset, supervised: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (17, 3) mm of the supervised targets, over all their camera views."""
    poses = [
        dataset.sequences[dataset.seq_index[i]].poses_camera(int(dataset.frame_index[i]))
        for i in np.flatnonzero(supervised)
    ]
    target = torch.as_tensor(np.concatenate(poses))
    return target.mean(0).float(), target.std(0).clamp(min=1.0).float()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): there bf16 autocast
    trains the demo's network ~1.1× faster than fp32, elsewhere ~10× slower (bench/README.md)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _trainer_options(config: dict[str, Any]) -> dict[str, Any]:
    t = config["train"]
    accelerator = "gpu" if t["accelerator"] == "cuda" else t["accelerator"]
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    precision = t["precision"]
    if precision == "auto":
        precision = "16-mixed" if on_gpu else "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
    return {
        "accelerator": accelerator,
        "devices": t["devices"],
        "num_nodes": t["num_nodes"],
        "precision": precision,
        "strategy": "ddp" if t["devices"] * t["num_nodes"] > 1 else "auto",
        # Several GPUs normalise over the global batch, as one GPU would (CPU has no SyncBatchNorm).
        "sync_batchnorm": on_gpu
        and t["devices"] * t["num_nodes"] > 1
        and not config["model"]["norm_eval"],
    }


def train(
    config: dict[str, Any], out: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train as the config says; write checkpoints, logs, config.yaml and model.pt under ``out``.

    Returns a summary with the final step, the training time and the path of model.pt. A run
    that fails before writing anything leaves no empty ``out`` folder behind.
    """
    out = Path(out)
    with no_empty_output_on_failure(out, leftovers=(".lock",)):
        return _train(config, out, resume, progress)


def _train(config: dict[str, Any], out: Path, resume: bool, progress: bool) -> dict[str, Any]:
    if config["data"]["root"] is None:
        raise InputError("no dataset given: set data.root (metricpose train --data DIR)")
    check_output_folder(out)
    lock = lock_output_folder(out)  # held until this process ends (released by the OS)
    if config["train"]["threads"]:
        torch.set_num_threads(config["train"]["threads"])
    L.seed_everything(config["seed"], workers=True, verbose=False)
    data = config["data"]
    dataset = MultiViewDataset(
        data["root"], subjects=data["train_subjects"], frame_stride=data["frame_stride"]
    )
    check_batch_memory(config["batch"]["size"], dataset.sequences[0].meta.crop_size)
    supervised, val_pool = supervised_instants(dataset, data, config["seed"])
    if not supervised.any():
        raise InputError(
            f"{data['root']}: no labelled training instants for data.labels={data['labels']!r}"
        )
    start_step = _step_to_resume_from(out, config, resume)
    module = PoseModule(config, num_subjects=len(dataset.subjects), supervised=supervised)
    check_free_space(out, training_disk_mb(module), "training")
    if config["train"]["compile"]:
        # Compiles on the first step (minutes); the state_dict keeps the plain module's names.
        module.model.compile()
    if start_step == 0 and config["train"]["init_weights"]:
        _start_from_weights(module.model, Path(config["train"]["init_weights"]))
    elif start_step == 0:
        mean, std = _pose_statistics(dataset, supervised)
        module.model.pose_mean.copy_(mean)
        module.model.pose_std.copy_(std)
    options = _trainer_options(config)
    train_loader, val_loader = _loaders(config, dataset, supervised, val_pool, start_step, options)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    last = out / "checkpoints" / "last.ckpt"
    stop_on_signal, clock = StopOnSignal(last), StepClock()
    trainer = _trainer(config, out, start_step, options, [stop_on_signal, clock], progress)
    began = time.perf_counter()
    stop_on_signal.install()
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if start_step else None)
    finally:
        stop_on_signal.restore()
    summary = {
        "steps": trainer.global_step,
        "train_seconds": time.perf_counter() - began,
        "images_per_second": clock.images_per_second,  # this attempt's steps (after a resume too)
        "precision": options["precision"],
        "subjects": dataset.subjects,
        "model": str(out / "model.pt"),
    }
    if trainer.is_global_zero:
        save_model(
            out / "model.pt",
            module.model.state_dict(),
            config,
            dataset.subjects,
            trainer.global_step,
            crop_size=dataset.sequences[0].meta.crop_size,
        )
        # Written last and atomically: the demo takes its presence for a finished run.
        atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=1))
    if lock is not None:
        lock.close()
    return summary


def _start_from_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy a trained network's weights into ``model``, its pose statistics included (the
    regressor's outputs are scaled by them); the optimiser and the schedule start afresh."""
    source, _ = load_model(path)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:2]
        raise InputError(
            f"{path}: train.init_weights holds a network of another shape than model.* "
            f"configures ({' '.join(first)})"
        ) from None


def _step_to_resume_from(out: Path, config: dict[str, Any], resume: bool) -> int:
    """The step of ``out``'s last checkpoint with ``resume`` (0 without one); refuses to
    overwrite a previous run without ``resume`` or to resume it with another config."""
    ckpt_dir = out / "checkpoints"
    remove_stale_temporaries(ckpt_dir)  # a killed run's half-written checkpoint (60+ MB)
    last = ckpt_dir / "last.ckpt"
    if not last.exists():
        return 0
    if not resume:
        raise FileExistsError(
            f"{out}: holds a previous run; pass --resume to continue it or choose another --out"
        )
    check_resumed_config(out / "config.yaml", config)
    return int(safe_load(last)["global_step"])


def _loaders(
    config: dict[str, Any],
    dataset: MultiViewDataset,
    supervised: np.ndarray,
    val_pool: np.ndarray,
    start_step: int,
    options: dict[str, Any],
) -> tuple[DataLoader, DataLoader]:
    """The remaining steps' training batches (this process's share under DDP) and the
    validation instants (held-out takes of the labelled subjects, two cameras each)."""
    # Lightning launches the other DDP processes itself (or torchrun does); each must draw its
    # own batches, so the rank is read from their environment before the Trainer exists.
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    rank = int(
        os.environ.get(
            "RANK", int(os.environ.get("NODE_RANK", 0)) * options["devices"] + local_rank
        )
    )
    sampler = MixedBatchSampler(
        supervised, dataset.subject_index, dataset.num_cameras, config["batch"]["size"],
        config["batch"]["labelled_fraction"], config["train"]["steps"], config["seed"],
        start_step=start_step, rank=rank, world_size=options["devices"] * options["num_nodes"],
        unlabelled_views=config["batch"]["unlabelled_views"],
    )  # fmt: skip
    workers = config["data"]["num_workers"]
    pin = torch.cuda.is_available() and options["accelerator"] in ("auto", "gpu")
    # An iterable of the remaining steps' batches, without a length: Lightning then never ends
    # an "epoch" early and restarts it on resume; max_steps ends training.
    train_loader = DataLoader(
        StepBatches(sampler, dataset.batch),
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin,
    )
    val_rng = np.random.default_rng([config["seed"], 11])
    val_keys = [
        FrameKey(int(i), (0, min(1, int(dataset.num_cameras[i]) - 1)))
        for i in val_rng.permutation(val_pool)[: config["train"]["val_frames"]]
    ]
    val_loader = DataLoader(
        val_keys,
        batch_size=64,
        collate_fn=dataset.batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin,
    )
    return train_loader, val_loader


def _trainer(
    config: dict[str, Any],
    out: Path,
    start_step: int,
    options: dict[str, Any],
    callbacks: list[L.Callback],
    progress: bool,
) -> L.Trainer:
    """Lightning's Trainer for ``config``: checkpoints, CSV and TensorBoard logs under
    ``out``, atomic checkpoint files, no sampler of its own (ours draws every step's batch)."""
    t = config["train"]
    return L.Trainer(
        max_steps=t["steps"],
        max_epochs=-1,
        val_check_interval=min(t["val_every"], t["steps"]),
        check_val_every_n_epoch=None,
        gradient_clip_val=t["grad_clip"] or None,
        callbacks=[*_checkpoint_callbacks(out, t["val_every"]), *callbacks],
        logger=[
            # A resumed run logs beside the first attempt's CSV instead of overwriting it.
            CSVLogger(
                out, name="logs", version="" if not start_step else f"resumed-at-{start_step}"
            ),
            TensorBoardLogger(out, name="tensorboard", version=""),
        ],
        log_every_n_steps=t["log_every"],
        enable_progress_bar=progress,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        deterministic=False,
        **options,
    )


def _checkpoint_callbacks(out: Path, every: int) -> list[ModelCheckpoint]:
    """last.ckpt every ``every`` steps (what --resume continues from) and best.ckpt by the
    validation MPJPE."""
    ckpt_dir = out / "checkpoints"
    return [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            every_n_train_steps=every,
            save_last=True,
            save_top_k=0,
            auto_insert_metric_name=False,
        ),
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor="val/mpjpe",
            mode="min",
            save_top_k=1,
            # A resumed run overwrites best.ckpt when it does better (never best-v1.ckpt).
            enable_version_counter=False,
            auto_insert_metric_name=False,
        ),
    ]
