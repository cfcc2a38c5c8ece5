import numpy as np
import pytest

from metricpose.skeleton import BONES
from metricpose.studio.body import make_subject
from metricpose.studio.generate import generate, synth_config
from metricpose.studio.motion import (
    ACTIONS,
    ANKLE_HEIGHT_MM,
    JOINT_LIMITS_DEG,
    draw_style,
    generate_take,
)
from metricpose.studio.render import CameraBackdrop, Studio, render_take, render_takes
from metricpose.studio.rig import default_rig, random_rig


def bone_lengths(joints):
    return np.stack(
        [np.linalg.norm(joints[..., c, :] - joints[..., p, :], axis=-1) for p, c in BONES], -1
    )


@pytest.mark.parametrize("action", list(ACTIONS))
def test_motion_is_rigid_grounded_and_smooth(action):
    subject = make_subject("S1", np.random.default_rng(0))
    take = generate_take(subject, action, 40, 12.5, np.random.default_rng(1))
    joints = take["joints"]
    assert joints.shape == (40, 17, 3) and np.isfinite(joints).all()
    lengths = bone_lengths(joints)
    np.testing.assert_allclose(
        lengths, np.broadcast_to(lengths[0], lengths.shape), atol=1e-6
    )  # rigid bones
    lowest_ankle = joints[:, [3, 6], 2].min(1)
    assert (lowest_ankle >= ANKLE_HEIGHT_MM - 1e-6).all()
    if action != "jumping":
        assert lowest_ankle.max() < ANKLE_HEIGHT_MM + 50
    assert (joints[:, 10, 2] > joints[:, 0, 2]).all()  # head above pelvis
    speed = np.linalg.norm(np.diff(joints, axis=0), axis=-1) * 12.5  # mm/s
    assert speed.max() < 12000  # no jumps between frames


def test_motion_style_is_a_persons_own_and_stays_within_joint_limits():
    """Two people perform the same take differently; with strength 0 they move alike."""
    subject = make_subject("S1", np.random.default_rng(0))

    def take(style):
        return generate_take(subject, "boxing", 30, 12.5, np.random.default_rng(4), style)

    def relative(t):
        return t["joints"] - t["joints"][:, :1]

    plain = take(None)
    assert np.allclose(relative(take(draw_style(np.random.default_rng(1), 0.0))), relative(plain))
    a, b = take(draw_style(np.random.default_rng(1))), take(draw_style(np.random.default_rng(2)))
    assert np.linalg.norm(relative(a) - relative(b), axis=-1).mean() > 30  # mm
    for styled in (a, b):
        knees = styled["angles_deg"][:, [2, 5], 0]
        assert knees.min() >= JOINT_LIMITS_DEG["knee"][0][0] - 1e-6 and knees.max() <= 1e-6
        assert np.isfinite(styled["joints"]).all()


def test_subjects_differ_in_body_and_looks_but_are_left_right_symmetric():
    a, b = (make_subject(n, np.random.default_rng([0, 2, i])) for i, n in ((1, "S1"), (5, "S5")))
    assert a.lengths_mm != b.lengths_mm
    assert np.abs(a.shirt - b.shirt).max() > 1 or np.abs(a.trousers - b.trousers).max() > 1
    offsets = a.rest_offsets()
    np.testing.assert_allclose(
        np.linalg.norm(offsets[1:4], axis=1), np.linalg.norm(offsets[4:7], axis=1)
    )
    np.testing.assert_allclose(
        np.linalg.norm(offsets[11:14], axis=1), np.linalg.norm(offsets[14:17], axis=1)
    )


def test_left_and_right_limbs_are_drawn_alike():
    # A subject facing the camera, mirrored left/right, renders as the mirror image of itself
    # up to the face: limbs carry no side-specific colour.
    from metricpose.studio import render

    looks = render._looks(make_subject("S7", np.random.default_rng(3)))[0]
    names = [c[:2] for c in render._CAPSULES]
    pairs = [((14, 15), (11, 12)), ((15, 16), (12, 13)), ((1, 2), (4, 5)), ((2, 3), (5, 6))]
    for right, left in pairs:
        np.testing.assert_array_equal(looks[names.index(right)], looks[names.index(left)])


