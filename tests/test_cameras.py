import numpy as np
import pytest
import torch

from metricpose.cameras import Camera, crop_intrinsics, distort, look_at, project_points, undistort


def h36m_camera(cam: dict) -> Camera:
    """Our Camera from an entry of the Human3.6M cameras.pkl (T is the centre, in metres).

    The pickle's R maps camera to world: x_cam = Rᵀ·(x_world − T) points all four cameras at
    the room (tests/test_prepare.py checks this geometry)."""
    R = cam["R"].T
    K = np.array(
        [[cam["f"][0, 0], 0, cam["c"][0, 0]], [0, cam["f"][1, 0], cam["c"][1, 0]], [0, 0, 1]]
    )
    k, p = cam["k"].ravel(), cam["p"].ravel()
    return Camera(
        K=K, R=R, t=-R @ cam["T"].ravel() * 1000, width=cam["w"], height=cam["h"],
        dist=[k[0], k[1], p[0], p[1], k[2]], dist_model="h36m", name=cam["id"],
    )  # fmt: skip


def fixture_frames(data):
    for i, name in enumerate(data["imgname"]):
        subject, folder = name.split("/")[:2]
        yield i, subject, folder.split(".")[1]


def test_h36m_fixture_projects_within_a_hundredth_of_a_pixel(h36m_fixture):
    data, cameras = h36m_fixture
    for i, subject, cam_id in fixture_frames(data):
        cam = h36m_camera(cameras[(subject, cam_id)])
        uv = cam.project_camera(data["S"][i, :, :3] * 1000)
        assert np.abs(uv - data["part"][i, :, :2]).max() < 0.01


def test_h36m_fixture_needs_the_h36m_tangential_model(h36m_fixture):
    # The same numbers read as OpenCV coefficients, or no distortion at all, miss the
    # annotations: the test above could fail.
    data, cameras = h36m_fixture
    worst_opencv, worst_pinhole = 0.0, 0.0
    for i, subject, cam_id in fixture_frames(data):
        cam = h36m_camera(cameras[(subject, cam_id)])
        pts = data["S"][i, :, :3] * 1000
        opencv = project_points(pts, cam.K, cam.dist, "opencv")
        pinhole = project_points(pts, cam.K)
        worst_opencv = max(worst_opencv, np.abs(opencv - data["part"][i, :, :2]).max())
        worst_pinhole = max(worst_pinhole, np.abs(pinhole - data["part"][i, :, :2]).max())
    assert worst_opencv > 0.05
    assert worst_pinhole > 1.0


def test_h36m_world_frame_round_trip(h36m_fixture):
    data, cameras = h36m_fixture
    i, subject, cam_id = next(fixture_frames(data))
    cam = h36m_camera(cameras[(subject, cam_id)])
    pts_cam = data["S"][i, :, :3] * 1000
    world = cam.camera_to_world(pts_cam)
    np.testing.assert_allclose(cam.world_to_camera(world), pts_cam, atol=1e-9)
    # The pickle's T is the camera centre in world metres.
    np.testing.assert_allclose(
        cam.center_world, cameras[(subject, cam_id)]["T"].ravel() * 1000, atol=1e-6
    )
    np.testing.assert_allclose(cam.project(world), data["part"][i, :, :2], atol=0.01)


def test_mpi_inf_3dhp_fixture_pinhole_within_two_pixels(fixtures_dir):
    import pickle

    root = fixtures_dir / "mpi_inf_3dhp"
    for split in ("train", "test"):
        data = np.load(root / f"test_3dhp_{split}.npz")
        with open(root / f"cameras_{split}.pkl", "rb") as f:
            cams = pickle.load(f, encoding="latin1")
        for i, name in enumerate(data["imgname"]):
            key = name[: name.rindex("_")] if split == "train" else name.split("_")[0]
            c = cams[key]
            K = np.array(
                [[c["f"][0, 0], 0, c["c"][0, 0]], [0, c["f"][1, 0], c["c"][1, 0]], [0, 0, 1]]
            )
            uv = project_points(data["S"][i, :, :3] * 1000, K)
            assert np.abs(uv - data["part"][i, :, :2]).max() < 2.0, name


