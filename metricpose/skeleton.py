"""The Human3.6M 17-joint skeleton and mappings from other datasets' joint orders.

Every pose array in metricpose uses this order (shape (..., 17, 3), millimetres).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",  # 0, the root
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "spine",
    "thorax",
    "neck_nose",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
ROOT = 0
SPINE = JOINT_NAMES.index("spine")
THORAX = JOINT_NAMES.index("thorax")
RIGHT_HIP = JOINT_NAMES.index("right_hip")
LEFT_HIP = JOINT_NAMES.index("left_hip")

#: Parent of each joint; the root's parent is -1.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

#: Bones as (parent, child) pairs.
BONES: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS) if p >= 0)

#: (left, right) joint pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16))

#: Index permutation that mirrors a pose's joint labels (left <-> right).
FLIP_INDEX: tuple[int, ...] = tuple(
    {**{a: b for a, b in FLIP_PAIRS}, **{b: a for a, b in FLIP_PAIRS}}.get(j, j)
    for j in range(NUM_JOINTS)
)


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """(..., 17, 3) camera-frame poses as a left-right mirrored image shows them: x negated,
    left and right joints swapped. Its own inverse."""
    return pose[..., list(FLIP_INDEX), :] * pose.new_tensor([-1.0, 1.0, 1.0])


#: The 14 joints MPI-INF-3DHP's official PCK/AUC score (head top, neck, shoulders, elbows,
#: wrists, hips, knees, ankles), in our order: head, thorax, right shoulder/elbow/wrist, left
#: shoulder/elbow/wrist, right hip/knee/ankle, left hip/knee/ankle.
PCK_JOINTS_3DHP: tuple[int, ...] = (10, 8, 14, 15, 16, 11, 12, 13, 1, 2, 3, 4, 5, 6)

#: Marks a joint the source skeleton does not have.
MISSING = -1

#: For each of our joints, its index in MPI-INF-3DHP's 17-joint order (head top, neck,
#: right shoulder/elbow/wrist, left shoulder/elbow/wrist, right hip/knee/ankle,
#: left hip/knee/ankle, pelvis, spine, head). 3DHP's "neck" is our thorax, its "head" our
#: neck/nose joint and its "head top" our head joint, as in the common evaluation mapping.
FROM_MPI_INF_3DHP_17: tuple[int, ...] = (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)

#: The 28 joints of MPI-INF-3DHP's annot.mat; FROM_MPI_INF_3DHP_28 picks our 17 from them.
MPI_INF_3DHP_28_TO_17: tuple[int, ...] = (
    7,
    5,
    14,
    15,
    16,
    9,
    10,
    11,
    23,
    24,
    25,
    18,
    19,
    20,
    4,
    3,
    6,
)
FROM_MPI_INF_3DHP_28: tuple[int, ...] = tuple(
    MPI_INF_3DHP_28_TO_17[i] for i in FROM_MPI_INF_3DHP_17
)

COCO_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: For each of our joints, its COCO-17 index; pelvis, spine, thorax and head have no COCO
#: keypoint and are MISSING (COCO's nose stands for our neck/nose joint).
FROM_COCO: tuple[int, ...] = (
    MISSING, 12, 14, 16, 11, 13, 15, MISSING, MISSING, 0, MISSING, 5, 7, 9, 6, 8, 10
)  # fmt: skip

#: For each of our joints, its index in CMU Panoptic's COCO-19 order (neck, nose, body centre,
#: left shoulder/elbow/wrist, left hip/knee/ankle, right shoulder/elbow/wrist, right
#: hip/knee/ankle, eyes, ears). Panoptic has no spine or head-top joint.
FROM_PANOPTIC_19: tuple[int, ...] = (
    2, 12, 13, 14, 6, 7, 8, MISSING, 0, 1, MISSING, 3, 4, 5, 9, 10, 11
)  # fmt: skip


def remap_joints(poses: np.ndarray, source_index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Reorder poses from a source skeleton into ours.

    Args:
        poses: (..., J_src, C) joints in the source order.
        source_index: for each of our 17 joints, its source index or MISSING.

    Returns:
        (..., 17, C) poses (NaN where the joint is missing) and a (17,) bool mask of joints
        that exist in the source.
    """
    index = np.asarray(source_index)
    exists = index != MISSING
    out = np.full(poses.shape[:-2] + (NUM_JOINTS, poses.shape[-1]), np.nan, dtype=np.float64)
    out[..., exists, :] = poses[..., index[exists], :]
    return out, exists


def body_frame(pose_cam: torch.Tensor) -> torch.Tensor:
    """Rotation from the body-centred frame to the pose's frame (torch).

    Right: left hip -> right hip; up: pelvis -> thorax made orthogonal to right; forward:
    up × right.

    Args:
        pose_cam: (..., 17, 3) root-relative pose (any length unit).

    Returns:
        (..., 3, 3) matrix whose columns are the body's right, forward and up axes.
    """
    import torch

    right = torch.nn.functional.normalize(
        pose_cam[..., RIGHT_HIP, :] - pose_cam[..., LEFT_HIP, :], dim=-1
    )
    spine = pose_cam[..., THORAX, :] - pose_cam[..., ROOT, :]
    up = torch.nn.functional.normalize(
        spine - (spine * right).sum(-1, keepdim=True) * right, dim=-1
    )
    forward = torch.cross(up, right, dim=-1)
    return torch.stack([right, forward, up], dim=-1)


def root_relative(poses: np.ndarray) -> np.ndarray:
    """Subtract the pelvis from every joint. poses: (..., 17, 3) -> (..., 17, 3)."""
    return poses - poses[..., ROOT : ROOT + 1, :]
