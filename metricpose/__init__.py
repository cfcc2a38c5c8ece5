"""metricpose: monocular 3D human pose from scarce 3D labels and multi-view metric learning."""

__version__ = "0.1.0"


def load(checkpoint, device: str = "auto"):
    """Load a trained model for inference: ``metricpose.load("runs/m/model.pt").predict(images)``.

    See metricpose.api.PoseModel (imported lazily so that the command line starts fast).
    """
    from metricpose.api import load as _load

    return _load(checkpoint, device)
