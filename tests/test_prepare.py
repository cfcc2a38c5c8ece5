"""Converters: the real fixtures, and format-faithful official layouts built in a temporary folder."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.io import savemat

from metricpose.cameras import crop_intrinsics, project_points
from metricpose.cli import main
from metricpose.data.dataset import MultiViewDataset
from metricpose.data.format import SequenceFolder, open_dataset
from metricpose.errors import InputError
from metricpose.prepare import common, custom, h36m, mpi_inf_3dhp, panoptic
from metricpose.prepare.common import convert
from metricpose.skeleton import FROM_MPI_INF_3DHP_17, FROM_MPI_INF_3DHP_28, JOINT_NAMES
from metricpose.studio.rig import default_rig


def crop_projection(seq: SequenceFolder, view: int, frame: int) -> np.ndarray:
    """(17, 2) crop pixels of a converted sequence's pose in one camera."""
    cam = seq.cameras[view]
    K = crop_intrinsics(cam.K, seq.boxes[view, frame], seq.meta.crop_size)
    pose_cam = cam.world_to_camera(seq.poses_3d[frame].astype(np.float64))
    return project_points(pose_cam, K, cam.dist, cam.dist_model)


def to_crop(points_px: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    return (points_px - box[:2] + 0.5) * size / (box[2] - box[0]) - 0.5


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_video(path: Path, frames: np.ndarray, fps: int = 50) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def blob_frames(cam, points_world: np.ndarray, radius: int = 14) -> np.ndarray:
    """Black frames with a white disk at each frame's projected first joint, (T, H, W, 3)."""
    uv = cam.project(points_world[:, 0])
    yy, xx = np.mgrid[: cam.height, : cam.width]
    frames = np.zeros((len(uv), cam.height, cam.width, 3), np.uint8)
    for i, (u, v) in enumerate(uv):
        frames[i][(xx - u) ** 2 + (yy - v) ** 2 <= radius**2] = 255
    return frames


def blob_centre(crop: np.ndarray, threshold: float = 128) -> np.ndarray:
    w = crop[..., 0].astype(np.float64)
    w = np.where(w > threshold, w, 0)
    yy, xx = np.mgrid[: crop.shape[0], : crop.shape[1]]
    return np.array([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])


def walking_poses(h36m_fixture, subject: str, T: int) -> np.ndarray:
    """(T, 17, 3) world mm: a fixture pose moved 20 mm per frame in the subject's studio."""
    data, _ = h36m_fixture
    cam = h36m.load_cameras()[subject][0]
    world = cam.camera_to_world(data["S"][0, :, :3] * 1000.0)
    return world[None] + np.arange(T)[:, None, None] * np.array([20.0, 0.0, 0.0])


# --- shared pieces ------------------------------------------------------------------------


def test_crop_puts_an_image_point_where_the_crop_intrinsics_say():
    u, v = 231, 118
    yy, xx = np.mgrid[:300, :400]
    blob = 255 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 5.0**2))
    image = np.repeat(blob[..., None], 3, axis=2).astype(np.uint8)
    box = np.array([180.5, 60.25, 300.5, 180.25])  # 120 px square -> 48 px crop
    crop = common.crop(image, box, 48)
    expected = to_crop(np.array([u, v], float), box, 48)
    np.testing.assert_allclose(blob_centre(crop, threshold=0), expected, atol=0.05)
    K = crop_intrinsics(np.eye(3), box, 48)  # a unit "camera" maps (u, v, 1) to the crop
    np.testing.assert_allclose((K @ [u, v, 1.0])[:2], expected)


def test_crop_outside_the_image_is_black():
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = common.crop(image, np.array([-50.0, -50.0, 50.0, 50.0]), 20)
    assert crop[:8, :8].max() == 0 and crop[12:, 12:].min() == 200


def test_pose_boxes_are_squares_around_the_joints_ignoring_nan():
    pts = np.array([[10.0, 20.0], [110.0, 60.0], [np.nan, np.nan]])
    box = common.pose_boxes(pts, margin=1.2)
    np.testing.assert_allclose(box, [60.5 - 60, 40.5 - 60, 60.5 + 60, 40.5 + 60])


def test_arrays_only_unpickler_refuses_code(tmp_path):
    good = tmp_path / "cams.pkl"
    good.write_bytes(pickle.dumps({"a": {"R": np.eye(3)}}))
    np.testing.assert_array_equal(common.load_arrays_pickle(good)["a"]["R"], np.eye(3))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(warnings.warn))  # any importable callable would do
    with pytest.raises(InputError, match="evil.pkl.*does not unpickle arbitrary"):
        common.load_arrays_pickle(evil)


