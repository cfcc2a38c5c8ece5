"""Export the image → (pose, embedding) network to ONNX and TorchScript for deployment."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from metricpose.checkpoint import load_model


class ExportedPoseNet(torch.nn.Module):
    """images (B, S, S, 3) float RGB 0-255 -> pose_cam (B, 17, 3) root-relative camera-frame
    mm and embedding (B, D) unit vectors: plain tensors, as exporters want."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(images)
        return out["pose_cam"], out["embedding"]


def _check_writable(path: Path) -> None:
    """One clear OSError naming the file before any work, instead of the exporter's traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise OSError(f"{path}: cannot write the exported model ({exc.strerror})") from None


def export(
    checkpoint: Path, onnx_path: Path | None = None, torchscript_path: Path | None = None
) -> dict[str, object]:
    """Write the ONNX (dynamic batch, opset 17) and/or TorchScript files; returns their paths
    and the crop size the model expects."""
    for target in (onnx_path, torchscript_path):
        if target is not None:
            _check_writable(Path(target))
    network, _ = load_model(checkpoint)
    module = ExportedPoseNet(network).eval()
    size = network.crop_size
    example = torch.rand(2, size, size, 3) * 255
    written: dict[str, object] = {"crop_size": size}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notices about Python control flow on shapes
        if onnx_path is not None:
            onnx_path = Path(onnx_path)
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            batch = {0: "batch"}
            torch.onnx.export(
                module, (example,), str(onnx_path), input_names=["images"],
                output_names=["pose_cam", "embedding"], opset_version=17, dynamo=False,
                dynamic_axes={"images": batch, "pose_cam": batch, "embedding": batch},
            )  # fmt: skip
            written["onnx"] = str(onnx_path)
        if torchscript_path is not None:
            torchscript_path = Path(torchscript_path)
            torchscript_path.parent.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                traced = torch.jit.trace(module, (example,))
            traced.save(str(torchscript_path))
            written["torchscript"] = str(torchscript_path)
    return written