def test_rendering_is_deterministic_and_shows_the_person():
    subject = make_subject("S1", np.random.default_rng(0))
    take = generate_take(subject, "waving", 6, 12.5, np.random.default_rng(1))
    cam = default_rig()[1]
    backdrop = CameraBackdrop(Studio.random(np.random.default_rng(2)), cam)
    a, boxes, _ = render_take(subject, backdrop, cam, take["joints"], take["rotations"], 64, seed=5)
    b, _, _ = render_take(subject, backdrop, cam, take["joints"], take["rotations"], 64, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    # The person is at the centre of the crop: the centre differs from an empty studio there.
    empty = backdrop.crops(boxes, 64, np.full((6, 2), 1e9)).numpy()
    diff = np.abs(a.astype(float) - empty).mean(-1)
    assert diff[:, 24:40, 28:36].mean() > 20  # torso
    assert diff[:, :3, :3].mean() < 6  # corners: background (+ noise)


@pytest.mark.parametrize("backdrop", ["studio", "random"])
def test_takes_rendered_together_equal_takes_rendered_alone(backdrop):
    """generate renders a person's takes in one batch; each take keeps its own random streams
    (backgrounds, noise), so its crops are those of rendering it alone, also when a take is
    longer than a chunk of random draws or a batch of bodies."""
    subject = make_subject("S2", np.random.default_rng(0))
    takes = [
        generate_take(subject, action, frames, 12.5, np.random.default_rng(i))
        for i, (action, frames) in enumerate([("waving", 5), ("boxing", 40), ("walking", 7)])
    ]
    cam = default_rig()[2]
    shown = (
        CameraBackdrop(Studio.random(np.random.default_rng(2)), cam)
        if backdrop == "studio"
        else None
    )
    together = render_takes(
        subject, shown, cam, [(t["joints"], t["rotations"], 10 + i) for i, t in enumerate(takes)],
        32, batch=24,
    )  # fmt: skip
    for i, take in enumerate(takes):
        alone, boxes, silhouettes = render_take(
            subject, shown, cam, take["joints"], take["rotations"], 32, seed=10 + i
        )
        np.testing.assert_array_equal(together[i][0], alone)
        np.testing.assert_array_equal(together[i][1], boxes)
        np.testing.assert_array_equal(together[i][2], silhouettes)
    # The streams matter: another seed gives other crops.
    other, _, _ = render_take(
        subject, shown, cam, takes[0]["joints"], takes[0]["rotations"], 32, seed=99
    )
    assert not np.array_equal(other, together[0][0])


def test_random_backdrop_differs_per_crop_and_hides_the_camera():
    """With backdrop None every crop gets its own background: the corners (background) of one
    camera's consecutive frames differ as much as two cameras' do, unlike the studio's, where
    one camera's corners barely change within a take."""
    subject = make_subject("S1", np.random.default_rng(0))
    take = generate_take(subject, "waving", 6, 12.5, np.random.default_rng(1))
    studio = Studio.random(np.random.default_rng(2))
    views = {}
    for backdrop in ("studio", "random"):
        for v, cam in enumerate(default_rig()[:2]):
            shown = CameraBackdrop(studio, cam) if backdrop == "studio" else None
            crops, _, _ = render_take(
                subject, shown, cam, take["joints"], take["rotations"], 32, seed=v
            )
            views[backdrop, v] = crops[:, :4, :4].reshape(6, -1).astype(float)

    def spread(a, b):  # mean absolute difference of corners, frame t of a vs frame t+1 of b
        return np.abs(a[:-1] - b[1:]).mean()

    studio_within, studio_across = (
        spread(*[views["studio", 0]] * 2),
        spread(views["studio", 0], views["studio", 1]),
    )
    random_within, random_across = (
        spread(*[views["random", 0]] * 2),
        spread(views["random", 0], views["random", 1]),
    )
    assert studio_within < 10 < studio_across
    assert random_within > 20 and random_across > 20
    again, _, _ = render_take(
        subject, None, default_rig()[0], take["joints"], take["rotations"], 32, seed=0
    )
    np.testing.assert_array_equal(again[:, :4, :4].reshape(6, -1), views["random", 0])
    with pytest.raises(ValueError, match="unknown backdrop 'green'"):
        synth_config("tiny", backdrop="green")


def test_generate_is_seeded_and_resumable(tmp_path):
    config = synth_config("tiny", frames=4, actions=["walking"], subjects=["S1"])
    generate(tmp_path / "a", config, progress=False)
    generate(tmp_path / "b", config, progress=False)
    fa = np.load(tmp_path / "a" / "S1_walking_0" / "frames" / "cam0.npy")
    np.testing.assert_array_equal(
        fa, np.load(tmp_path / "b" / "S1_walking_0" / "frames" / "cam0.npy")
    )
    other = synth_config("tiny", frames=4, actions=["walking"], subjects=["S1"], seed=1)
    generate(tmp_path / "c", other, progress=False)
    assert not np.array_equal(fa, np.load(tmp_path / "c" / "S1_walking_0" / "frames" / "cam0.npy"))
    # Complete sequences are kept, not rendered again.
    marker = tmp_path / "a" / "S1_walking_0" / "frames" / "cam0.npy"
    before = marker.stat().st_mtime_ns
    generate(tmp_path / "a", config, progress=False)
    assert marker.stat().st_mtime_ns == before


def test_random_rig_has_valid_distinct_cameras():
    cams = random_rig(6, np.random.default_rng(0))
    centres = np.stack([c.center_world for c in cams])
    assert len({tuple(np.round(c)) for c in centres}) == 6
    for cam in cams:
        assert cam.world_to_camera(np.array([0.0, 0.0, 1000.0]))[2] > 3000  # looks at the studio


def test_unknown_preset_and_action():
    with pytest.raises(ValueError, match="unknown preset"):
        synth_config("huge")
    with pytest.raises(ValueError, match="unknown actions"):
        synth_config("tiny", actions=["moonwalk"])


def test_a_rig_file_sets_cameras(tmp_path):
    import json

    from metricpose.data.format import SequenceFolder

    cams = [c.to_dict() for c in random_rig(2, np.random.default_rng(4), image_size=800)]
    (tmp_path / "rig.json").write_text(json.dumps(cams))
    config = synth_config(
        "tiny", frames=2, actions=["waving"], subjects=["S5"], rig_file=str(tmp_path / "rig.json")
    )
    generate(tmp_path / "d", config, progress=False)
    seq = SequenceFolder(tmp_path / "d" / "S5_waving_0")
    assert [c.to_dict() for c in seq.cameras] == cams
    cams[1]["R"] = [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    (tmp_path / "rig.json").write_text(json.dumps(cams))
    with pytest.raises(ValueError, match="rig.json.*not a rotation"):
        generate(tmp_path / "e", config, progress=False)


def test_a_studio_records_its_test_people_and_scoring_defaults_to_them(tmp_path):
    from metricpose.config import load_config
    from metricpose.errors import InputError
    from metricpose.evaluate import default_test_subjects
    from metricpose.studio.generate import TEST_SUBJECTS, TRAIN_SUBJECTS

    # Ten test people, none of them a training person: with two, which two decided the regime.
    assert len(TEST_SUBJECTS) == 10 and not set(TEST_SUBJECTS) & set(TRAIN_SUBJECTS)
    config = load_config("baseline")
    studio = tmp_path / "studio"
    generate(
        studio,
        synth_config("tiny", frames=2, actions=["walking"], subjects=["S1", "S52"]),
        progress=False,
    )
    assert default_test_subjects(studio, config) == TEST_SUBJECTS
    # Any other dataset (no studio.json): the config's test subjects.
    assert default_test_subjects(tmp_path, config) == ["S9", "S11"]
    (studio / "studio.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="studio.json: not a studio description"):
        default_test_subjects(studio, config)
    (studio / "studio.json").write_text("[1, 2")
    with pytest.raises(InputError, match="studio.json: not valid JSON"):
        default_test_subjects(studio, config)
    (studio / "studio.json").write_text('{"test_subjects": "S9"}')
    with pytest.raises(InputError, match="'test_subjects' must be a list"):
        default_test_subjects(studio, config)