# --- Human3.6M ----------------------------------------------------------------------------


def test_shipped_h36m_calibration_matches_the_fixture_pickle(h36m_fixture):
    data, pkl = h36m_fixture
    shipped = h36m.load_cameras()
    assert sorted(shipped) == sorted(h36m.SUBJECTS)
    for subject, cams in shipped.items():
        for cam in cams:
            ref = pkl[(subject, cam.name)]
            # The pickle's R is applied as x_cam = Rᵀ·(x_world − T): taken as world → camera it
            # would turn two of the four cameras away from the room (see the next test).
            np.testing.assert_allclose(cam.R, ref["R"].T, atol=1e-6)
            np.testing.assert_allclose(cam.center_world, ref["T"].ravel() * 1000, atol=0.01)
            np.testing.assert_allclose(np.diag(cam.K)[:2], ref["f"].ravel(), atol=1e-3)
            np.testing.assert_allclose(cam.K[:2, 2], ref["c"].ravel(), atol=1e-3)
            k, p = ref["k"].ravel(), ref["p"].ravel()
            np.testing.assert_allclose(cam.dist, [k[0], k[1], p[0], p[1], k[2]], atol=1e-7)
    for i, name in enumerate(data["imgname"]):
        subject, camera = name.split("/")[0], name.split("/")[1].split(".")[1]
        cam = next(c for c in shipped[subject] if c.name == camera)
        uv = cam.project_camera(data["S"][i, :, :3] * 1000)
        assert np.abs(uv - data["part"][i, :, :2]).max() < 0.01


def test_h36m_cameras_look_at_the_room_and_fixture_feet_stand_on_the_floor(h36m_fixture):
    data, _ = h36m_fixture
    shipped = h36m.load_cameras()
    for cams in shipped.values():
        for cam in cams:
            to_centre = np.array([0.0, 0.0, 1000.0]) - cam.center_world
            cos = cam.R[2] @ to_centre / np.linalg.norm(to_centre)
            assert np.degrees(np.arccos(cos)) < 15  # optical axis (row 3 of R) at the room
    for i, name in enumerate(data["imgname"]):
        subject, camera = name.split("/")[0], name.split("/")[1].split(".")[1]
        cam = next(c for c in shipped[subject] if c.name == camera)
        world = cam.camera_to_world(data["S"][i, :, :3] * 1000)
        assert np.linalg.norm(world[0, :2]) < 1500  # pelvis inside the capture area
        assert 0 < world[[3, 6], 2].min() < 150  # an ankle just above the floor (z = 0)


def test_h36m_mmpose_fixture_converts_and_reprojects_onto_the_2d_annotations(
    fixtures_dir, h36m_fixture, tmp_path
):
    data, _ = h36m_fixture
    root = fixtures_dir / "h36m"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # S7's 1000x1002 frame vs its 1000x1000 calibration
        counts = convert(
            h36m.mmpose_sequences(root, root / "test_h36m_body3d.npz"), tmp_path, 64, progress=False
        )
    assert counts == {"written": 4, "skipped": 0}
    for i, name in enumerate(data["imgname"]):
        subject, folder = name.split("/")[:2]
        seq = SequenceFolder(tmp_path / f"{subject}_{folder.split('.')[0].split('_', 1)[1]}")
        assert seq.meta.subject == subject and seq.meta.extra["source_frames"] == [
            int(name[-10:-4]) - 1
        ]
        box = seq.boxes[0, 0]
        expected = to_crop(data["part"][i, :, :2], box, 64)
        assert np.abs(crop_projection(seq, 0, 0) - expected).max() < 0.01
        image = np.asarray(Image.open(root / name).convert("RGB"))
        # boxes.npy stores float32 boxes: the crop may differ by one grey level at a few pixels.
        diff = seq.frames(seq.cameras[0].name)[0].astype(int) - common.crop(image, box, 64)
        assert np.abs(diff).max() <= 1


