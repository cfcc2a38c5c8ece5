"""The pose network: image crop -> (view-invariant embedding, 3D pose in the camera frame).

The regressor maps the embedding straight to the root-relative camera-frame pose. The factored
design (a body-frame pose plus an orientation head) lost 25 mm over three seeds: the heading
did not generalise from one labelled person (docs/design.md, "Where the pose comes from"; the
code is at commit 1153807).
"""

from __future__ import annotations

import torch
from torch import nn

from metricpose.config import CHOICES
from metricpose.models.backbone import ResNetBackbone
from metricpose.skeleton import NUM_JOINTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResidualBlock(nn.Module):
    """Linear-BN-ReLU-Dropout twice with a skip connection (Martinez et al. 2017)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class PoseRegressor(nn.Module):
    """MLP from an embedding (B, D) to normalised joint coordinates (B, 17 * 3)."""

    def __init__(
        self, in_dim: int, width: int = 1024, blocks: int = 2, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.inp = nn.Sequential(
            nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)
        )
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, NUM_JOINTS * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))


class PoseNet(nn.Module):
    """Backbone + embedding head + pose regressor.

    ``pose_mean`` and ``pose_std`` (17, 3) mm are the statistics of the training targets
    (root-relative camera-frame poses); the regressor predicts normalised coordinates.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        width: float = 1.0,
        embedding_dim: int = 128,
        regressor_width: int = 1024,
        regressor_blocks: int = 2,
        dropout: float = 0.25,
        weights_path: str | None = None,
        norm_eval: bool = False,
        regressor_input: str = "embedding",
        pool_grid: int = 1,
    ) -> None:
        super().__init__()
        self.norm_eval = norm_eval
        if regressor_input not in CHOICES["model.regressor_input"]:
            raise ValueError(
                f"regressor_input must be one of {CHOICES['model.regressor_input']}, got {regressor_input!r}"
            )
        self.regressor_input = regressor_input
        self.backbone = ResNetBackbone(backbone, width, weights_path, pool_grid)
        feat = self.backbone.out_features
        self.embed = nn.Linear(feat, embedding_dim)
        # "embedding+features": the regressor also reads the pooled backbone features, which
        # keep the view (heading) information the metric loss removes from the embedding.
        regressor_in = embedding_dim + (feat if regressor_input == "embedding+features" else 0)
        self.regressor = PoseRegressor(regressor_in, regressor_width, regressor_blocks, dropout)
        self.register_buffer("pose_mean", torch.zeros(NUM_JOINTS, 3))
        self.register_buffer("pose_std", torch.ones(NUM_JOINTS, 3))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.train()  # applies norm_eval now: Lightning does not call train() before fitting

    def train(self, mode: bool = True) -> PoseNet:
        """With ``norm_eval``, BatchNorm layers stay in eval mode (running statistics) while the
        rest trains: small per-process batches then neither skew the statistics nor make
        several processes normalise differently from one."""
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def normalise_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 or float 0-255 RGB -> (B, 3, S, S) normalised float."""
        x = images.permute(0, 3, 1, 2).float()
        return ((x - self.image_mean) / self.image_std).contiguous(
            memory_format=torch.channels_last
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, S, S, 3) 0-255 RGB -> dict with ``embedding`` (B, D) unit-norm,
        ``pose_cam`` (B, 17, 3) root-relative camera-frame mm and ``features`` (B, C), the
        pooled backbone features (ResNetBackbone)."""
        features = self.backbone(self.normalise_images(images))
        embedding = nn.functional.normalize(self.embed(features), dim=-1)
        inputs = (
            embedding
            if self.regressor_input == "embedding"
            else torch.cat([embedding, features], 1)
        )
        pose = self.regressor(inputs).view(-1, NUM_JOINTS, 3) * self.pose_std + self.pose_mean
        return {"embedding": embedding, "pose_cam": pose - pose[:, :1], "features": features}
