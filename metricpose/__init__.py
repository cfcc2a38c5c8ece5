"""metricpose: monocular 3D human pose from scarce 3D labels and multi-view metric learning."""

__version__ = "0.1.0"