def build_h36m_official(root: Path, h36m_fixture, T: int = 12) -> dict[str, np.ndarray]:
    """S1 'Directions 1' (videos 2 frames longer than the poses), S11 'Directions' (camera
    54138969's damaged video absent) and S11 'Directions 1' (complete), in the official layout."""
    from cdflib.cdfwrite import CDF

    poses = {}
    for subject, take, extra in (
        ("S1", "Directions 1", 2),
        ("S11", "Directions", 0),
        ("S11", "Directions 1", 0),
    ):
        ours = walking_poses(h36m_fixture, subject, T)
        full = np.repeat(ours[:, :1], 32, axis=1)  # the 15 unused joints sit on the pelvis
        full[:, list(h36m.FROM_H36M_32)] = ours
        pose_dir = root / subject / "MyPoseFeatures" / "D3_Positions"
        pose_dir.mkdir(parents=True, exist_ok=True)
        cdf = CDF(str(pose_dir / f"{take}.cdf"), cdf_spec={"Majority": "Row_major"})
        cdf.write_var(
            {"Variable": "Pose", "Data_Type": CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
             "Dim_Sizes": [T, 96]},
            var_attrs={}, var_data=full.reshape(1, T, 96),
        )  # fmt: skip
        cdf.close()
        for cam in h36m.load_cameras()[subject]:
            if (subject, take, cam.name) in h36m.DAMAGED_VIDEOS:
                continue
            moving = np.concatenate([ours, np.repeat(ours[-1:], extra, axis=0)])
            write_video(
                root / subject / "Videos" / f"{take}.{cam.name}.mp4", blob_frames(cam, moving)
            )
        poses[subject] = ours
    return poses


@pytest.mark.slow
def test_h36m_official_layout_converts_resumes_and_reports_irregularities(h36m_fixture, tmp_path):
    root, out = tmp_path / "h36m", tmp_path / "out"
    poses = build_h36m_official(root, h36m_fixture)
    with pytest.warns(UserWarning) as record:
        sequences = list(h36m.official_sequences(root, ["S1", "S11"], stride=2))
        convert(sequences, out, 64, progress=False)
    messages = " ".join(str(w.message) for w in record)
    assert "12 pose frames but videos have [14, 14, 14, 14]" in messages
    assert "S11 Directions: leaving out the known damaged video of camera 54138969" in messages
    s1, s11 = SequenceFolder(out / "S1_Directions_1"), SequenceFolder(out / "S11_Directions")
    assert s1.meta.extra["source_frames"] == [0, 2, 4, 6, 8, 10] and s1.meta.fps == 25.0
    assert s1.meta.action == "Directions" and s11.meta.cameras == [
        "55011271",
        "58860488",
        "60457274",
    ]
    # The rule matches the exact take: the other Directions take of S11 keeps every camera.
    assert SequenceFolder(out / "S11_Directions_1").meta.cameras == [
        c.name for c in h36m.load_cameras()["S11"]
    ]
    assert messages.count("damaged video") == 1
    np.testing.assert_allclose(s1.poses_3d, poses["S1"][::2], atol=1e-3)
    for seq in (s1, s11):
        for v, cam in enumerate(seq.cameras):
            for t in range(seq.meta.num_frames):
                found = blob_centre(seq.frames(cam.name)[t])
                assert np.linalg.norm(found - crop_projection(seq, v, t)[0]) < 1.0

    # Resume: complete sequences are kept, a half-written one is redone, the result is identical.
    before = tree_digest(out)
    (out / ".S11_Directions.partial-999").mkdir()
    (out / "S11_Directions" / "meta.json").unlink()  # as if killed before the rename
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = convert(
            h36m.official_sequences(root, ["S1", "S11"], stride=2), out, 64, progress=False
        )
    assert counts == {"written": 1, "skipped": 2}
    assert tree_digest(out) == before


def test_h36m_official_layout_without_frames_needs_no_videos(h36m_fixture, tmp_path):
    root = tmp_path / "h36m"
    build_h36m_official(root, h36m_fixture, T=6)
    for video in root.rglob("*.mp4"):
        video.unlink()
    assert main(["prepare", "h36m", "--root", str(root), "--out", str(tmp_path / "o"),
                 "--subjects", "S1,S11", "--no-frames", "--no-progress"]) == 0  # fmt: skip
    seq = SequenceFolder(tmp_path / "o" / "S1_Directions_1")
    assert not seq.has_frames and seq.labelled and len(seq.cameras) == 4


