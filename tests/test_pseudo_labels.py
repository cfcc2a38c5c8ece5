"""Pseudo-labels from a fixed teacher: triangulation, the labels folder, and how training uses
them (true labels win; only instants without granted truth are pseudo-labelled)."""

import json
import shutil

import numpy as np
import pytest
import torch

from metricpose import pseudo_labels
from metricpose.cli import main
from metricpose.config import ConfigError, load_config
from metricpose.data.dataset import MultiViewDataset
from metricpose.data.format import DatasetError, open_dataset
from metricpose.errors import InputError
from metricpose.evaluate import predict_dataset
from metricpose.pseudo_labels import (
    INDEX_FILE,
    smoothed_along_time,
    triangulated_poses,
    write_pseudo_labels,
)
from metricpose.skeleton import FLIP_INDEX
from metricpose.train import supervised_instants


class Oracle(torch.nn.Module):
    """Predicts every crop of a dataset perfectly: its true root-relative camera-frame pose."""

    def __init__(self, data) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.table = {}
        for seq in open_dataset(data):
            for v, cam in enumerate(seq.cameras):
                frames = seq.frames(cam.name)
                for t in range(seq.meta.num_frames):
                    pose = seq.poses_camera(t, (v,))[0]
                    self.table[frames[t].tobytes()] = pose
                    # The crop mirrored left-right shows the mirrored pose.
                    mirrored = pose[list(FLIP_INDEX)] * np.array([-1.0, 1.0, 1.0])  # by hand
                    self.table[frames[t][:, ::-1].tobytes()] = mirrored

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        poses = [self.table[image.numpy().tobytes()] for image in images]
        pose = torch.tensor(np.stack(poses), dtype=torch.float32)
        return {"pose_cam": pose, "embedding": pose.flatten(1)}


@pytest.fixture(scope="module")
def oracle(tiny_studio):
    return Oracle(tiny_studio)


@pytest.fixture()
def teacher(oracle, monkeypatch, tmp_path):
    """A teacher checkpoint path whose model is the oracle, trained on S1 and S5."""
    config = {"data": {"train_subjects": ["S1", "S5"]}}
    monkeypatch.setattr(pseudo_labels, "load_model", lambda path: (oracle, config))
    path = tmp_path / "teacher" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"the oracle's weights")
    return path


def test_perfect_views_triangulate_to_the_true_pose(tiny_studio, oracle):
    """Placing every view at the root triangulated from the boxes shifts all views by the same
    world vector, so perfect predictions give the true pose exactly, whatever the box."""
    seq = next(s for s in open_dataset(tiny_studio) if s.meta.subject == "S5")
    world, residual, fallback = triangulated_poses(oracle, seq)
    truth = seq.poses_3d - seq.poses_3d[:, :1]
    assert np.abs((world - world[:, :1]) - truth).max() < 1e-3  # mm; float32 predictions
    assert not fallback.any() and residual.max() < 1e-3  # px: the views agree
    assert np.linalg.norm(world[:, 0] - seq.poses_3d[:, 0], axis=-1).max() > 1.0  # the box root


def test_views_that_disagree_have_a_residual(tiny_studio, oracle):
    """One view's prediction off by 100 mm sideways at every joint but the root: the
    reprojection residual grows from ~0 to several px, the same in every frame's scale."""
    seq = next(s for s in open_dataset(tiny_studio) if s.meta.subject == "S5")

    class OneViewOff(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor, self.calls = torch.nn.Parameter(torch.zeros(1)), 0

        def forward(self, images):
            out = oracle(images)["pose_cam"]
            self.calls += 1
            if self.calls == 1:  # the first camera's (one batch holds all 16 frames)
                out[:, 1:, 0] += 100.0
            return {"pose_cam": out}

    _, residual, _ = triangulated_poses(OneViewOff(), seq, mirror=False)
    assert (residual > 0.5).all()


class SidewaysBiased(torch.nn.Module):
    """The oracle, with every joint but the root 80 mm to the camera's right of the truth."""

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, images):
        out = dict(self.oracle(images))
        out["pose_cam"] = out["pose_cam"].clone()
        out["pose_cam"][:, 1:, 0] += 80.0
        return out


