"""Linear probes on frozen embeddings: identity and heading, on hand-made embeddings."""

import numpy as np
import pytest

from metricpose.evaluate import Predictions
from metricpose.probe import heading_angles, heading_probe, identity_probe


def facing(yaw_rad: float) -> np.ndarray:
    """(17, 3) stick pose turned by yaw about the camera's vertical axis (y down)."""
    pose = np.zeros((17, 3))
    pose[1], pose[4] = [100, 0, 0], [-100, 0, 0]  # right hip at +x: facing +z (away)
    pose[8] = [0, -500, 0]  # thorax above the pelvis (y down)
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return pose @ rot.T


def predictions(embedding: np.ndarray, poses: np.ndarray, subject=None) -> Predictions:
    n = len(poses)
    subject = np.array(["S1"] * n) if subject is None else subject
    return Predictions(
        pose_pred=poses, pose_gt=poses, pose_world=poses, embedding=embedding.astype(np.float32),
        subject=subject, action=np.array(["a"] * n), camera=np.array(["c"] * n),
        sequence=np.array([f"{s}_{i % 6}" for i, s in enumerate(subject)]), frame=np.arange(n),
        instant=np.arange(n), labelled=np.ones(n, bool),
    )  # fmt: skip


def test_heading_angles_of_hand_made_poses():
    for yaw in (0.0, 0.7, -2.0, 3.0):
        assert heading_angles(facing(yaw)[None])[0] == pytest.approx(yaw, abs=1e-9)


def test_heading_probe_finds_an_encoded_heading_and_not_a_missing_one():
    rng = np.random.default_rng(0)
    yaw = rng.uniform(-np.pi, np.pi, 400)
    poses = np.stack([facing(a) for a in yaw])
    encoded = np.concatenate(
        [np.cos(yaw)[:, None], np.sin(yaw)[:, None], rng.normal(size=(400, 6))], 1
    )
    noise = rng.normal(size=(400, 8))
    train, test = slice(0, 300), slice(300, 400)
    found = heading_probe(
        predictions(encoded[train], poses[train]), predictions(encoded[test], poses[test])
    )
    missing = heading_probe(
        predictions(noise[train], poses[train]), predictions(noise[test], poses[test])
    )
    assert found["median_error_deg"] < 2
    assert missing["median_error_deg"] > 60


def test_identity_probe_separates_encoded_subjects_only():
    rng = np.random.default_rng(1)
    subject = np.repeat(np.array(["S1", "S5", "S6"]), 60)
    poses = np.zeros((180, 17, 3))
    coded = rng.normal(size=(180, 8)) + 3 * (
        subject[:, None] == np.array(["S1", "S5", "S6"] + [""] * 5)
    )
    assert identity_probe(predictions(coded, poses, subject))["accuracy"] > 0.95
    chance = identity_probe(predictions(rng.normal(size=(180, 8)), poses, subject))
    assert chance["accuracy"] < 0.6 and chance["chance"] == pytest.approx(1 / 3)
