"""Subjects of the synthetic studio: body proportions, looks, and forward kinematics.

Body frame: x = the subject's right, y = forward, z = up (right-handed), millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metricpose.skeleton import NUM_JOINTS, PARENTS

#: Adult bone lengths in mm (close to Human3.6M's averages), keyed by role.
BASE_LENGTHS_MM: dict[str, float] = {
    "hip": 130.0,  # pelvis -> hip, lateral
    "thigh": 445.0,
    "shin": 445.0,
    "lower_spine": 235.0,
    "upper_spine": 255.0,
    "neck": 115.0,
    "head": 115.0,
    "shoulder": 150.0,  # thorax -> shoulder, lateral
    "upper_arm": 280.0,
    "forearm": 250.0,
    "foot": 150.0,
}

#: Rest-pose offset of each joint from its parent, in the parent's frame, as
#: (role of the length, unit direction). Arms hang down, legs straight: a standing pose.
_REST_OFFSETS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("hip", (0.0, 0.0, 0.0)),  # root: no offset
    ("hip", (1.0, 0.0, -0.08)),
    ("thigh", (0.0, 0.0, -1.0)),
    ("shin", (0.0, 0.0, -1.0)),
    ("hip", (-1.0, 0.0, -0.08)),
    ("thigh", (0.0, 0.0, -1.0)),
    ("shin", (0.0, 0.0, -1.0)),
    ("lower_spine", (0.0, -0.04, 1.0)),
    ("upper_spine", (0.0, 0.0, 1.0)),
    ("neck", (0.0, 0.25, 1.0)),
    ("head", (0.0, -0.15, 1.0)),
    ("shoulder", (-1.0, -0.05, -0.15)),
    ("upper_arm", (0.0, 0.0, -1.0)),
    ("forearm", (0.0, 0.0, -1.0)),
    ("shoulder", (1.0, -0.05, -0.15)),
    ("upper_arm", (0.0, 0.0, -1.0)),
    ("forearm", (0.0, 0.0, -1.0)),
)

SKIN_TONES = np.array(
    [
        [255, 219, 172],
        [241, 194, 125],
        [224, 172, 105],
        [198, 134, 66],
        [141, 85, 36],
        [92, 58, 33],
    ],
    dtype=np.float32,
)
HAIR_COLOURS = np.array(
    [[20, 15, 12], [60, 40, 25], [110, 75, 40], [200, 160, 90], [150, 60, 30], [130, 130, 130]],
    dtype=np.float32,
)


@dataclass
class Subject:
    """A studio subject: proportions (mm), widths and appearance (RGB 0-255)."""

    name: str
    lengths_mm: dict[str, float]
    width: float  # multiplies every limb radius
    skin: np.ndarray  # (3,)
    hair: np.ndarray
    shirt: np.ndarray
    shirt_stripes: np.ndarray  # (3,) second colour of the stripes
    stripe_period: float  # stripes per primitive length; 0 = plain shirt
    long_sleeves: bool
    trousers: np.ndarray
    shorts: bool
    shoes: np.ndarray

    def rest_offsets(self) -> np.ndarray:
        """(17, 3) offset of each joint from its parent at rest, parent frame, mm."""
        out = np.zeros((NUM_JOINTS, 3))
        for j, (role, direction) in enumerate(_REST_OFFSETS):
            if j == 0:
                continue
            d = np.asarray(direction)
            out[j] = self.lengths_mm[role] * d / np.linalg.norm(d)
        return out


def make_subject(name: str, rng: np.random.Generator) -> Subject:
    """Draw a subject: overall size ±5%, each bone ±10% (both sides alike), and looks."""
    size = rng.normal(1.0, 0.04)
    lengths = {k: v * size * rng.uniform(0.9, 1.1) for k, v in BASE_LENGTHS_MM.items()}

    def colour(lo: float = 20, hi: float = 235) -> np.ndarray:
        return rng.uniform(lo, hi, size=3).astype(np.float32)

    shirt = colour()
    stripes = np.clip(255 - shirt + rng.normal(0, 30, 3), 0, 255).astype(np.float32)
    return Subject(
        name=name,
        lengths_mm=lengths,
        width=float(rng.uniform(0.85, 1.2)),
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.05),
        hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        shirt=shirt,
        shirt_stripes=stripes,
        stripe_period=float(rng.choice([0.0, 0.0, 3.0, 5.0])),
        long_sleeves=bool(rng.random() < 0.5),
        trousers=colour(15, 160),
        shorts=bool(rng.random() < 0.3),
        shoes=colour(10, 90),
    )


def euler_to_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """(..., 3) angles (flexion about x, abduction about y, twist about z) -> (..., 3, 3).

    The matrix is Rz(twist) @ Ry(abduction) @ Rx(flexion): flexion is applied first.
    """
    a, b, c = angles_rad[..., 0], angles_rad[..., 1], angles_rad[..., 2]
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    zero, one = np.zeros_like(a), np.ones_like(a)
    Rx = np.stack([one, zero, zero, zero, ca, -sa, zero, sa, ca], -1).reshape(a.shape + (3, 3))
    Ry = np.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], -1).reshape(a.shape + (3, 3))
    Rz = np.stack([cc, -sc, zero, sc, cc, zero, zero, zero, one], -1).reshape(a.shape + (3, 3))
    return Rz @ Ry @ Rx


def forward_kinematics(
    offsets: np.ndarray, local_rot: np.ndarray, root_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions from local rotations.

    The rotation of joint j orients the bones from j to its children:
    ``G_j = G_parent @ L_j`` and ``x_child = x_j + G_j @ offset_child``.

    Args:
        offsets: (17, 3) rest offsets, parent frame, mm.
        local_rot: (T, 17, 3, 3) local rotations; local_rot[:, 0] is the global body orientation.
        root_pos: (T, 3) pelvis position in world mm.

    Returns:
        positions (T, 17, 3) world mm and global rotations (T, 17, 3, 3).
    """
    T = local_rot.shape[0]
    pos = np.zeros((T, NUM_JOINTS, 3))
    glob = np.zeros((T, NUM_JOINTS, 3, 3))
    pos[:, 0] = root_pos
    glob[:, 0] = local_rot[:, 0]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
        glob[:, j] = glob[:, p] @ local_rot[:, j]
    return pos, glob
