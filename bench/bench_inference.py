"""Inference throughput: eager PyTorch against the exported ONNX model in ONNX Runtime."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from metricpose.checkpoint import build_model, save_model
from metricpose.config import load_config
from metricpose.export import export


def _rate(run, batch: int, seconds: float = 2.0) -> float:
    run()  # warm-up
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        run()
        count += batch
    return count / (time.perf_counter() - began)


def inference_rates(crop: int = 64) -> dict[int, tuple[float, float]]:
    """{batch: (eager images/s, ONNX Runtime images/s)} for batch 1 and 64, default model."""
    import onnxruntime as ort

    config = load_config("metric")
    net = build_model(config, pretrained=False).eval()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_file, onnx_file = Path(tmp) / "model.pt", Path(tmp) / "m.onnx"
        save_model(model_file, net.state_dict(), config, ["S1"], 0, crop_size=crop)
        export(model_file, onnx_path=onnx_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        for batch in (1, 64):
            x = torch.rand(batch, crop, crop, 3) * 255
            xn = x.numpy()

            def eager(x=x) -> None:
                with torch.inference_mode():
                    net(x)

            def onnx(xn=xn) -> None:
                session.run(None, {"images": xn})

            rates[batch] = (_rate(eager, batch), _rate(onnx, batch))
    return rates
