"""Training step throughput of the full method against the bare backbone (same batch shape),
and the data pipeline's throughput against what the training step consumes."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from metricpose.config import load_config
from metricpose.data.dataset import MultiViewDataset
from metricpose.data.sampler import MixedBatchSampler
from metricpose.models.backbone import ResNetBackbone
from metricpose.studio.generate import generate, synth_config
from metricpose.train import PoseModule, StepBatches, labelled_instants, train


def _rate(step, batches: int, images_per_batch: int) -> float:
    step()  # warm-up
    began = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * images_per_batch / (time.perf_counter() - began)


def data_rate(sampler: MixedBatchSampler, collate, workers: int, batches: int = 40) -> float:
    """Images/s the DataLoader delivers: memory-mapped reads and collation, in ``workers``
    processes (colour augmentation runs on the batch inside the training step)."""
    loader = torch.utils.data.DataLoader(
        StepBatches(sampler, collate),
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    it = iter(loader)
    first = next(it)  # workers started
    began = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (
        batches
        * first["images"].shape[0]
        * first["images"].shape[1]
        / (time.perf_counter() - began)
    )


@contextmanager
def full_method(batch_size: int = 32) -> Iterator[tuple[PoseModule, MixedBatchSampler, Callable]]:
    """The metric_adv training module at default sizes on the tiny studio (rendered to a
    temporary folder), its batch sampler and collate function; no Trainer attached."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "studio"
        generate(data, synth_config("tiny"), progress=False)
        config = load_config(
            "metric_adv",
            # fp32 like the bare backbone it is compared with (its fused AdamW too); bf16 is
            # its own figure (bench_cpu_modes)
            [f"data.root={data}", "data.train_subjects=[S1,S5]", "data.test_subjects=[S9]",
             "train.precision=32-true"],
        )  # fmt: skip
        dataset = MultiViewDataset(data, subjects=["S1", "S5"])
        supervised = labelled_instants(dataset, "S1", ["S1", "S5"], 0)
        module = PoseModule(config, num_subjects=2, supervised=supervised)
        module.log = module.log_dict = lambda *a, **k: None
        sampler = MixedBatchSampler(
            supervised, dataset.subject_index, dataset.num_cameras, batch_size, 0.5, 10_000, 0
        )
        yield module, sampler, dataset.batch


def bare_backbone_rate(config: dict, images: int, crop: int, batches: int) -> float:
    """Images/s of the config's bare backbone: forward, backward and fused AdamW (as training
    uses) on a random channels_last batch of ``images`` crops of ``crop`` px."""
    backbone = ResNetBackbone(config["model"]["backbone"], config["model"]["width"]).to(
        memory_format=torch.channels_last
    )
    optimiser = torch.optim.AdamW(backbone.parameters(), lr=1e-3, fused=True)
    x = torch.randn(images, 3, crop, crop).contiguous(memory_format=torch.channels_last)

    def bare_step() -> None:
        loss = backbone(x).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return _rate(bare_step, batches, images)


def step_ratio(batch_size: int = 32, batches: int = 10, workers: int = 2) -> dict[str, float]:
    """Full step and bare backbone images/s at the default model size, and the data rate."""
    with full_method(batch_size) as (module, sampler, collate):
        config = module.config
        optimiser = module.configure_optimizers()["optimizer"]
        counter = iter(range(10_000))

        def full_step() -> None:
            batch = collate(sampler.batch(next(counter)))
            loss = module.training_step(batch, 0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        full = _rate(full_step, batches, 2 * batch_size)

        bare = bare_backbone_rate(config, 2 * batch_size, 64, batches)
        data = data_rate(sampler, collate, workers)  # from step 0 again: StepBatches restarts
    return {"full": full, "bare": bare, "data": data, "workers": workers}


def demo_training_rate(steps: int = 100) -> dict[str, float | str]:
    """Images/s the demo's baseline training gets as `metricpose train` runs it (the demo's
    network, crop size and batch, one torch thread as each of the demo's two lanes, validation
    inside the run), from the first step to the last; beside it the bare backbone's
    fwd+bwd+AdamW on the same batch shape. On a small studio rendered like the demo's."""
    from metricpose.demo import PRESETS as DEMO_PRESETS

    threads = torch.get_num_threads()
    crop = synth_config(DEMO_PRESETS["default"].studio).res
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "studio"
            generate(data, synth_config("tiny", res=crop, backdrop="random"), progress=False)
            config = load_config(
                "baseline",
                [
                    *DEMO_PRESETS["default"].overrides,
                    f"data.root={data}",
                    "data.train_subjects=[S1,S5]",
                    "data.test_subjects=[S9]",
                    f"train.steps={steps}",
                    f"train.val_every={steps}",
                    "train.val_frames=32",  # about the demo's share of validation per step
                    "train.threads=1",
                ],
            )
            summary = train(config, Path(tmp) / "run", progress=False)
        bare = bare_backbone_rate(config, 2 * config["batch"]["size"], crop, 10)
    finally:
        torch.set_num_threads(threads)
    return {
        "demo": summary["images_per_second"],
        "precision": summary["precision"],  # train.precision=auto's choice on this CPU
        "bare": bare,
        "crop": crop,
    }