def test_the_mirrored_crops_cancel_a_teacher_s_sideways_bias(tiny_studio, oracle):
    """The biased teacher errs to the other side on the mirrored crop; mirrored back and
    averaged, the two answers are the truth. Without mirroring the bias stays."""
    seq = next(s for s in open_dataset(tiny_studio) if s.meta.subject == "S5")
    truth = seq.poses_3d - seq.poses_3d[:, :1]
    error = {}
    for mirror in (False, True):
        world, _, _ = triangulated_poses(SidewaysBiased(oracle), seq, mirror=mirror)
        error[mirror] = np.abs((world - world[:, :1]) - truth).max()
    assert error[True] < 1e-3 and error[False] > 20.0


def test_the_flip_test_at_evaluation_cancels_the_same_bias(tiny_studio, oracle):
    """``predict_dataset(flip_test=True)`` averages each crop's answer with its mirror image's;
    the embedding stays the plain crop's."""
    test = MultiViewDataset(tiny_studio, subjects=["S9"], num_views=1)
    plain = predict_dataset(SidewaysBiased(oracle), test, frame_stride=3)
    flipped = predict_dataset(SidewaysBiased(oracle), test, frame_stride=3, flip_test=True)
    assert np.abs(plain.pose_pred[:, 1:, 0] - plain.pose_gt[:, 1:, 0] - 80.0).max() < 1e-3
    assert np.abs(flipped.pose_pred - flipped.pose_gt).max() < 1e-3
    np.testing.assert_array_equal(flipped.embedding, plain.embedding)


class LimbsToBody(torch.nn.Module):
    """The oracle, with each elbow, wrist, knee and ankle bent about a third of the way towards
    the thorax or the pelvis, bones kept at their length: the error every view of a teacher shares
    (docs/design.md, eighth round)."""

    CHAINS = (
        (11, 12, 13, 8),
        (14, 15, 16, 8),
        (1, 2, 3, 0),
        (4, 5, 6, 0),
    )  # root, mid, end, centre

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, images):
        out = dict(self.oracle(images))
        pose = out["pose_cam"].clone()
        for root, mid, end, centre in self.CHAINS:
            bent = pose + 0.35 * (pose[:, centre : centre + 1] - pose)
            for parent, child in ((root, mid), (mid, end)):
                length = torch.linalg.norm(pose[:, child] - pose[:, parent], dim=-1, keepdim=True)
                direction = bent[:, child] - pose[:, parent]
                direction = direction / torch.linalg.norm(direction, dim=-1, keepdim=True)
                pose[:, child] = pose[:, parent] + length * direction
        out["pose_cam"] = pose
        return out


def test_the_silhouettes_undo_much_of_an_error_all_views_share(
    tiny_studio, oracle, teacher, monkeypatch, tmp_path
):
    """Triangulation keeps an error that every view makes; the silhouettes do not share it.
    Sequences without masks keep their triangulated labels."""
    config = {"data": {"train_subjects": ["S1", "S5"]}}
    monkeypatch.setattr(pseudo_labels, "load_model", lambda path: (LimbsToBody(oracle), config))
    error = {}
    for fit in (False, True):
        write_pseudo_labels(teacher, tiny_studio, tmp_path / str(fit), silhouettes=fit)
        labels = [
            np.load(tmp_path / str(fit) / f"{s.name}.npy")
            for s in open_dataset(tiny_studio, ["S5"])
        ]
        truth = [s.poses_3d for s in open_dataset(tiny_studio, ["S5"])]
        rel = lambda p: p - p[:, :1]  # noqa: E731
        error[fit] = np.mean(
            [
                np.linalg.norm(rel(a) - rel(b), axis=-1).mean()
                for a, b in zip(labels, truth, strict=True)
            ]
        )
    assert error[False] > 50.0 and error[True] < 0.9 * error[False]  # 60 -> 50 mm
    unmasked = tmp_path / "unmasked"
    shutil.copytree(tiny_studio, unmasked)
    for masks in unmasked.glob("*/masks"):
        shutil.rmtree(masks)
    index = write_pseudo_labels(teacher, unmasked, tmp_path / "unmasked_labels")
    assert not any(entry["fitted_to_silhouettes"] for entry in index["sequences"].values())
    for path in (tmp_path / "False").glob("*.npy"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "unmasked_labels" / path.name), np.load(path)
        )


