"""torchvision ResNets with an optional width multiplier (for CPU-sized models)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from metricpose.errors import InputError

_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetBackbone(ResNet):
    """A torchvision ResNet without its classifier; ``width`` scales every layer's channels.

    Input (B, 3, H, W) normalised images; output (B, C) features, C = ``out_features``: the last
    feature map average-pooled to a ``pool_grid`` × ``pool_grid`` grid and flattened (1:
    torchvision's global pooling). At width 1 it is exactly torchvision's network, so ImageNet
    weights load.
    """

    def __init__(
        self,
        name: str = "resnet18",
        width: float = 1.0,
        weights_path: str | Path | None = None,
        pool_grid: int = 1,
    ) -> None:
        if name not in _LAYOUTS:
            raise InputError(f"unknown backbone {name!r}; choose from {', '.join(_LAYOUTS)}")
        block, layers = _LAYOUTS[name]
        super().__init__(block, list(layers))
        planes = [max(8, int(round(p * width))) for p in (64, 128, 256, 512)]
        if width != 1.0:
            if weights_path is not None:
                raise InputError("ImageNet weights exist only for width 1.0")
            # Rebuild the stem and stages at the scaled width with torchvision's own builders.
            self.inplanes = planes[0]
            self.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(planes[0])
            self.layer1 = self._make_layer(block, planes[0], layers[0])
            self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
            self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
            self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
            for m in self.modules():  # the same initialisation as torchvision's
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        # A grid keeps where in the crop each feature fired (which side a limb is on), which
        # global pooling averages away (docs/design.md, thirteenth round).
        self.avgpool = nn.AdaptiveAvgPool2d(pool_grid)
        self.out_features = planes[3] * block.expansion * pool_grid**2
        self.fc = nn.Identity()
        if weights_path is not None:
            self._load_imagenet(Path(weights_path))

    def _load_imagenet(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ImageNet weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(
                f"{path}: not a torchvision {type(self).__name__} state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
