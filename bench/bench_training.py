"""Training step throughput of the full method against the bare backbone, same batch shape."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from metricpose.config import load_config
from metricpose.data.dataset import MultiViewDataset
from metricpose.data.sampler import MixedBatchSampler
from metricpose.models.backbone import ResNetBackbone
from metricpose.studio.generate import generate, synth_config
from metricpose.train import PoseModule, collate_keys, labelled_instants


def _rate(step, batches: int, images_per_batch: int) -> float:
    step()  # warm-up
    began = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * images_per_batch / (time.perf_counter() - began)


def step_ratio(batch_size: int = 32, batches: int = 10) -> tuple[float, float, float]:
    """(full / bare, full images/s, bare images/s) at the default model size."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "studio"
        generate(data, synth_config("tiny"), progress=False)
        config = load_config(
            "metric_adv",
            [f"data.root={data}", "data.train_subjects=[S1,S5]", "data.test_subjects=[S9]"],
        )
        dataset = MultiViewDataset(data, subjects=["S1", "S5"])
        supervised = labelled_instants(dataset, "S1", ["S1", "S5"], 0)
        module = PoseModule(config, num_subjects=2, supervised=supervised)
        optimiser = torch.optim.AdamW(module.parameters(), lr=1e-3)
        sampler = MixedBatchSampler(
            supervised, dataset.subject_index, dataset.num_cameras, batch_size, 0.5, 10_000, 0
        )
        collate = collate_keys(dataset)
        counter = iter(range(10_000))

        def full_step() -> None:
            batch = collate(sampler.batch(next(counter)))
            loss = module.training_step(batch, 0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        module.log = module.log_dict = lambda *a, **k: None  # no Trainer attached here
        full = _rate(full_step, batches, 2 * batch_size)

        backbone = ResNetBackbone(config["model"]["backbone"], config["model"]["width"]).to(
            memory_format=torch.channels_last
        )
        opt2 = torch.optim.AdamW(backbone.parameters(), lr=1e-3)
        x = torch.randn(2 * batch_size, 3, 64, 64).contiguous(memory_format=torch.channels_last)

        def bare_step() -> None:
            loss = backbone(x).square().mean()
            opt2.zero_grad()
            loss.backward()
            opt2.step()

        bare = _rate(bare_step, batches, 2 * batch_size)
    return full / bare, full, bare
