import numpy as np

from metricpose import skeleton as sk


def test_structure():
    assert len(sk.JOINT_NAMES) == len(sk.PARENTS) == 17
    assert sk.PARENTS[sk.ROOT] == -1
    assert all(p < c for c, p in enumerate(sk.PARENTS) if p >= 0)  # parents come first
    assert len(sk.BONES) == 16
    flip = np.array(sk.FLIP_INDEX)
    np.testing.assert_array_equal(flip[flip], np.arange(17))
    for left, right in sk.FLIP_PAIRS:
        assert sk.JOINT_NAMES[left].replace("left", "right") == sk.JOINT_NAMES[right]


def assert_plausible_h36m_order(poses):
    """(N, 17, 3) poses in our order: the spine chain rises from the pelvis along the
    pelvis -> thorax axis, the head joint is the highest, and the hips sit beside the pelvis."""
    rel = sk.root_relative(poses)
    up = rel[:, 8] / np.linalg.norm(rel[:, 8], axis=-1, keepdims=True)
    height = np.einsum("njc,nc->nj", rel, up)
    assert (np.diff(height[:, [0, 7, 8, 10]], axis=1) > 0).all()
    assert (height[:, 9] > height[:, 7]).all()
    assert (height.argmax(axis=1) == 10).all()
    bone = np.linalg.norm(rel[:, 8], axis=-1)
    assert (np.linalg.norm(rel[:, [1, 4]], axis=-1) < 0.5 * bone[:, None]).all()


def test_mpi_inf_3dhp_order_maps_onto_ours(fixtures_dir):
    for split in ("train", "test"):
        data = np.load(fixtures_dir / "mpi_inf_3dhp" / f"test_3dhp_{split}.npz")
        ours, exists = sk.remap_joints(data["S"][..., :3], sk.FROM_MPI_INF_3DHP_17)
        assert exists.all()
        assert_plausible_h36m_order(ours)
        # Swapping 3DHP's "head" and "head top" would break the order: the check can fail.
        swapped = ours[:, [*range(9), 10, 9, *range(11, 17)]]
        try:
            assert_plausible_h36m_order(swapped)
        except AssertionError:
            continue
        raise AssertionError("a wrong mapping passed the plausibility check")


def test_h36m_order_of_the_fixture_matches_our_names(fixtures_dir):
    data = np.load(fixtures_dir / "h36m" / "test_h36m_body3d.npz")
    assert_plausible_h36m_order(data["S"][..., :3])


def test_coco_mapping_marks_missing_joints():
    coco = np.arange(17 * 2, dtype=float).reshape(17, 2)
    ours, exists = sk.remap_joints(coco, sk.FROM_COCO)
    assert not exists[[0, 7, 8, 10]].any() and exists.sum() == 13
    assert np.isnan(ours[0]).all()
    assert sk.COCO_NAMES[sk.FROM_COCO[13]] == "left_wrist"
    for ours_index, coco_index in enumerate(sk.FROM_COCO):
        if coco_index != sk.MISSING and ours_index != 9:
            assert sk.COCO_NAMES[coco_index] == sk.JOINT_NAMES[ours_index]


def test_panoptic_bodies_map_and_project_into_the_hd_cameras(fixtures_dir):
    import json

    from metricpose.cameras import Camera

    root = fixtures_dir / "panoptic" / "160906_band1"
    scene = json.loads((root / "hdPose3d_stage1_coco19" / "body3DScene_00000168.json").read_text())
    bodies = np.array([np.array(b["joints19"]).reshape(19, 4) for b in scene["bodies"]])
    # Joints that Panoptic could not reconstruct carry confidence -1; keep whole bodies only.
    joints = bodies[(bodies[..., 3] > 0).all(1), :, :3] * 10.0  # cm -> mm
    assert len(joints) == 1
    ours, exists = sk.remap_joints(joints, sk.FROM_PANOPTIC_19)
    assert exists.sum() == 15 and not exists[[7, 10]].any()
    rel = ours - ours[:, :1]
    hips = np.linalg.norm(rel[:, [1, 4]], axis=-1)
    assert (hips > 50).all() and (hips < 200).all()
    np.testing.assert_allclose(hips[:, 0], hips[:, 1], rtol=0.25)  # left and right hip alike
    assert (np.linalg.norm(rel[:, 8], axis=-1) > 2 * hips.max(1)).all()  # thorax far above

    calib = json.loads((root / "calibration_160906_band1.json").read_text())
    inside = []
    for c in (c for c in calib["cameras"] if c["type"] == "hd"):
        cam = Camera(K=c["K"], R=c["R"], t=np.array(c["t"]).ravel() * 10.0, width=c["resolution"][0],
                     height=c["resolution"][1], dist=np.array(c["distCoef"]).ravel(), name=c["name"])  # fmt: skip
        pts = joints.reshape(-1, 3)
        in_front = cam.world_to_camera(pts)[:, 2] > 0
        uv = cam.project(pts)
        inside.append(in_front.all() and ((uv >= 0) & (uv < [cam.width, cam.height])).all())
    # About half of the HD cameras see the whole person; with t left in centimetres (or a
    # wrong K) next to none would. The fixture has no 2D annotations to test more closely.
    assert np.mean(inside) > 0.4
