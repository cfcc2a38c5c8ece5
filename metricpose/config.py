"""Training configuration: YAML presets plus command-line overrides, validated up front."""

from __future__ import annotations

import difflib
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from metricpose.errors import InputError

PRESETS = (
    "baseline",
    "metric",
    "metric_adv",
    "metric_calibrated",
    "triangulated",
    "pseudo_labelled",
)
#: Settings for one dataset's experiment, applied after a preset (``--recipe``).
RECIPES = ("h36m_paper",)
#: A recipe's value for options the user must give (e.g. a local weights file).
REQUIRED = "REQUIRED"


class ConfigError(InputError):
    """An invalid configuration; the message names the key and the problem."""


def _read_yaml(path: Path | Any, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a UTF-8 text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def defaults() -> dict[str, Any]:
    return _read_yaml(resources.files("metricpose.configs") / "default.yaml", "default.yaml")


def _merge(base: dict[str, Any], update: dict[str, Any], where: str, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            hint = difflib.get_close_matches(key, list(base), n=1)
            suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else ""
            raise ConfigError(f"{where}: unknown option {dotted!r}{suggestion}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {dotted!r} must be a mapping")
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = _checked(base[key], value, dotted, where)


def _checked(default: Any, value: Any, key: str, where: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key!r} must be finite, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key!r} must be an integer, got {value!r}")
    elif isinstance(default, list) and not isinstance(value, list):
        value = [v.strip() for v in str(value).split(",")]
    elif isinstance(default, str) and not isinstance(value, str):
        value = str(value)
    return value


def parse_override(text: str) -> dict[str, Any]:
    """'loss.margin=0.3' -> {'loss': {'margin': 0.3}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. loss.margin=0.3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _yaml_source(name: str, shipped: tuple[str, ...], what: str) -> Any:
    if name in shipped:
        return resources.files("metricpose.configs") / f"{name}.yaml"
    source = Path(name)
    if source.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{name!r}: neither a {what} ({', '.join(shipped)}) nor a .yaml file")
    return source


def _unset_required(config: dict[str, Any], prefix: str = "") -> list[str]:
    missing = []
    for key, value in config.items():
        if isinstance(value, dict):
            missing += _unset_required(value, f"{prefix}{key}.")
        elif value == REQUIRED:
            missing.append(f"{prefix}{key}")
    return missing


def load_config(
    preset_or_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    recipe: str | None = None,
) -> dict[str, Any]:
    """Defaults, then a preset name or a YAML file, then a recipe (a dataset's experiment
    settings), then ``key=value`` overrides."""
    config = defaults()
    if preset_or_file:
        source = _yaml_source(preset_or_file, PRESETS, "preset")
        _merge(config, _read_yaml(source, str(preset_or_file)), str(preset_or_file))
    if recipe:
        _merge(config, _read_yaml(_yaml_source(recipe, RECIPES, "recipe"), recipe), recipe)
    for text in overrides:
        _merge(config, parse_override(text), f"override {text!r}")
    missing = _unset_required(config)
    if missing:
        raise ConfigError(
            f"{recipe or preset_or_file}: {', '.join(missing)} must be given "
            f"(--set {missing[0]}=...); see the recipe's comments"
        )
    try:
        validate(config)
    except ConfigError as exc:
        source = f"{preset_or_file}" if preset_or_file else "the configuration"
        raise ConfigError(f"{source}{' with overrides' if overrides else ''}: {exc}") from None
    return config


#: The values each choice option accepts; the modules that act on them name the same lists in
#: their own errors (for direct library use without a config).
CHOICES: dict[str, tuple[str | int, ...]] = {
    "model.backbone": ("resnet18", "resnet34", "resnet50"),
    "model.regressor_input": ("embedding", "embedding+features"),
    "loss.pose": ("l2", "l1"),
    "loss.metric": ("infonce", "hardnet"),
    "train.nonfinite": ("stop", "skip"),
    "train.accelerator": ("auto", "cpu", "gpu", "cuda"),
    "batch.unlabelled_views": (2, 4),
}


def _choice(config: dict[str, Any], key: str) -> None:
    section, name = key.split(".")
    options = CHOICES[key]
    if config[section][name] not in options:
        raise ConfigError(
            f"{key!r} must be one of {', '.join(map(str, options))}, got {config[section][name]!r}"
        )


def _positive(config: dict[str, Any], key: str, allow_zero: bool = False) -> None:
    section, name = key.split(".")
    value = config[section][name]
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"{key!r} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}"
        )


def validate(config: dict[str, Any]) -> None:
    """Check ranges and choices; raise ConfigError naming the key."""
    for key in CHOICES:
        _choice(config, key)
    for key in (
        "model.width",
        "model.embedding_dim",
        "model.pool_grid",
        "batch.size",
        "train.steps",
        "train.lr",
        "train.val_every",
        "train.log_every",
        "data.frame_stride",
    ):
        _positive(config, key)
    for key in (
        "loss.pose_weight",
        "loss.metric_weight",
        "loss.adversarial_weight",
        "loss.calibrated_weight",
        "loss.bone_weight",
        "loss.triangulation_weight",
        "loss.triangulation_start_step",
        "loss.margin",
        "train.grad_clip",
        "data.num_workers",
        "train.threads",
    ):
        _positive(config, key, allow_zero=True)
    cpus = os.cpu_count() or 1
    if config["data"]["num_workers"] > max(4, cpus):
        raise ConfigError(
            f"'data.num_workers' is {config['data']['num_workers']}, more than this machine's "
            f"{cpus} CPUs can use (each worker is a process of several hundred MB); at most {max(4, cpus)}"
        )
    if not 0.0 <= config["batch"]["labelled_fraction"] <= 1.0:
        raise ConfigError(
            f"'batch.labelled_fraction' must be in [0, 1], got {config['batch']['labelled_fraction']}"
        )
    if not 0.0 <= config["model"]["dropout"] < 1.0:
        raise ConfigError(f"'model.dropout' must be in [0, 1), got {config['model']['dropout']}")
    if config["loss"]["triangulation_weight"] > 0:
        unlabelled = config["batch"]["size"] - round(
            config["batch"]["labelled_fraction"] * config["batch"]["size"]
        )
        if config["batch"]["unlabelled_views"] != 4 or unlabelled <= 0 or unlabelled % 2:
            raise ConfigError(
                "'loss.triangulation_weight' triangulates unlabelled instants seen by four cameras: set "
                "'batch.unlabelled_views=4' and leave an even, non-zero number of unlabelled slots per batch "
                f"(now {config['batch']['unlabelled_views']} views, {unlabelled} slots)"
            )
    for key in ("calibrated_weight", "triangulation_weight"):
        if config["augment"]["flip"] and config["loss"][key] > 0:
            raise ConfigError(
                f"'augment.flip' mirrors the images but not the camera rotations that 'loss.{key}' uses; disable one"
            )
    _positive(config, "loss.temperature")
    _positive(config, "loss.calibrated_temperature_mm")
    if not 0.0 < config["data"]["pseudo_labels_keep"] <= 1.0:
        raise ConfigError(
            f"'data.pseudo_labels_keep' must be in (0, 1], got {config['data']['pseudo_labels_keep']!r}"
        )
    overlap = set(config["data"]["train_subjects"]) & set(config["data"]["test_subjects"])
    if overlap:
        raise ConfigError(f"'data.test_subjects' overlaps the training subjects: {sorted(overlap)}")
    parse_labels(config["data"]["labels"], config["data"]["train_subjects"])


def parse_labels(spec: str, train_subjects: list[str]) -> tuple[str, Any]:
    """'S1' / 'S1,S5' -> ('subjects', [...]); 'fraction:0.05' -> ('fraction', 0.05); 'all'."""
    spec = str(spec).strip()
    if spec == "all":
        return "subjects", list(train_subjects)
    if spec.startswith("fraction:"):
        try:
            fraction = float(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"'data.labels': bad fraction in {spec!r}") from None
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"'data.labels': fraction must be in (0, 1], got {fraction}")
        return "fraction", fraction
    subjects = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in subjects if s not in train_subjects]
    if not subjects or unknown:
        raise ConfigError(
            f"'data.labels': {spec!r} names subjects outside data.train_subjects {train_subjects}"
        )
    return "subjects", subjects
