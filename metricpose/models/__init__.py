"""Networks: ResNet backbone, embedding head, 3D pose regressor, orientation head."""

from metricpose.models.posenet import PoseNet

__all__ = ["PoseNet"]
