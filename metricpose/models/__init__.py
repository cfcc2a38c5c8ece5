"""Networks: ResNet backbone, embedding head, 3D pose regressor."""

from metricpose.models.posenet import PoseNet

__all__ = ["PoseNet"]
