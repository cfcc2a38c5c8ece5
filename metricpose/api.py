"""The Python API for a trained model: ``metricpose.load(path).predict(images)``.

Images may be numpy arrays (H, W, 3) or (N, H, W, 3) RGB 0-255, PIL images, torch tensors of
the same layouts, or a list of any of these (sizes may differ). Each image is cropped to its
person box (given, or the largest centred square) and resized to the crops the model was
trained on, exactly as the converters crop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metricpose.errors import InputError
from metricpose.imaging import crop, whole_frame_box
from metricpose.skeleton import JOINT_NAMES


@dataclass
class PosePrediction:
    """Per image: ``poses`` (N, 17, 3) root-relative camera-frame mm (Human3.6M joint order,
    see ``joint_names``), ``embeddings`` (N, D) unit vectors, ``boxes`` (N, 4) px crop boxes."""

    poses: np.ndarray
    embeddings: np.ndarray
    boxes: np.ndarray
    joint_names: tuple[str, ...] = JOINT_NAMES


def as_image_list(images: Any) -> list[np.ndarray]:
    """Any supported image input -> list of (H, W, 3) uint8 RGB arrays."""
    if isinstance(images, (list, tuple)):
        return [img for item in images for img in as_image_list(item)]
    if hasattr(images, "convert") and hasattr(images, "size"):  # a PIL image
        return [np.asarray(images.convert("RGB"))]
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        if images.ndim in (3, 4) and images.shape[-3] == 3 and images.shape[-1] != 3:
            images = images.movedim(-3, -1)  # (…, 3, H, W) -> (…, H, W, 3)
        images = images.numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"images must be (H, W, 3) or (N, H, W, 3) RGB, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError("images contain NaN or Inf")
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"images must hold values 0-255, got {arr.min():.3g}..{arr.max():.3g}")
        arr = arr.round().astype(np.uint8)
    return list(arr)


#: Below this side (px) an image cannot show a person (the model then sees upsampled blur).
MIN_IMAGE_PX = 16
#: A box may reach this share of its area beyond the image (a person at the border) before it
#: is refused as a wrong box rather than a cut-off person.
MAX_BOX_OUTSIDE = 0.5


def _check_box_inside(box: np.ndarray, width: int, height: int, index: int) -> None:
    """Refuse a person box mostly outside its image (wrong coordinates, wrong image)."""
    x0, y0, x1, y1 = box
    inside = max(0.0, min(x1, width) - max(x0, 0)) * max(0.0, min(y1, height) - max(y0, 0))
    outside = 1.0 - inside / ((x1 - x0) * (y1 - y0))
    if outside > MAX_BOX_OUTSIDE:
        raise InputError(
            f"box {index} {[round(float(v), 1) for v in box]} lies {100 * outside:.0f}% outside "
            f"its {width}x{height} px image (at most {100 * MAX_BOX_OUTSIDE:.0f}% allowed): "
            "wrong box coordinates or the wrong image?"
        )


class PoseModel:
    """A trained model ready for inference (eval mode, no gradients)."""

    def __init__(self, network: torch.nn.Module, config: dict[str, Any], device: str = "auto"):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.config = config
        self.crop_size: int = int(getattr(network, "crop_size", 64))

    def crops(self, images: Any, boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 crops and the (N, 4) boxes they were cut from."""
        frames = as_image_list(images)
        if not frames:
            raise InputError("no images given")
        for i, frame in enumerate(frames):
            if min(frame.shape[:2]) < MIN_IMAGE_PX:
                warnings.warn(
                    f"image {i} is {frame.shape[1]}x{frame.shape[0]} px; below {MIN_IMAGE_PX} px "
                    "a person cannot be seen and the pose is a guess",
                    stacklevel=2,
                )
        if boxes is None:
            boxes = np.stack([whole_frame_box(f.shape[1], f.shape[0]) for f in frames])
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != len(frames):
            raise InputError(f"{len(boxes)} boxes for {len(frames)} images")
        if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2:] <= boxes[:, :2]):
            raise InputError("boxes must be finite (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
        for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
            _check_box_inside(box, frame.shape[1], frame.shape[0], i)
        crops = np.stack([crop(f, b, self.crop_size) for f, b in zip(frames, boxes, strict=True)])
        return crops, boxes

    @torch.inference_mode()
    def predict(
        self, images: Any, boxes: np.ndarray | None = None, batch_size: int = 64
    ) -> PosePrediction:
        """3D poses and embeddings of the person in each image (in its box, if given)."""
        crops, boxes = self.crops(images, boxes)
        poses, embeddings = [], []
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(crops[start : start + batch_size]).to(self.device)
            out = self.network(batch)
            poses.append(out["pose_cam"].float().cpu().numpy())
            embeddings.append(out["embedding"].float().cpu().numpy())
        return PosePrediction(np.concatenate(poses), np.concatenate(embeddings), boxes)

    def embed(self, images: Any, boxes: np.ndarray | None = None) -> np.ndarray:
        """(N, D) unit-norm pose embeddings: similar poses, from any camera, lie close."""
        return self.predict(images, boxes).embeddings


def load(checkpoint: str | Path, device: str = "auto") -> PoseModel:
    """Load a model file (model.pt) or training checkpoint (.ckpt) for inference."""
    from metricpose.checkpoint import load_model

    network, config = load_model(checkpoint)
    return PoseModel(network, config, device)
