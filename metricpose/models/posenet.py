"""The pose network: image crop -> (view-invariant embedding, 3D pose in the camera frame).

A view-invariant embedding cannot say how the body is turned relative to the camera, yet
MPJPE is measured in the camera frame. So the pose is factored:

* the regressor maps the embedding to the pose in a **body-centred frame** (x: left hip ->
  right hip, z: pelvis -> thorax made orthogonal to x, y = z × x, pointing forward), which is
  the same from every camera;
* an orientation head maps view-dependent backbone features to the body frame's rotation
  relative to the camera (6D representation, Zhou et al. 2019);
* the camera-frame pose is their composition, ``pose_cam = pose_body @ R_bodyᵀ``.

``pose_frame="camera"`` instead regresses the camera-frame pose from the embedding directly
(the naive design, kept for the ablation in docs/design.md).
"""

from __future__ import annotations

import torch
from torch import nn

from metricpose.models.backbone import ResNetBackbone
from metricpose.skeleton import NUM_JOINTS

ORIENTATION_SOURCES = ("pooled", "layer4", "layer3", "separate")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) rotation matrices whose first two columns are the
    Gram-Schmidt orthonormalisation of the two 3-vectors."""
    a, b = x[..., :3], x[..., 3:]
    c1 = nn.functional.normalize(a, dim=-1)
    c2 = nn.functional.normalize(b - (c1 * b).sum(-1, keepdim=True) * c1, dim=-1)
    c3 = torch.cross(c1, c2, dim=-1)
    return torch.stack([c1, c2, c3], dim=-1)


def body_frame(pose_cam: torch.Tensor) -> torch.Tensor:
    """Rotation from the body-centred frame to the camera frame.

    Args:
        pose_cam: (..., 17, 3) root-relative camera-frame pose.

    Returns:
        (..., 3, 3) matrix whose columns are the body's right, forward and up axes.
    """
    right = nn.functional.normalize(pose_cam[..., 1, :] - pose_cam[..., 4, :], dim=-1)
    spine = pose_cam[..., 8, :] - pose_cam[..., 0, :]
    up = nn.functional.normalize(spine - (spine * right).sum(-1, keepdim=True) * right, dim=-1)
    forward = torch.cross(up, right, dim=-1)
    return torch.stack([right, forward, up], dim=-1)


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
    """Backbone + embedding head + pose regressor (+ orientation head).

    ``pose_mean`` and ``pose_std`` (17, 3) mm are the statistics of the training targets
    (body-frame or camera-frame poses); the regressor predicts normalised coordinates.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        width: float = 1.0,
        embedding_dim: int = 128,
        regressor_width: int = 1024,
        regressor_blocks: int = 2,
        dropout: float = 0.25,
        pose_frame: str = "body",
        weights_path: str | None = None,
        orientation_from: str = "pooled",
        norm_eval: bool = False,
        regressor_input: str = "embedding",
    ) -> None:
        super().__init__()
        self.norm_eval = norm_eval
        if regressor_input not in ("embedding", "embedding+features"):
            raise ValueError(
                f"regressor_input must be 'embedding' or 'embedding+features', got {regressor_input!r}"
            )
        self.regressor_input = regressor_input
        if pose_frame not in ("body", "camera"):
            raise ValueError(f"pose_frame must be 'body' or 'camera', got {pose_frame!r}")
        self.pose_frame = pose_frame
        self.backbone = ResNetBackbone(backbone, width, weights_path)
        feat = self.backbone.out_features
        self.embed = nn.Linear(feat, embedding_dim)
        # "embedding+features": the regressor also reads the pooled backbone features, which
        # keep the view (heading) information the metric loss removes from the embedding.
        regressor_in = embedding_dim + (feat if regressor_input == "embedding+features" else 0)
        self.regressor = PoseRegressor(regressor_in, regressor_width, regressor_blocks, dropout)
        if orientation_from not in ORIENTATION_SOURCES:
            raise ValueError(
                f"orientation_from must be one of {ORIENTATION_SOURCES}, got {orientation_from!r}"
            )
        self.orientation_from = orientation_from
        self.orientation = None
        if pose_frame == "body":
            # "pooled": the globally pooled features that also feed the embedding; "layer4" /
            # "layer3": that stage's map pooled to a coarse grid, keeping the spatial layout
            # that tells left from right; "separate": a quarter-width backbone of its own,
            # trained by the 3D loss alone, out of reach of the metric loss's view invariance.
            grid = {"pooled": 1, "layer4": 2, "layer3": 4, "separate": 2}[orientation_from]
            if orientation_from == "separate":
                self.orientation_backbone = ResNetBackbone(backbone, width / 2)
                channels = self.orientation_backbone.out_features
            elif orientation_from == "pooled":
                channels = feat
            else:
                channels = self.backbone.stage_channels[orientation_from]
            self.orientation_pool = nn.AdaptiveAvgPool2d(grid)
            self.orientation = nn.Sequential(
                nn.Linear(channels * grid * grid, 256), nn.ReLU(), nn.Linear(256, 6)
            )
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
        """images (B, S, S, 3) 0-255 RGB -> dict with
        ``embedding`` (B, D) unit-norm, ``pose_cam`` (B, 17, 3) root-relative camera-frame mm,
        and for pose_frame="body" also ``pose_body`` (B, 17, 3) mm and ``rotation`` (B, 3, 3)."""
        x = self.normalise_images(images)
        layer3, layer4 = self.backbone.feature_maps(x)
        features = torch.flatten(self.backbone.avgpool(layer4), 1)
        embedding = nn.functional.normalize(self.embed(features), dim=-1)
        inputs = (
            embedding
            if self.regressor_input == "embedding"
            else torch.cat([embedding, features], 1)
        )
        pose = self.regressor(inputs).view(-1, NUM_JOINTS, 3) * self.pose_std + self.pose_mean
        pose = pose - pose[:, :1]
        if self.orientation is None:
            return {"embedding": embedding, "pose_cam": pose, "features": features}
        if self.orientation_from == "separate":
            source = self.orientation_backbone.feature_maps(x)[1]
        else:
            source = {"pooled": layer4, "layer4": layer4, "layer3": layer3}[self.orientation_from]
        rotation = rotation_6d_to_matrix(
            self.orientation(torch.flatten(self.orientation_pool(source), 1))
        )
        return {
            "embedding": embedding,
            "pose_body": pose,
            "rotation": rotation,
            "pose_cam": pose @ rotation.transpose(-1, -2),
            "features": features,
        }