def test_h36m_bad_inputs_name_the_file(h36m_fixture, tmp_path, capsys):
    root = tmp_path / "h36m"
    build_h36m_official(root, h36m_fixture, T=6)
    cdf = root / "S1" / "MyPoseFeatures" / "D3_Positions" / "Directions 1.cdf"
    video = root / "S1" / "Videos" / "Directions 1.55011271.mp4"
    video.write_bytes(video.read_bytes()[:300])  # truncated
    with pytest.raises(InputError, match=r"Directions 1\.55011271\.mp4: unreadable"):
        list(h36m.official_sequences(root, ["S1"]))
    cdf.write_bytes(b"not a cdf")
    with pytest.raises(InputError, match=r"Directions 1\.cdf: unreadable CDF"):
        list(h36m.official_sequences(root, ["S1"]))
    assert (
        main(["prepare", "h36m", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a failed conversion leaves no empty folder


# --- MPI-INF-3DHP -------------------------------------------------------------------------


def test_3dhp_mmpose_cameras_without_a_common_frame_are_one_clear_error(tmp_path):
    """Two cameras of one sequence whose listed frames never coincide: an error naming the
    annotation file and the sequence (it used to index with an empty float array)."""
    names = ["S1_Seq1_Cam0_000001.jpg", "S1_Seq1_Cam2_000002.jpg"]
    np.savez(tmp_path / "ann.npz", imgname=np.array(names), center=np.full((2, 2), 50.0),
             scale=np.ones(2), part=np.zeros((2, 17, 3)), S=np.ones((2, 17, 4)))  # fmt: skip
    camera = {"f": np.full(2, 100.0), "c": np.full(2, 50.0), "w": 100, "h": 100,
              "R": np.eye(3), "T": np.array([0.0, 0.0, 3.0])}  # fmt: skip
    calib = {"S1_Seq1_Cam0": camera, "S1_Seq1_Cam2": camera}
    (tmp_path / "cameras_train.pkl").write_bytes(pickle.dumps(calib))
    with pytest.raises(InputError, match=r"ann\.npz: S1_Seq1: no frame is listed for all"):
        list(
            mpi_inf_3dhp.mmpose_sequences(
                tmp_path, tmp_path / "ann.npz", tmp_path / "cameras_train.pkl"
            )
        )
    # With a frame in common the same files convert.
    names[1] = "S1_Seq1_Cam2_000001.jpg"
    np.savez(tmp_path / "ann.npz", imgname=np.array(names), center=np.full((2, 2), 50.0),
             scale=np.ones(2), part=np.zeros((2, 17, 3)), S=np.ones((2, 17, 4)))  # fmt: skip
    sequences = list(
        mpi_inf_3dhp.mmpose_sequences(
            tmp_path, tmp_path / "ann.npz", tmp_path / "cameras_train.pkl"
        )
    )
    assert [s.source_frames for s in sequences] == [[0]]


def test_3dhp_mmpose_fixtures_convert_onto_their_2d_annotations(fixtures_dir, tmp_path):
    root = fixtures_dir / "mpi_inf_3dhp"
    for split in ("train", "test"):
        data = np.load(root / f"test_3dhp_{split}.npz")
        out = tmp_path / split
        convert(
            mpi_inf_3dhp.mmpose_sequences(root, root / f"test_3dhp_{split}.npz", root / f"cameras_{split}.pkl"),
            out, 64, progress=False,
        )  # fmt: skip
        seqs = open_dataset(out)
        assert len(seqs) == 2
        for seq, part in zip(seqs, data["part"], strict=True):
            ours = part[list(FROM_MPI_INF_3DHP_17), :2]
            expected = to_crop(ours, seq.boxes[0, 0], 64)
            scale = 64 / (seq.boxes[0, 0, 2] - seq.boxes[0, 0, 0])
            assert np.abs(crop_projection(seq, 0, 0) - expected).max() < 2.0 * scale
            if split == "train":
                # x_cam = R·x_world + t puts the ankles near the floor of the studio (y = 0).
                ankles = seq.poses_3d[0][[3, 6], 1]
                assert np.abs(ankles).max() < 300

    # mmpose's test poses are annot3, not the univ_annot3 the official protocol scores: recorded
    # per sequence, and evaluate warns that its PCK/AUC are not the published protocol's.
    from metricpose.checkpoint import build_model, save_model
    from metricpose.config import load_config
    from metricpose.evaluate import evaluate_checkpoint

    assert {s.meta.extra["poses"] for s in open_dataset(tmp_path / "test")} == {"annot3"}
    config = load_config("baseline", ["model.regressor_width=32", "model.embedding_dim=8"])
    save_model(
        tmp_path / "m.pt",
        build_model(config, pretrained=False).state_dict(),
        config,
        ["S1"],
        0,
        crop_size=64,
    )
    with pytest.warns(UserWarning, match=r"TS1, TS2 hold annot3 poses.*not comparable"):
        scores = evaluate_checkpoint(tmp_path / "m.pt", tmp_path / "test", ["TS1", "TS2"])
    assert scores["headline"] == "overall"  # 3DHP's "All" row: every valid frame pooled


def calibration_text(cameras) -> str:
    lines = ["Skeletool Camera Calibration File V1.0"]
    for i, cam in enumerate(cameras):
        K4, E = np.eye(4), np.eye(4)
        K4[:3, :3] = cam.K
        E[:3, :3], E[:3, 3] = cam.R, cam.t
        lines += [f"name          {i}", "  sensor      10 10", f"  size        {cam.width} {cam.height}",
                  "  animated    0", "  intrinsic   " + " ".join(f"{v!r}" for v in K4.ravel().tolist()),
                  "  extrinsic   " + " ".join(f"{v!r}" for v in E.ravel().tolist()), "  radial      0"]  # fmt: skip
    return "\n".join(lines) + "\n"


def build_3dhp_training(root: Path, h36m_fixture, T: int = 8) -> tuple[list, np.ndarray]:
    rig = default_rig(14, image_size=2048)
    world = walking_poses(h36m_fixture, "S1", T)
    seq = root / "S2" / "Seq1"
    seq.mkdir(parents=True)
    (seq / "camera.calibration").write_text(calibration_text(rig))
    annot3 = np.empty((14, 1), dtype=object)
    for i, cam in enumerate(rig):
        full = np.zeros((T, 28, 3))
        full[:, list(FROM_MPI_INF_3DHP_28)] = cam.world_to_camera(world)
        annot3[i, 0] = full.reshape(T, 84)
    savemat(seq / "annot.mat", {"annot3": annot3, "frames": np.arange(T)})
    return rig, world


def test_3dhp_training_layout_round_trips_poses_and_cameras(h36m_fixture, tmp_path):
    rig, world = build_3dhp_training(tmp_path / "3dhp", h36m_fixture)
    seqs = list(
        mpi_inf_3dhp.training_sequences(tmp_path / "3dhp", ["S2"], stride=3, with_frames=False)
    )
    assert len(seqs) == 1 and seqs[0].name == "S2_Seq1" and len(seqs[0].cameras) == 11
    convert(seqs, tmp_path / "out", 64, with_frames=False, progress=False)
    seq = SequenceFolder(tmp_path / "out" / "S2_Seq1")
    np.testing.assert_allclose(seq.poses_3d, world[::3], atol=1e-3)
    for ours, theirs in zip(seq.cameras, rig, strict=False):
        np.testing.assert_allclose(ours.K, theirs.K)
        np.testing.assert_allclose(ours.R, theirs.R, atol=1e-12)


def test_3dhp_views_that_disagree_are_refused(h36m_fixture, tmp_path):
    build_3dhp_training(tmp_path / "3dhp", h36m_fixture)
    calib = tmp_path / "3dhp" / "S2" / "Seq1" / "camera.calibration"
    rig = default_rig(14, image_size=2048)
    rig[3].t = rig[3].t + 200.0
    calib.write_text(calibration_text(rig))
    with pytest.raises(
        InputError, match="annot.mat: the 3D poses annotated for camera cam3 disagree"
    ):
        list(mpi_inf_3dhp.training_sequences(tmp_path / "3dhp", ["S2"], with_frames=False))
    calib.write_text("garbage\n")
    with pytest.raises(InputError, match="camera.calibration: no 'name' entries"):
        list(mpi_inf_3dhp.training_sequences(tmp_path / "3dhp", ["S2"], with_frames=False))


def test_3dhp_test_set_keeps_valid_frames_in_the_camera_frame(h36m_fixture, tmp_path):
    folder = tmp_path / "mpi_inf_3dhp_test_set" / "TS3"
    (folder / "imageSequence").mkdir(parents=True)
    cam = mpi_inf_3dhp.load_test_cameras()["TS3"]
    pose_cam = walking_poses(h36m_fixture, "S1", 5) - [0, 0, -3000.0]
    pose_cam = pose_cam - pose_cam[:, :1].mean(0) + [0.0, 0.0, 4000.0]
    theirs = np.zeros((5, 17, 3))
    theirs[:, list(FROM_MPI_INF_3DHP_17)] = pose_cam
    with h5py.File(folder / "annot_data.mat", "w") as f:  # MATLAB v7.3 stores (N, 1, 17, 3)
        f["annot3"] = theirs[:, None]
        f["univ_annot3"] = 0.9 * theirs[:, None]  # rescaled to the universal height
        f["valid_frame"] = np.array([[1], [0], [1], [1], [0]], dtype=np.float64)
    for i in range(5):
        Image.new("RGB", (cam.width, cam.height)).save(
            folder / "imageSequence" / f"img_{i + 1:06d}.jpg"
        )
    convert(mpi_inf_3dhp.testset_sequences(tmp_path), tmp_path / "out", 32, progress=False)
    seq = SequenceFolder(tmp_path / "out" / "TS3")
    assert seq.meta.extra["source_frames"] == [0, 2, 3] and seq.has_frames
    np.testing.assert_allclose(seq.poses_3d, 0.9 * pose_cam[[0, 2, 3]], atol=1e-3)  # univ_annot3
    np.testing.assert_array_equal(seq.cameras[0].R, np.eye(3))
    expected = common.boxes_from_poses(seq.cameras, pose_cam[[0, 2, 3]])  # crops from annot3
    np.testing.assert_allclose(seq.boxes, expected, atol=1e-3)


def test_3dhp_test_set_splits_takes_by_activity_for_the_per_activity_table(h36m_fixture, tmp_path):
    """The official table scores each activity_annotation id (1-7) apart: every run of one
    activity among the valid frames becomes a sequence whose action is the activity."""
    folder = tmp_path / "TS2"
    folder.mkdir()
    pose_cam = walking_poses(h36m_fixture, "S1", 6)
    pose_cam = pose_cam - pose_cam[:, :1].mean(0) + [0.0, 0.0, 4000.0]
    theirs = np.zeros((6, 17, 3))
    theirs[:, list(FROM_MPI_INF_3DHP_17)] = pose_cam
    with h5py.File(folder / "annot_data.mat", "w") as f:
        f["annot3"] = f["univ_annot3"] = theirs[:, None]
        f["valid_frame"] = np.array([[1], [1], [0], [1], [1], [1]], dtype=np.float64)
        f["activity_annotation"] = np.array([[1], [1], [3], [3], [3], [6]], dtype=np.float64)
    found = list(mpi_inf_3dhp.testset_sequences(tmp_path, with_frames=False))
    assert [(s.name, s.subject, s.action, s.source_frames) for s in found] == [
        ("TS2_000", "TS2", "standing_walking", [0, 1]),
        ("TS2_001", "TS2", "sitting", [3, 4]),  # frame 2 is not valid
        ("TS2_002", "TS2", "sports", [5]),
    ]
    np.testing.assert_allclose(found[1].poses_world, pose_cam[[3, 4]], atol=1e-9)
    with h5py.File(folder / "annot_data.mat", "a") as f:
        del f["activity_annotation"]
        f["activity_annotation"] = np.array([[1], [1], [0], [3], [9], [6]], dtype=np.float64)
    with pytest.raises(InputError, match=r"annot_data.mat: activity_annotation must hold one id"):
        list(mpi_inf_3dhp.testset_sequences(tmp_path, with_frames=False))
    with h5py.File(folder / "annot_data.mat", "a") as f:
        del f["valid_frame"]
        f["valid_frame"] = np.zeros((6, 1))
    with pytest.raises(InputError, match=r"annot_data.mat: no valid frames"):
        list(mpi_inf_3dhp.testset_sequences(tmp_path, with_frames=False))


# --- CMU Panoptic -------------------------------------------------------------------------


def test_panoptic_fixture_without_frames(fixtures_dir, tmp_path):
    root = fixtures_dir / "panoptic" / "160906_band1"
    cams = ["00_00", "00_12", "00_24"]
    convert(
        panoptic.sequences(root, cams, with_frames=False),
        tmp_path,
        64,
        with_frames=False,
        progress=False,
    )
    seqs = open_dataset(tmp_path)
    raw = json.loads((root / "hdPose3d_stage1_coco19" / "body3DScene_00000168.json").read_text())
    assert len(seqs) == len(raw["bodies"])
    calib = {
        c["name"]: c
        for c in json.loads((root / "calibration_160906_band1.json").read_text())["cameras"]
    }
    for seq in seqs:
        assert seq.meta.extra["source_frames"] == [168, 169] and not seq.labelled
        assert {"spine", "head"} <= set(seq.meta.extra["missing_joints"])
        body = next(b for b in raw["bodies"] if b["id"] == seq.meta.extra["body_id"])
        j = np.asarray(body["joints19"]).reshape(19, 4)
        for cam, name in zip(seq.cameras, cams, strict=True):
            c = calib[name]
            theirs = np.asarray(c["R"]) @ j[:, :3].T + np.asarray(c["t"])  # cm
            px = project_points(theirs.T, np.asarray(c["K"]), np.asarray(c["distCoef"]))
            ours = cam.project(seq.poses_3d[0].astype(np.float64))
            assert np.nanmax(np.abs(ours[JOINT_NAMES.index("neck_nose")] - px[1])) < 1e-3
            assert np.nanmax(np.abs(ours[0] - px[2])) < 1e-3  # pelvis = body centre


# --- a user's own rig ---------------------------------------------------------------------


def test_custom_rig_with_image_folders_and_poses(h36m_fixture, tmp_path):
    rig = default_rig(3, image_size=320)
    world = walking_poses(h36m_fixture, "S1", 4)
    world = world - world[:, :1].mean(0) + [0.0, 0.0, 1000.0]
    root = tmp_path / "rig"
    root.mkdir()
    (root / "cameras.json").write_text(json.dumps([c.to_dict() for c in rig]))
    np.save(root / "poses_3d.npy", world)
    for cam in rig:
        (root / "images" / cam.name).mkdir(parents=True)
        for i, frame in enumerate(blob_frames(cam, world, radius=4)):
            Image.fromarray(frame).save(root / "images" / cam.name / f"{i:04d}.png")
    out = tmp_path / "out"
    assert main(["prepare", "custom", "--root", str(root), "--out", str(out), "--subject", "ana",
                 "--crop-size", "48", "--no-progress"]) == 0  # fmt: skip
    seq = SequenceFolder(out / "ana_capture")
    assert seq.labelled and seq.meta.cameras == [c.name for c in rig]
    for v, cam in enumerate(seq.cameras):
        for t in range(4):
            assert (
                np.linalg.norm(blob_centre(seq.frames(cam.name)[t]) - crop_projection(seq, v, t)[0])
                < 1.0
            )
    ds = MultiViewDataset(out, subjects=["ana"], num_views=2)
    assert ds[0]["images"].shape == (2, 48, 48, 3)

    (root / "images" / rig[1].name / "0003.png").unlink()
    with pytest.raises(InputError, match="disagree on the number of frames"):
        list(custom.sequences(root, "ana"))


def test_opencv_yaml_calibration(tmp_path):
    path = tmp_path / "cam_a.yaml"
    path.write_text(
        "%YAML:1.0\n---\nimage_width: 640\nimage_height: 480\n"
        "camera_matrix: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n"
        "   data: [ 500., 0., 320., 0., 505., 240., 0., 0., 1. ]\n"
        "distortion_coefficients: !!opencv-matrix\n   rows: 1\n   cols: 5\n   dt: d\n"
        "   data: [ -0.1, 0.01, 0.001, 0.002, 0. ]\n"
        "rvec: !!opencv-matrix\n   rows: 3\n   cols: 1\n   dt: d\n   data: [ 0., 1.5707963267948966, 0. ]\n"
        "tvec: !!opencv-matrix\n   rows: 3\n   cols: 1\n   dt: d\n   data: [ 10., 20., 3000. ]\n"
    )
    cam = custom.load_opencv_camera(path, "cam_a")
    assert cam.K[1, 1] == 505.0 and cam.width == 640 and cam.dist[3] == 0.002
    np.testing.assert_allclose(cam.R, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(cam.t, [10, 20, 3000])
    path.write_text(path.read_text().replace("rows: 3\n   cols: 3", "rows: 2\n   cols: 3"))
    with pytest.raises(InputError, match="cam_a.yaml"):
        custom.load_opencv_camera(path, "cam_a")


def test_format_allows_nan_only_in_declared_missing_joints(tmp_path):
    from metricpose.data.format import DatasetError, SequenceMeta, write_sequence

    cams = default_rig(2, image_size=200)
    poses = np.tile(walking_poses_like(), (3, 1, 1))
    poses[:, 7] = np.nan
    meta = SequenceMeta(
        "p1", "a", 10.0, 3, 32, [c.name for c in cams], {"missing_joints": ["spine"]}
    )
    boxes = np.tile([0.0, 0.0, 100.0, 100.0], (2, 3, 1))
    write_sequence(tmp_path, "ok", meta, cams, boxes, None, poses)
    assert not SequenceFolder(tmp_path / "ok").labelled
    meta.extra = {"missing_joints": ["thorax"]}
    write_sequence(tmp_path, "bad", meta, cams, boxes, None, poses)
    with pytest.raises(DatasetError, match="bad/poses_3d.npy: NaN or Inf .*joint 7"):
        SequenceFolder(tmp_path / "bad")


def walking_poses_like() -> np.ndarray:
    """A plausible (17, 3) standing pose in mm without the fixtures."""
    from metricpose.studio.body import forward_kinematics, make_subject

    offsets = make_subject("S1", np.random.default_rng(0)).rest_offsets()
    rotations = np.tile(np.eye(3), (1, 17, 1, 1))
    return forward_kinematics(offsets, rotations, np.array([[0.0, 0.0, 900.0]]))[0][0]


def converted_h36m_fixture(fixtures_dir: Path, out: Path) -> Path:
    """The Human3.6M fixture (mmpose layout) converted by `metricpose prepare`, 64 px crops."""
    root = fixtures_dir / "h36m"
    assert main(["prepare", "h36m", "--root", str(root), "--annotations",
                 str(root / "test_h36m_body3d.npz"), "--out", str(out), "--crop-size", "64",
                 "--no-progress"]) == 0  # fmt: skip
    return out


@pytest.mark.slow
def test_train_and_evaluate_run_on_the_converted_h36m_fixture(fixtures_dir, tmp_path, capsys):
    data = converted_h36m_fixture(fixtures_dir, tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--config", "baseline", "--data", str(data), "--out", str(run),
                 "--no-progress", "--set", "train.steps=3", "--set", "train.val_every=3",
                 "--set", "batch.size=4", "--set", "model.regressor_width=64",
                 "--set", "data.train_subjects=[S1,S5,S7]", "--set", "data.test_subjects=[S8]",
                 "--set", "data.labels=fraction:1.0", "--set", "batch.labelled_fraction=1.0"]) == 0  # fmt: skip
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(data),
                 "--subjects", "S8", "--out", str(scores)]) == 0  # fmt: skip
    result = json.loads(scores.read_text())
    assert result["count"] == 1 and np.isfinite(result["overall"]["mpjpe"])


def test_the_h36m_paper_recipe_trains_on_the_converted_fixture(fixtures_dir, tmp_path, capsys):
    """The recipe's full-width ImageNet ResNet-18 (a stand-in weights file with torchvision's
    layout) trains a few steps; without the weights file it refuses to start."""
    import torch
    import torchvision

    data = converted_h36m_fixture(fixtures_dir, tmp_path / "data")
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    # The baseline arm: the fixture's frames are single-view, the metric arms need two cameras.
    args = ["train", "--config", "baseline", "--recipe", "h36m_paper", "--data", str(data),
            "--no-progress", "--set", "train.steps=2", "--set", "train.val_every=2",
            "--set", "batch.size=4", "--set", "data.num_workers=0", "--set", "train.val_frames=2",
            "--set", "data.train_subjects=[S1,S5,S7]", "--set", "data.test_subjects=[S8]",
            # one frame per subject: S1's only take would be held out for validation
            "--set", "data.labels=fraction:1.0"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "no_weights")]) != 0
    assert "h36m_paper: model.weights must be given" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "run"), "--set", f"model.weights={weights}"]) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"]["width"] == 1.0 and config["model"]["weights"] == str(weights)
    assert config["data"]["test_subjects"] == ["S8"] and config["train"]["val_every"] == 2