def test_hand_computed_projection():
    K = np.array([[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]])
    # (100, -50, 2000) mm -> x/z = 0.05, y/z = -0.025 -> u = 550, v = 375
    np.testing.assert_allclose(
        project_points(np.array([[100.0, -50.0, 2000.0]]), K), [[550.0, 375.0]]
    )
    # k1 = 0.1: r² = 0.003125, radial = 1.0003125
    dist = np.array([0.1, 0, 0, 0, 0])
    np.testing.assert_allclose(
        project_points(np.array([[100.0, -50.0, 2000.0]]), K, dist),
        [[500 + 50 * 1.0003125, 400 - 25 * 1.0003125]],
    )
    # OpenCV tangential p1 = 0.01 at (x, y) = (0.05, -0.025): dx = 2·p1·x·y = -2.5e-5, dy = p1·(r² + 2y²) = 4.375e-5
    xy = distort(np.array([0.05, -0.025]), np.array([0, 0, 0.01, 0, 0]), "opencv")
    np.testing.assert_allclose(xy, [0.05 - 2.5e-5, -0.025 + 4.375e-5], atol=1e-12)
    # Human3.6M's: x' = x(1 + p1·y) + p2·r², y' = y(1 + p1·y) + p1·r² with p1 = 0.01, p2 = 0
    xy = distort(np.array([0.05, -0.025]), np.array([0, 0, 0.01, 0, 0]), "h36m")
    np.testing.assert_allclose(
        xy, [0.05 * (1 - 2.5e-4), -0.025 * (1 - 2.5e-4) + 3.125e-5], atol=1e-12
    )


@pytest.mark.parametrize("model", ["opencv", "h36m"])
def test_numpy_and_torch_agree_and_undistort_inverts(model):
    rng = np.random.default_rng(0)
    pts = rng.uniform([-800, -900, 3000], [800, 900, 6000], size=(5, 17, 3))
    K = np.tile(np.array([[1145.0, 0, 512], [0, 1143.0, 515], [0, 0, 1]]), (5, 1, 1))
    dist = np.array([-0.2, 0.24, -0.0014, -0.001, -0.003])
    uv_np = project_points(pts, K, np.tile(dist, (5, 1)), model)
    uv_t = project_points(
        torch.as_tensor(pts), torch.as_tensor(K), torch.as_tensor(np.tile(dist, (5, 1))), model
    )
    assert isinstance(uv_t, torch.Tensor)
    np.testing.assert_allclose(uv_t.numpy(), uv_np, rtol=1e-12)
    xy = pts[..., :2] / pts[..., 2:]
    np.testing.assert_allclose(undistort(distort(xy, dist, model), dist, model), xy, atol=1e-9)


def test_unproject_round_trip():
    R, t = look_at(np.array([4000.0, 3000.0, 1600.0]), np.array([0.0, 0.0, 1000.0]))
    cam = Camera(K=[[1100, 0, 500], [0, 1100, 500], [0, 0, 1]], R=R, t=t, width=1000, height=1000,
                 dist=[-0.1, 0.05, 0.001, -0.001, 0.0])  # fmt: skip
    pts = np.random.default_rng(1).uniform(-700, 700, size=(50, 3)) + [0, 0, 1000]
    uv = cam.project(pts)
    depth = cam.world_to_camera(pts)[:, 2]
    np.testing.assert_allclose(cam.unproject(uv, depth), pts, atol=1e-5)


def test_crop_intrinsics_match_cropping_the_full_image_projection():
    K = np.array([[1145.0, 0, 512], [0, 1143.0, 515], [0, 0, 1]])
    pts = np.random.default_rng(2).uniform([-500, -900, 4000], [500, 900, 5000], size=(17, 3))
    box = np.array([300.0, 200.0, 700.0, 600.0])  # 400 px square
    full = project_points(pts, K)
    crop = project_points(pts, crop_intrinsics(K, box, 64))
    expected = (full - box[:2] + 0.5) * 64 / 400 - 0.5
    np.testing.assert_allclose(crop, expected, atol=1e-9)


def test_look_at_makes_a_camera_that_sees_its_target_centred():
    R, t = look_at(np.array([3000.0, -4000.0, 1800.0]), np.array([0.0, 0.0, 1000.0]))
    cam = Camera(
        K=[[1000, 0, 499.5], [0, 1000, 499.5], [0, 0, 1]], R=R, t=t, width=1000, height=1000
    )
    np.testing.assert_allclose(cam.project(np.array([0.0, 0.0, 1000.0])), [499.5, 499.5], atol=1e-9)
    # World up appears as image up (smaller v).
    assert cam.project(np.array([0.0, 0.0, 1500.0]))[1] < 499.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"R": np.diag([1.0, 1.0, -1.0])}, "not a rotation"),
        ({"R": np.eye(3) * 1.1}, "not a rotation"),
        ({"K": [[-1000, 0, 500], [0, 1000, 500], [0, 0, 1]]}, "focal lengths must be positive"),
        ({"t": [0, np.nan, 0]}, "NaN"),
        ({"dist_model": "fisheye"}, "dist_model"),
    ],
)
def test_bad_cameras_are_refused(change, message):
    params = dict(
        K=[[1000, 0, 500], [0, 1000, 500], [0, 0, 1]],
        R=np.eye(3),
        t=[0, 0, 0],
        width=1000,
        height=1000,
    )
    params.update(change)
    with pytest.raises(ValueError, match=message):
        Camera(**params)
