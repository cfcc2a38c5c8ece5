"""Fitting poses to the person's silhouettes (silhouettes.fit_to_silhouettes), on the tiny
studio's rendered masks."""

import numpy as np
import pytest

from metricpose.data.format import open_dataset
from metricpose.silhouettes import SilhouetteFit, fit_to_silhouettes, sequence_views
from metricpose.skeleton import BONES, JOINT_NAMES

LIMBS = [JOINT_NAMES.index(j) for j in ("left_elbow", "left_wrist", "right_elbow", "right_wrist", "left_knee", "left_ankle", "right_knee", "right_ankle")]  # fmt: skip


def _error(poses, truth, joints=slice(None)):
    """Mean root-relative joint error, mm."""
    rel = lambda p: p - p[:, :1]  # noqa: E731
    return np.linalg.norm(rel(poses) - rel(truth), axis=-1)[:, joints].mean()


@pytest.fixture(scope="module")
def sequences(tiny_studio):
    return [s for s in open_dataset(tiny_studio, ["S5"]) if s.meta.action in ("waving", "boxing")]


def test_limbs_pulled_to_the_body_go_back_to_the_silhouettes(sequences):
    """A teacher's typical error — elbows, wrists, knees and ankles pulled towards the body —
    is mostly undone by the silhouettes of four views; joints that were right stay close."""
    truth = np.concatenate([s.poses_3d.astype(float) for s in sequences])
    views = [
        np.concatenate(parts) for parts in zip(*[sequence_views(s) for s in sequences], strict=True)
    ]
    bones = np.median([np.linalg.norm(truth[:, a] - truth[:, b], axis=-1) for a, b in BONES], 1)
    start = truth.copy()
    centre = truth[:, [JOINT_NAMES.index("thorax")] * 4 + [0] * 4]
    start[:, LIMBS] += 0.25 * (centre - truth[:, LIMBS])
    fitted = fit_to_silhouettes(start, *views, "opencv", bones)
    assert _error(start, truth, LIMBS) > 120.0
    assert _error(fitted, truth, LIMBS) < 0.5 * _error(start, truth, LIMBS)  # 142 -> 63 mm
    assert _error(fitted, truth) < 0.8 * _error(start, truth)  # 67 -> 47 mm, all joints
    # The true pose is (nearly) a fixed point: the generic capsules are not the studio body's.
    assert _error(fit_to_silhouettes(truth, *views, "opencv", bones), truth) < 25.0


def test_the_fit_is_reproducible_and_checks_its_shapes(sequences):
    seq = sequences[0]
    masks, K, R, t, dist = sequence_views(seq)
    model = seq.cameras[0].dist_model
    poses = seq.poses_3d.astype(float) + 30.0
    bones = np.full(len(BONES), 250.0)
    settings = SilhouetteFit(iterations=5)
    first = fit_to_silhouettes(poses, masks, K, R, t, dist, model, bones, settings, seed=3)
    again = fit_to_silhouettes(poses, masks, K, R, t, dist, model, bones, settings, seed=3)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="disagree"):
        fit_to_silhouettes(poses[:-1], masks, K, R, t, dist, model, bones)
