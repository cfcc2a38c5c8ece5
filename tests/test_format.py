import json
import shutil

import numpy as np
import pytest

from metricpose.cli import main
from metricpose.data.format import (
    DatasetError,
    SequenceFolder,
    check_dataset,
    list_sequences,
    open_dataset,
    write_sequence,
)


@pytest.fixture
def dataset(tiny_studio, tmp_path):
    """A private copy of the tiny studio that a test may corrupt."""
    out = tmp_path / "data"
    shutil.copytree(tiny_studio, out)
    return out


def first_sequence(root):
    return list_sequences(root)[0]


def test_round_trip_of_the_studio(tiny_studio):
    seqs = open_dataset(tiny_studio)
    assert len(seqs) == 12
    seq = seqs[0]
    assert seq.labelled and seq.has_frames and seq.has_masks
    assert seq.frames("cam0").shape == (16, 64, 64, 3)
    # The silhouettes: the person covers part of each crop, never all of it.
    masks = np.stack([seq.masks(cam.name) for cam in seq.cameras])
    assert masks.dtype == bool and masks.shape == (4, 16, 64, 64)
    assert 0.05 < masks.mean(axis=(2, 3)).min() and masks.mean(axis=(2, 3)).max() < 0.6
    # Memory-mapped, not read: a plain ndarray over the file's mapping.
    assert isinstance(seq.frames("cam0").base, np.memmap)
    # Boxes contain the projected joints.
    for v, cam in enumerate(seq.cameras):
        uv = cam.project(seq.poses_3d.astype(np.float64))
        box = seq.boxes[v]
        assert (uv[..., 0] >= box[:, None, 0]).all() and (uv[..., 0] <= box[:, None, 2]).all()
        assert (uv[..., 1] >= box[:, None, 1]).all() and (uv[..., 1] <= box[:, None, 3]).all()


def test_check_data_cli_summary(tiny_studio, capsys):
    assert main(["check-data", str(tiny_studio)]) == 0
    out = capsys.readouterr().out
    assert "12 sequences, 192 frames, 768 crops" in out
    assert "labelled: 192 frames (100.0%)" in out


def corrupt_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("corrupt", "file", "message"),
    [
        (
            lambda s: (s / "poses_3d.npy").unlink() or (s / "boxes.npy").unlink(),
            "boxes.npy",
            "file is missing",
        ),
        (
            lambda s: np.save(s / "poses_3d.npy", np.zeros((15, 17, 3)) + 100),
            "poses_3d.npy",
            "expected shape",
        ),
        (lambda s: np.save(s / "boxes.npy", np.zeros((4, 15, 4))), "boxes.npy", "expected shape"),
        (
            lambda s: np.save(s / "frames" / "cam2.npy", np.zeros((15, 64, 64, 3), np.uint8)),
            "cam2.npy",
            "expected shape",
        ),
        (
            lambda s: np.save(s / "frames" / "cam1.npy", np.zeros((16, 64, 64, 3), np.float32)),
            "cam1.npy",
            "uint8",
        ),
        (
            lambda s: np.save(s / "masks" / "cam3.npy", np.zeros((16, 64, 65), bool)),
            "masks/cam3.npy",
            "expected shape",
        ),
        (
            lambda s: np.save(s / "masks" / "cam0.npy", np.zeros((16, 64, 64), np.float32)),
            "masks/cam0.npy",
            "expected bool",
        ),
        (lambda s: (s / "masks" / "cam2.npy").unlink(), "masks/cam2.npy", "masks file missing"),
        (
            lambda s: np.save(
                s / "poses_3d.npy",
                np.where(np.arange(17)[:, None] == 3, np.nan, np.load(s / "poses_3d.npy")),
            ),
            "poses_3d.npy",
            "NaN",
        ),
        (
            lambda s: np.save(s / "poses_3d.npy", np.load(s / "poses_3d.npy") / 1000),
            "poses_3d.npy",
            "metres",
        ),
        (
            lambda s: corrupt_json(
                s / "cameras.json", lambda c: c[1].update(R=[[1, 0, 0], [0, 1, 0], [0, 0, -1]])
            ),
            "cameras.json",
            "not a rotation",
        ),
        (
            lambda s: corrupt_json(s / "cameras.json", lambda c: c[0]["K"][0].__setitem__(0, -5.0)),
            "cameras.json",
            "focal lengths must be positive",
        ),
        (
            lambda s: corrupt_json(s / "cameras.json", lambda c: c[0].pop("R")),
            "cameras.json",
            "lacks R",
        ),
        (
            lambda s: corrupt_json(s / "meta.json", lambda m: m.update(num_frames="16")),
            "meta.json",
            "wrong type",
        ),
        (
            lambda s: corrupt_json(s / "meta.json", lambda m: m.update(subject="../../etc")),
            "meta.json",
            "safe name",
        ),
        (lambda s: (s / "cameras.json").write_text("[{"), "cameras.json", "not valid JSON"),
        (
            lambda s: (s / "boxes.npy").write_bytes(b"\x93NUMPY garbage"),
            "boxes.npy",
            "not a readable",
        ),
    ],
)
def test_bad_input_gives_one_clear_error_naming_the_file(dataset, corrupt, file, message):
    seq = first_sequence(dataset)
    corrupt(seq)
    with pytest.raises(DatasetError, match=message) as info:
        SequenceFolder(seq)
    assert file in str(info.value)
    summary, problems = check_dataset(dataset)
    assert summary["sequences"] == 11 and len(problems) == 1 and file in problems[0]


def test_check_data_cli_reports_problems_and_fails(dataset, capsys):
    np.save(first_sequence(dataset) / "boxes.npy", np.zeros((4, 3, 4)))
    assert main(["check-data", str(dataset)]) == 1
    assert "boxes.npy: expected shape" in capsys.readouterr().err


def test_half_written_sequences_are_not_taken_as_complete(dataset):
    partial = dataset / ".S1_walking_0.partial-123"
    shutil.copytree(first_sequence(dataset), partial)
    (dataset / "S9_boxing_0" / "meta.json").unlink()
    names = [p.name for p in list_sequences(dataset)]
    assert len(names) == 11 and "S9_boxing_0" not in names
    assert any("incomplete" in p for p in check_dataset(dataset)[1])


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")


def test_a_full_disk_names_the_file_and_leaves_no_partial_sequence(dataset, tmp_path, monkeypatch):
    import errno

    seq = SequenceFolder(first_sequence(dataset))
    frames = {c.name: seq.frames(c.name)[:] for c in seq.cameras}
    real_save = np.save

    def save_until_frames(path, array):
        if "frames" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(np, "save", save_until_frames)
    out = tmp_path / "copy"
    out.mkdir()
    with pytest.raises(OSError, match=r"copy/S1_copy/frames/.*\.npy: cannot write \(disk full\)"):
        write_sequence(out, "S1_copy", seq.meta, seq.cameras, seq.boxes, frames, seq.poses_3d)
    assert list(out.iterdir()) == []


def test_links_out_of_the_dataset_are_refused(dataset, tmp_path):
    """Decided: a sequence folder or file that links outside the dataset is an error (README)."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(first_sequence(dataset)), elsewhere)
    (dataset / "S1_linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DatasetError, match="outside the dataset"):
        SequenceFolder(dataset / "S1_linked")
    seq = list_sequences(dataset)[1]
    frames = seq / "frames" / "cam1.npy"
    shutil.move(str(frames), tmp_path / "cam1.npy")
    frames.symlink_to(tmp_path / "cam1.npy")
    with pytest.raises(DatasetError, match="cam1.npy: a link"):
        SequenceFolder(seq)