def test_smoothing_along_time_keeps_steady_motion_and_removes_jitter():
    fps, T = 12.5, 40
    steady = np.linspace(0.0, 390.0, T)[:, None, None] * np.ones((T, 17, 3))  # 10 mm per frame
    jitter = 30.0 * (-1.0) ** np.arange(T)[:, None, None] * np.ones((1, 17, 3))
    smoothed = smoothed_along_time(steady + jitter, fps, sigma_s=0.16)  # 2 frames
    inner = slice(8, -8)  # the edges repeat the first and last frame
    assert np.abs(smoothed[inner] - steady[inner]).max() < 1.0
    assert np.abs((steady + jitter)[inner] - steady[inner]).max() == 30.0
    poses = steady + jitter
    assert smoothed_along_time(poses, fps, 0.0) is poses


def test_the_cli_labels_the_teacher_s_training_subjects_and_resumes(
    tiny_studio, teacher, tmp_path, capsys
):
    out = tmp_path / "labels"
    args = [
        "pseudo-label",
        "--checkpoint",
        str(teacher),
        "--data",
        str(tiny_studio),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    index = json.loads((out / INDEX_FILE).read_text())
    expected = {s.name for s in open_dataset(tiny_studio, ["S1", "S5"])}
    assert set(index["sequences"]) == expected  # S9 (a test subject) is left alone
    assert {p.stem for p in out.glob("*.npy")} == expected
    assert index["teacher"] == str(teacher.resolve())
    assert index["mirror"] is True and index["smooth_s"] == 0.16 and index["silhouettes"] is True
    assert "data.pseudo_labels=" in capsys.readouterr().out
    # A second call keeps the finished sequences; another teacher is refused.
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")} == written
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    with pytest.raises(InputError, match="another teacher"):
        write_pseudo_labels(other, tiny_studio, out)
    capsys.readouterr()
    assert main([*args, "--no-mirror"]) == 2
    message = "written with other settings (mirror=True, smooth_s=0.16, silhouettes=True)"
    assert message in capsys.readouterr().err
    assert main([*args, "--no-silhouettes"]) == 2
    with pytest.raises(InputError, match="other settings"):
        write_pseudo_labels(teacher, tiny_studio, out, smooth_s=0.0)
    teacher.write_bytes(b"the same file trained again")  # the demo retrained the teacher
    with pytest.raises(InputError, match="another teacher"):
        write_pseudo_labels(teacher, tiny_studio, out)


def _shifted_labels(data, folder, teacher, shift_mm=(500.0, 0.0, 0.0)):
    """Pseudo-labels that differ from the truth by a known world shift of every joint but the
    root, so that a pseudo-labelled pose is told apart from a true one."""
    write_pseudo_labels(teacher, data, folder, smooth_s=0.0, silhouettes=False)
    shift = np.zeros((17, 3), dtype=np.float32)
    shift[1:] = shift_mm
    for path in folder.glob("*.npy"):
        np.save(path, np.load(path) + shift)
    return shift


def _without_and_with(data_root, labels: str, folder):
    """The training instants of S1 and S5 under a label protocol, without and with the
    pseudo-labels in ``folder``: (dataset, supervised, validation) for each."""
    data = {"labels": labels, "train_subjects": ["S1", "S5"], "pseudo_labels_keep": 1.0}
    runs = []
    for pseudo in (None, str(folder)):
        ds = MultiViewDataset(data_root, subjects=["S1", "S5"])
        runs.append((ds, *supervised_instants(ds, dict(data, pseudo_labels=pseudo), seed=0)))
    return runs


def test_training_uses_pseudo_labels_only_where_no_truth_is_granted(tiny_studio, teacher, tmp_path):
    folder = tmp_path / "labels"
    shift = _shifted_labels(tiny_studio, folder, teacher)
    (plain, supervised_plain, val_plain), (ds, supervised, val) = _without_and_with(
        tiny_studio, "S1", folder
    )
    subject = np.array(ds.subjects)[ds.subject_index]
    # S5 joins the supervised instants; S1's and the validation takes are unchanged.
    assert np.array_equal(supervised, supervised_plain | (subject == "S5"))
    assert np.array_equal(val, val_plain)
    for i in (np.flatnonzero(subject == "S5")[3], np.flatnonzero(supervised_plain)[0], val[0]):
        truth = plain[int(i)]
        item = ds[int(i)]
        gap = (item["pose_world"] - truth["pose_world"]).numpy()
        assert item["labelled"]
        # pseudo-labelled: the known shift (up to the box root); granted truth: exact
        if subject[i] == "S5":
            rel = gap - gap[:1]
            assert np.abs(rel - (shift - shift[:1])).max() < 1e-2
        else:
            assert np.abs(gap).max() == 0.0


def test_with_a_share_of_labels_the_granted_frames_keep_their_truth(tiny_studio, teacher, tmp_path):
    folder = tmp_path / "labels"
    _shifted_labels(tiny_studio, folder, teacher)
    (plain, granted, _), (ds, supervised, val) = _without_and_with(
        tiny_studio, "fraction:0.25", folder
    )
    assert supervised[granted].all() and (supervised | np.isin(np.arange(len(ds)), val)).all()
    for i in np.flatnonzero(granted)[:5]:
        assert torch.equal(ds[int(i)]["pose_world"], plain[int(i)]["pose_world"])
    pseudo = np.flatnonzero(~granted & ~np.isin(np.arange(len(ds)), val))[0]
    assert not torch.allclose(ds[int(pseudo)]["pose_world"], plain[int(pseudo)]["pose_world"])


def test_a_share_keeps_the_instants_whose_views_agree_best(tiny_studio, teacher, tmp_path):
    folder = tmp_path / "labels"
    write_pseudo_labels(teacher, tiny_studio, folder)
    index = json.loads((folder / INDEX_FILE).read_text())
    rng = np.random.default_rng(0)
    for entry in index["sequences"].values():
        entry["residual_px"] = rng.uniform(0, 10, entry["frames"]).round(3).tolist()
    entry["residual_px"][0] = None  # the views' average stood in: dropped first
    (folder / INDEX_FILE).write_text(json.dumps(index))
    data = {"labels": "S1", "train_subjects": ["S1", "S5"], "pseudo_labels": str(folder)}
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S5"])
    everyone, _ = supervised_instants(ds, dict(data, pseudo_labels_keep=1.0), seed=0)
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S5"])
    half, _ = supervised_instants(ds, dict(data, pseudo_labels_keep=0.5), seed=0)
    subject = np.array(ds.subjects)[ds.subject_index]
    candidates = np.flatnonzero(subject == "S5")
    residual = np.array([
        index["sequences"][ds.sequences[ds.seq_index[i]].name]["residual_px"][ds.frame_index[i]]
        for i in candidates
    ], dtype=float)  # fmt: skip
    residual[np.isnan(residual)] = np.inf
    kept = candidates[half[candidates]]
    assert len(kept) == len(candidates) // 2 and everyone[candidates].all()
    assert residual[half[candidates]].max() <= residual[~half[candidates]].min()
    assert np.array_equal(half[subject == "S1"], everyone[subject == "S1"])


def test_bad_pseudo_label_folders_are_named(tiny_studio, teacher, tmp_path):
    data = {"labels": "S1", "train_subjects": ["S1", "S5"], "pseudo_labels_keep": 1.0}
    folder = tmp_path / "labels"

    def use(folder):
        ds = MultiViewDataset(tiny_studio, subjects=["S1", "S5"])
        supervised_instants(ds, dict(data, pseudo_labels=str(folder)), seed=0)

    with pytest.raises(DatasetError, match=f"{folder / INDEX_FILE}: missing"):
        use(folder)
    write_pseudo_labels(teacher, tiny_studio, folder)
    path = sorted(folder.glob("S5*.npy"))[0]
    good = np.load(path)
    np.save(path, good[:-1])
    with pytest.raises(DatasetError, match=f"{path}: expected shape"):
        use(folder)
    bad = good.copy()
    bad[2, 5, 1] = np.nan
    np.save(path, bad)
    with pytest.raises(DatasetError, match=f"{path}: contains NaN"):
        use(folder)
    path.write_bytes(b"not an array")
    with pytest.raises(DatasetError, match=f"{path}: cannot read pseudo-labels"):
        use(folder)
    index = json.loads((folder / INDEX_FILE).read_text())
    index["sequences"][path.stem]["frames"] += 1
    (folder / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(
        DatasetError, match=f"{path.stem} is listed with 17 frames, the dataset has 16"
    ):
        use(folder)


def test_the_pseudo_labelled_preset_needs_its_labels_folder():
    with pytest.raises(ConfigError, match="data.pseudo_labels must be given"):
        load_config("pseudo_labelled")
    config = load_config("pseudo_labelled", ["data.pseudo_labels=labels"])
    assert config["loss"]["metric_weight"] == 0.0 and config["batch"]["labelled_fraction"] == 1.0
    with pytest.raises(ConfigError, match="pseudo_labels_keep"):
        load_config("pseudo_labelled", ["data.pseudo_labels=labels", "data.pseudo_labels_keep=0"])