def test_a_full_disk_or_unusable_output_stops_before_the_work(
    h36m_fixture, fixtures_dir, monkeypatch, tmp_path
):
    import collections

    root = fixtures_dir / "h36m"
    sequences = list(h36m.mmpose_sequences(root, root / "test_h36m_body3d.npz"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match="a_file"):
        convert(sequences, blocker / "out", 64, progress=False)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("metricpose.fileio.shutil.disk_usage", lambda p: usage(10**9, 10**9, 2**20))
    with pytest.raises(OSError, match=r"out: only 1 MB free; sequence S1_Directions_1 needs about"):
        convert(sequences, tmp_path / "out", 256, progress=False)
    assert not list((tmp_path / "out").iterdir())  # nothing half-written


@pytest.mark.slow
def test_a_killed_conversion_resumes_to_the_same_bytes(h36m_fixture, tmp_path):
    root = tmp_path / "h36m"
    build_h36m_official(root, h36m_fixture, T=40)
    command = [sys.executable, "-m", "metricpose.cli", "prepare", "h36m", "--root", str(root),
               "--subjects", "S1,S11", "--stride", "1", "--no-progress"]  # fmt: skip
    subprocess.run([*command, "--out", str(tmp_path / "straight")], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*command, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while (
        not (killed / "S1_Directions_1" / "meta.json").exists()
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # one sequence complete, the other not yet (sorted order)
    proc.wait()
    assert not (killed / "S11_Directions" / "meta.json").exists(), (
        "the conversion was not interrupted"
    )
    subprocess.run([*command, "--out", str(killed)], check=True, capture_output=True)
    assert tree_digest(killed) == tree_digest(tmp_path / "straight")
