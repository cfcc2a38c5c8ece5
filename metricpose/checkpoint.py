"""Saving and loading: atomic checkpoints, and a self-contained model file that loads safely."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from metricpose import __version__
from metricpose.errors import InputError
from metricpose.fileio import atomic_write_bytes
from metricpose.skeleton import JOINT_NAMES

MODEL_FORMAT = "metricpose-model"


def atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer that never leaves a partial file under the final name."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_load(Path(path), map_location)


def safe_load(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True; a file that needs arbitrary pickled objects is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if _is_not_a_torch_file(path):
            raise InputError(
                f"{path}: not a PyTorch model or checkpoint file (corrupt, or another format)"
            ) from None
        if "Weights only load failed" not in str(exc):
            raise InputError(f"{path}: corrupt checkpoint ({str(exc).splitlines()[0]})") from None
        raise InputError(
            f"{path}: cannot be loaded safely as a checkpoint (weights_only=True): it needs "
            "arbitrary Python objects, which could run code, and metricpose refuses such files."
        ) from None
    except Exception as exc:  # truncated zip archives, bad magic numbers, EOF ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: corrupt or truncated checkpoint ({first[:200]})") from None


def _is_not_a_torch_file(path: Path) -> bool:
    """True unless the file starts like a torch.save archive (zip) or a legacy pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    return not (head.startswith(b"PK") or head[:1] == b"\x80")


def save_model(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    subjects: list[str],
    step: int,
    crop_size: int,
) -> None:
    """The portable model file: weights, resolved config, joint names, training subjects and
    the side (px) of the crops it was trained on."""
    atomic_torch_save(
        {
            "format": MODEL_FORMAT,
            "version": __version__,
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
            "config": config,
            "joint_names": list(JOINT_NAMES),
            "subjects": list(subjects),
            "step": int(step),
            "crop_size": int(crop_size),
        },
        path,
    )


def load_model(path: Path | str, map_location: str = "cpu"):
    """Load a PoseNet from a model file (model.pt) or a Lightning checkpoint (.ckpt).

    Returns (model in eval mode, config dict). ``model.crop_size`` is the side (px) of the
    crops it was trained on (64 for model files from before it was recorded).
    """
    ckpt = safe_load(Path(path), map_location)
    if not isinstance(ckpt, dict):
        raise InputError(f"{path}: not a metricpose model file (holds a {type(ckpt).__name__})")
    crop_size = ckpt.get("crop_size", 64)
    if ckpt.get("format") == MODEL_FORMAT and "state_dict" in ckpt and "config" in ckpt:
        state, config = ckpt["state_dict"], ckpt["config"]
    elif isinstance(ckpt.get("hyper_parameters"), dict) and "config" in ckpt["hyper_parameters"]:
        config = ckpt["hyper_parameters"]["config"]
        state = {
            k[len("model.") :]: v
            for k, v in ckpt.get("state_dict", {}).items()
            if k.startswith("model.")
        }
    else:
        raise InputError(
            f"{path}: neither a metricpose model file nor a metricpose training checkpoint"
        )
    if (
        not isinstance(config, dict)
        or not isinstance(state, dict)
        or not isinstance(crop_size, int)
    ):
        raise InputError(
            f"{path}: malformed model file (config, weights or crop size of the wrong type)"
        )
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            if not torch.isfinite(tensor).all():
                raise InputError(
                    f"{path}: weight tensor {name!r} holds NaN or Inf; the model would predict "
                    "NaN joints (a diverged or damaged training run)"
                )
    try:
        config = _with_defaults(config)
        model = build_model(config, pretrained=False)
        model.load_state_dict(state)
    except InputError as exc:
        raise InputError(f"{path}: its config is invalid: {exc}") from None
    except (RuntimeError, TypeError, KeyError) as exc:
        raise InputError(
            f"{path}: weights do not match the network its config describes ({str(exc).splitlines()[0]})"
        ) from None
    model.crop_size = crop_size
    return model.eval(), config


#: Options added after the first release, with the value that reproduces how models saved
#: without them were built (today's default may differ).
OLDER_MODELS = {"model": {"regressor_input": "embedding", "norm_eval": False, "pool_grid": 1}}


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config completed for options added since: first with the values that
    reproduce older models, then with today's defaults."""
    from metricpose.config import defaults

    merged = defaults()
    for section, values in OLDER_MODELS.items():
        merged[section].update(values)
    for section, values in config.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


def build_model(config: dict[str, Any], pretrained: bool = True):
    """A PoseNet as the config's model section describes; ImageNet weights are loaded from
    model.weights only when ``pretrained`` (a trained checkpoint brings its own)."""
    from metricpose.models import PoseNet

    m = config["model"]
    if m.get("pose_frame", "camera") != "camera":
        raise InputError(
            f"model.pose_frame={m['pose_frame']!r}: the body-frame design (orientation head) "
            "was removed after it lost to direct camera-frame regression (docs/design.md); "
            "load this model with metricpose at commit 1153807"
        )
    return PoseNet(
        backbone=m["backbone"], width=m["width"], embedding_dim=m["embedding_dim"],
        regressor_width=m["regressor_width"], regressor_blocks=m["regressor_blocks"],
        dropout=m["dropout"], weights_path=m["weights"] if pretrained else None, norm_eval=m["norm_eval"],
        regressor_input=m["regressor_input"], pool_grid=m["pool_grid"],
    )  # fmt: skip
