"""Corrupt every input metricpose reads; each case must end in one InputError that names the file.

Cases are built from valid artefacts by named mutations (wrong types, shapes, NaN/Inf,
non-rotations, negative focal lengths, missing keys, metres for millimetres, truncation, junk
bytes), plus seeded random truncations. A test fails on any other exception (a traceback from
inside numpy/torch) and on a corrupt file that loads without complaint.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metricpose.data.format import SequenceFolder, SequenceMeta, write_sequence
from metricpose.errors import InputError
from metricpose.studio.rig import default_rig

T, S = 3, 16


def standing_pose() -> np.ndarray:
    from metricpose.studio.body import forward_kinematics, make_subject

    offsets = make_subject("S1", np.random.default_rng(0)).rest_offsets()
    return forward_kinematics(
        offsets, np.tile(np.eye(3), (1, 17, 1, 1)), np.array([[0.0, 0, 900]])
    )[0][0]


def valid_sequence(root: Path) -> Path:
    cams = default_rig(2, image_size=200)
    meta = SequenceMeta("S1", "walking", 10.0, T, S, [c.name for c in cams])
    boxes = np.tile([10.0, 10.0, 150.0, 150.0], (2, T, 1))
    frames = {c.name: np.zeros((T, S, S, 3), np.uint8) for c in cams}
    return write_sequence(
        root, "S1_walking", meta, cams, boxes, frames, np.tile(standing_pose(), (T, 1, 1))
    )


# --- mutations ------------------------------------------------------------------------------


def json_edit(name: str, edit: Callable[[object], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return apply


def set_key(key: str, value: object, camera: int | None = None) -> Callable[[object], object]:
    def edit(doc):
        target = doc[camera] if camera is not None else doc
        target[key] = value
        return doc

    return edit


def del_key(key: str, camera: int | None = None) -> Callable[[object], object]:
    def edit(doc):
        del (doc[camera] if camera is not None else doc)[key]
        return doc

    return edit


def npy_edit(name: str, edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        np.save(path, edit(np.load(path)))

    return apply


def raw_bytes(name: str, edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_bytes(edit(path.read_bytes()))

    return apply


def nan_at(arr: np.ndarray, value: float = np.nan) -> np.ndarray:
    out = arr.astype(np.float64).copy()
    out.flat[out.size // 2] = value
    return out.astype(arr.dtype)


def rotation_like(kind: str) -> list:
    R = np.eye(3)
    if kind == "scaled":
        R = 1.1 * R
    elif kind == "reflection":
        R = np.diag([1.0, 1.0, -1.0])
    elif kind == "sheared":
        R[0, 1] = 0.3
    elif kind == "zeros":
        R = np.zeros((3, 3))
    return R.tolist()


META_KEYS = {
    "subject": "S1",
    "action": "a",
    "fps": 10.0,
    "num_frames": T,
    "crop_size": S,
    "cameras": ["cam0", "cam1"],
}
CAMERA_KEYS = ("name", "K", "R", "t", "width", "height")


def _huge_header(path: Path) -> None:
    """An .npy whose header declares petabytes over a few bytes of data."""
    with open(path, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**6, 3)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)


SEQUENCE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {}
for key in META_KEYS:
    SEQUENCE_CASES[f"meta-missing-{key}"] = (json_edit("meta.json", del_key(key)), "meta.json")
    SEQUENCE_CASES[f"meta-wrong-type-{key}"] = (
        json_edit("meta.json", set_key(key, {"x": 1} if key != "cameras" else "cam0")),
        "meta.json",
    )
for key in ("fps", "num_frames", "crop_size"):
    for bad in (0, -3):
        SEQUENCE_CASES[f"meta-{key}-{bad}"] = (
            json_edit("meta.json", set_key(key, bad)),
            "meta.json",
        )
SEQUENCE_CASES.update({
    "meta-format": (json_edit("meta.json", set_key("format", "other")), "meta.json"),
    "meta-version": (json_edit("meta.json", set_key("version", 99)), "meta.json"),
    "meta-not-object": (json_edit("meta.json", lambda d: [d]), "meta.json"),
    "meta-subject-escapes": (json_edit("meta.json", set_key("subject", "../../etc")), "meta.json"),
    "meta-subject-slash": (json_edit("meta.json", set_key("subject", "a/b")), "meta.json"),
    "meta-subject-empty": (json_edit("meta.json", set_key("subject", "")), "meta.json"),
    "meta-cameras-empty": (json_edit("meta.json", set_key("cameras", [])), "meta.json"),
    "meta-cameras-renamed": (json_edit("meta.json", set_key("cameras", ["cam0", "camX"])), "cameras.json"),
    "meta-cameras-numbers": (json_edit("meta.json", set_key("cameras", [0, 1])), "meta.json"),
    "meta-num-frames-float": (json_edit("meta.json", set_key("num_frames", 3.5)), "meta.json"),
    "meta-num-frames-bool": (json_edit("meta.json", set_key("num_frames", True)), "meta.json"),
    "meta-too-many-frames": (json_edit("meta.json", set_key("num_frames", T + 1)), "boxes.npy"),
    "meta-missing-joints-type": (json_edit("meta.json", set_key("missing_joints", "spine")), "meta.json"),
    "meta-missing-joints-unknown": (json_edit("meta.json", set_key("missing_joints", ["tail"])), "meta.json"),
    "meta-invalid-json": (raw_bytes("meta.json", lambda b: b[: len(b) // 2]), "meta.json"),
    "meta-binary": (raw_bytes("meta.json", lambda b: b"\xff\xfe\x00garbage"), "meta.json"),
    "meta-empty": (raw_bytes("meta.json", lambda b: b""), "meta.json"),
})  # fmt: skip
for cam in (0, 1):
    for key in CAMERA_KEYS:
        SEQUENCE_CASES[f"camera{cam}-missing-{key}"] = (
            json_edit("cameras.json", del_key(key, cam)),
            "cameras.json",
        )
SEQUENCE_CASES.update({
    "camera-K-shape": (json_edit("cameras.json", set_key("K", [[1, 0], [0, 1]], 0)), "cameras.json"),
    "camera-K-nan": (json_edit("cameras.json", set_key("K", [[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]], 0)), "cameras.json"),
    "camera-K-inf": (json_edit("cameras.json", set_key("K", [[float("inf"), 0, 1], [0, 1, 1], [0, 0, 1]], 1)), "cameras.json"),
    "camera-K-negative-fx": (json_edit("cameras.json", set_key("K", [[-500, 0, 100], [0, 500, 100], [0, 0, 1]], 0)), "cameras.json"),
    "camera-K-negative-fy": (json_edit("cameras.json", set_key("K", [[500, 0, 100], [0, -500, 100], [0, 0, 1]], 0)), "cameras.json"),
    "camera-K-zero-focal": (json_edit("cameras.json", set_key("K", [[0, 0, 100], [0, 0, 100], [0, 0, 1]], 1)), "cameras.json"),
    "camera-K-last-row": (json_edit("cameras.json", set_key("K", [[500, 0, 100], [0, 500, 100], [0, 1, 1]], 0)), "cameras.json"),
    "camera-K-strings": (json_edit("cameras.json", set_key("K", [["a", 0, 1], [0, 1, 1], [0, 0, 1]], 0)), "cameras.json"),
    "camera-K-null": (json_edit("cameras.json", set_key("K", None, 0)), "cameras.json"),
    "camera-R-shape": (json_edit("cameras.json", set_key("R", [1, 0, 0], 0)), "cameras.json"),
    "camera-R-nan": (json_edit("cameras.json", set_key("R", [[float("nan")] * 3] * 3, 1)), "cameras.json"),
    "camera-t-shape": (json_edit("cameras.json", set_key("t", [1, 2], 0)), "cameras.json"),
    "camera-t-nan": (json_edit("cameras.json", set_key("t", [0, float("nan"), 0], 1)), "cameras.json"),
    "camera-t-string": (json_edit("cameras.json", set_key("t", "far", 1)), "cameras.json"),
    "camera-dist-3": (json_edit("cameras.json", set_key("dist", [0.1, 0.0, 0.0], 0)), "cameras.json"),
    "camera-dist-8": (json_edit("cameras.json", set_key("dist", [0.0] * 8, 0)), "cameras.json"),
    "camera-dist-nan": (json_edit("cameras.json", set_key("dist", [float("nan")] * 5, 1)), "cameras.json"),
    "camera-dist-model": (json_edit("cameras.json", set_key("dist_model", "fisheye", 0)), "cameras.json"),
    "camera-width-zero": (json_edit("cameras.json", set_key("width", 0, 0)), "cameras.json"),
    "camera-height-negative": (json_edit("cameras.json", set_key("height", -10, 1)), "cameras.json"),
    "camera-width-string": (json_edit("cameras.json", set_key("width", "wide", 0)), "cameras.json"),
    "camera-name-escapes": (json_edit("cameras.json", lambda d: [dict(d[0], name="../x"), d[1]]), "cameras.json"),
    "cameras-not-list": (json_edit("cameras.json", lambda d: d[0]), "cameras.json"),
    "cameras-empty": (json_edit("cameras.json", lambda d: []), "cameras.json"),
    "cameras-entry-number": (json_edit("cameras.json", lambda d: [1, 2]), "cameras.json"),
    "cameras-truncated": (raw_bytes("cameras.json", lambda b: b[: len(b) // 3]), "cameras.json"),
    "cameras-empty-file": (raw_bytes("cameras.json", lambda b: b""), "cameras.json"),
    "cameras-missing-file": (lambda f: (f / "cameras.json").unlink(), "cameras.json"),
})  # fmt: skip
for kind in ("scaled", "reflection", "sheared", "zeros"):
    SEQUENCE_CASES[f"camera-R-{kind}"] = (
        json_edit("cameras.json", set_key("R", rotation_like(kind), 0)),
        "cameras.json",
    )
SEQUENCE_CASES.update({
    "poses-nan": (npy_edit("poses_3d.npy", nan_at), "poses_3d.npy"),
    "poses-inf": (npy_edit("poses_3d.npy", lambda a: nan_at(a, np.inf)), "poses_3d.npy"),
    "poses-metres": (npy_edit("poses_3d.npy", lambda a: a / 1000), "poses_3d.npy"),
    "poses-16-joints": (npy_edit("poses_3d.npy", lambda a: a[:, :16]), "poses_3d.npy"),
    "poses-extra-frame": (npy_edit("poses_3d.npy", lambda a: np.concatenate([a, a[:1]])), "poses_3d.npy"),
    "poses-2d": (npy_edit("poses_3d.npy", lambda a: a[..., :2]), "poses_3d.npy"),
    "poses-flat": (npy_edit("poses_3d.npy", lambda a: a.reshape(T, -1)), "poses_3d.npy"),
    "poses-truncated": (raw_bytes("poses_3d.npy", lambda b: b[: len(b) - 40]), "poses_3d.npy"),
    "poses-junk": (raw_bytes("poses_3d.npy", lambda b: b"junk" * 20), "poses_3d.npy"),
    "poses-empty-file": (raw_bytes("poses_3d.npy", lambda b: b""), "poses_3d.npy"),
    "poses-object-array": (lambda f: np.save(f / "poses_3d.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True), "poses_3d.npy"),
    "poses-strings": (lambda f: np.save(f / "poses_3d.npy", np.full((T, 17, 3), "x")), "poses_3d.npy"),
    "boxes-nan": (npy_edit("boxes.npy", nan_at), "boxes.npy"),
    "boxes-inf": (npy_edit("boxes.npy", lambda a: nan_at(a, -np.inf)), "boxes.npy"),
    "boxes-x-flipped": (npy_edit("boxes.npy", lambda a: a[..., [2, 1, 0, 3]]), "boxes.npy"),
    "boxes-y-flipped": (npy_edit("boxes.npy", lambda a: a[..., [0, 3, 2, 1]]), "boxes.npy"),
    "boxes-empty-box": (npy_edit("boxes.npy", lambda a: a[..., [0, 1, 0, 3]]), "boxes.npy"),
    "boxes-one-camera": (npy_edit("boxes.npy", lambda a: a[:1]), "boxes.npy"),
    "boxes-3-values": (npy_edit("boxes.npy", lambda a: a[..., :3]), "boxes.npy"),
    "boxes-truncated": (raw_bytes("boxes.npy", lambda b: b[:60]), "boxes.npy"),
    "boxes-missing": (lambda f: (f / "boxes.npy").unlink(), "boxes.npy"),
    "frames-float": (npy_edit("frames/cam0.npy", lambda a: a.astype(np.float32)), "cam0.npy"),
    "frames-size": (npy_edit("frames/cam1.npy", lambda a: a[:, :8, :8]), "cam1.npy"),
    "frames-gray": (npy_edit("frames/cam0.npy", lambda a: a[..., 0]), "cam0.npy"),
    "frames-count": (npy_edit("frames/cam0.npy", lambda a: a[:2]), "cam0.npy"),
    "frames-truncated": (raw_bytes("frames/cam1.npy", lambda b: b[: len(b) - 100]), "cam1.npy"),
    "frames-junk": (raw_bytes("frames/cam0.npy", lambda b: b"\x93NUMPY garbage"), "cam0.npy"),
    "poses-light-years": (npy_edit("poses_3d.npy", lambda a: nan_at(a.astype(np.float64), 1e300)), "poses_3d.npy"),
    "poses-one-joint-far": (npy_edit("poses_3d.npy", lambda a: nan_at(a, 5e4)), "poses_3d.npy"),
    "poses-header-huge-shape": (lambda f: _huge_header(f / "poses_3d.npy"), "poses_3d.npy"),
    "frames-header-huge-shape": (lambda f: _huge_header(f / "frames" / "cam0.npy"), "cam0.npy"),
    "meta-nested-deeply": (raw_bytes("meta.json", lambda b: b"[" * 200_000 + b"]" * 200_000), "meta.json"),
    "frames-file-missing": (lambda f: (f / "frames" / "cam1.npy").unlink(), "cam1.npy"),
    "frames-folder-missing": (lambda f: shutil.rmtree(f / "frames"), "cam0.npy"),
    "meta-frames-not-bool": (json_edit("meta.json", set_key("frames", "yes")), "meta.json"),
    "meta-fps-nan": (raw_bytes("meta.json", lambda b: b.replace(b'"fps": 10.0', b'"fps": NaN')), "meta.json"),
    "meta-fps-inf": (raw_bytes("meta.json", lambda b: b.replace(b'"fps": 10.0', b'"fps": Infinity')), "meta.json"),
})  # fmt: skip
for seed in range(6):  # seeded random truncations of each file
    for name in ("meta.json", "cameras.json", "poses_3d.npy", "boxes.npy", "frames/cam0.npy"):

        def truncate(b: bytes, seed: int = seed) -> bytes:
            return b[: int(np.random.default_rng(seed).integers(0, len(b) - 2))]

        SEQUENCE_CASES[f"truncate-{name.replace('/', '-')}-{seed}"] = (
            raw_bytes(name, truncate),
            Path(name).name,
        )


@pytest.mark.parametrize("case", sorted(SEQUENCE_CASES))
def test_corrupt_sequence_files(case, tmp_path):
    mutate, file_name = SEQUENCE_CASES[case]
    folder = valid_sequence(tmp_path)
    mutate(folder)
    with pytest.raises(InputError) as err:
        SequenceFolder(folder)
    assert file_name in str(err.value), str(err.value)


# --- configs ------------------------------------------------------------------------------

CONFIG_CASES = {
    "typo": ("loss:\n  margn: 0.3\n", "did you mean 'loss.margin'"),
    "unknown-section": ("optimiser:\n  lr: 0.1\n", "unknown option 'optimiser'"),
    "number-as-text": ("train:\n  lr: fast\n", "must be a number"),
    "nan": ("loss:\n  margin: .nan\n", "must be finite"),
    "inf": ("train:\n  lr: .inf\n", "must be finite"),
    "negative-lr": ("train:\n  lr: -0.1\n", "must be positive"),
    "zero-steps": ("train:\n  steps: 0\n", "must be positive"),
    "float-steps": ("train:\n  steps: 1.5\n", "must be an integer"),
    "bool-batch": ("batch:\n  size: true\n", "must be an integer"),
    "fraction-range": ("batch:\n  labelled_fraction: 1.5\n", "labelled_fraction"),
    "dropout-range": ("model:\n  dropout: 1.0\n", "model.dropout"),
    "bad-choice": ("loss:\n  metric: triplets\n", "one of"),
    "bad-backbone": ("model:\n  backbone: vgg\n", "one of"),
    "section-not-mapping": ("train: 5\n", "must be a mapping"),
    "top-level-list": ("- a\n- b\n", "mapping at the top level"),
    "invalid-yaml": ("train:\n  lr: [0.1\n", "not valid YAML"),
    "tabs": ("train:\n\tlr: 0.1\n", "not valid YAML"),
    "overlap": ("data:\n  test_subjects: [S1]\n", "overlaps"),
    "bad-labels": ("data:\n  labels: fraction:2\n", "labels"),
    "negative-weight": ("loss:\n  metric_weight: -1\n", "non-negative"),
    "flag-as-number": ("augment:\n  colour: 3\n", "true or false"),
    "workers-beyond-cpus": ("data:\n  num_workers: 100000\n", "data.num_workers"),
    "not-utf8": ("train:\n  lr: 0.1 # \udcff\n", "not a UTF-8 text file"),
    "calibrated-temperature-zero": ("loss:\n  calibrated_temperature_mm: 0\n", "must be positive"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_corrupt_config_files(case, tmp_path):
    from metricpose.config import load_config

    text, message = CONFIG_CASES[case]
    path = tmp_path / "my_config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))  # "not-utf8": a raw 0xff byte
    with pytest.raises(InputError) as err:
        load_config(str(path))
    assert "my_config.yaml" in str(err.value) and message in str(err.value), str(err.value)


# --- checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    from metricpose.checkpoint import build_model, save_model
    from metricpose.config import load_config

    config = load_config("baseline", ["model.regressor_width=32", "model.embedding_dim=8"])
    net = build_model(config, pretrained=False)
    buffer = io.BytesIO()
    path = Path(__import__("tempfile").mkdtemp()) / "m.pt"
    save_model(path, net.state_dict(), config, ["S1"], 0, crop_size=32)
    buffer.write(path.read_bytes())
    return buffer.getvalue()


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _reload(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


CHECKPOINT_CASES = {
    "truncated-half": lambda b: b[: len(b) // 2],
    "truncated-tail": lambda b: b[: len(b) - 10],
    "empty": lambda b: b"",
    "junk": lambda b: b"not a checkpoint at all" * 5,
    "pickled-code": lambda b: pickle.dumps(print),
    "plain-pickle-dict": lambda b: pickle.dumps({"state_dict": {}}),
    "no-state-dict": lambda b: _torch_bytes({"format": "metricpose-model", "config": {}}),
    "wrong-format": lambda b: _torch_bytes({"format": "something-else"}),
    "list": lambda b: _torch_bytes([1, 2, 3]),
    "weights-wrong-shape": lambda b: _torch_bytes(
        {**_reload(b), "state_dict": {k: v[..., :1] if v.ndim else v for k, v in _reload(b)["state_dict"].items()}}
    ),
    "weights-missing": lambda b: _torch_bytes({**_reload(b), "state_dict": dict(list(_reload(b)["state_dict"].items())[:3])}),
    "weights-nan": lambda b: _torch_bytes(
        {**_reload(b), "state_dict": {k: v * float("nan") if v.is_floating_point() else v for k, v in _reload(b)["state_dict"].items()}}
    ),
    "weights-one-inf": lambda b: _torch_bytes(
        {**_reload(b), "state_dict": {**_reload(b)["state_dict"], "embed.bias": _reload(b)["state_dict"]["embed.bias"] + float("inf")}}
    ),
    "random-bytes": lambda b: np.random.default_rng(0).bytes(4096),
    "config-bad-backbone": lambda b: _torch_bytes(
        {**_reload(b), "config": {**_reload(b)["config"], "model": {**_reload(b)["config"]["model"], "backbone": "vgg"}}}
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_corrupt_checkpoints(case, model_bytes, tmp_path):
    from metricpose.checkpoint import load_model

    path = tmp_path / "suspect.pt"
    path.write_bytes(CHECKPOINT_CASES[case](model_bytes))
    with pytest.raises(InputError) as err:
        load_model(path)
    assert "suspect.pt" in str(err.value), str(err.value)
    if case in ("weights-nan", "weights-one-inf"):
        assert "NaN or Inf" in str(err.value) and "'" in str(err.value)  # names the tensor
    if case == "random-bytes":
        assert "not a PyTorch model" in str(err.value)


def test_weights_that_overflow_on_an_input_name_the_model_and_the_frames_file(
    model_bytes, tiny_studio, tmp_path
):
    """Finite weights pass the load check; predictions that overflow to Inf are still refused,
    naming the model file and the frame, never scored as numbers."""
    from metricpose.evaluate import evaluate_checkpoint

    state = _reload(model_bytes)
    state["state_dict"]["regressor.out.weight"] = torch.full_like(
        state["state_dict"]["regressor.out.weight"], 3e38
    )
    path = tmp_path / "overflowing.pt"
    path.write_bytes(_torch_bytes(state))
    with pytest.raises(
        InputError,
        match=r"overflowing\.pt: the model predicts NaN or Inf for .*S9_\w+/frames/\w+\.npy frame \d+",
    ):
        evaluate_checkpoint(path, tiny_studio, ["S9"], frame_stride=8)


# --- official dataset files and users' calibration -------------------------------------------


def _write_cdf(path: Path, name: str = "Pose", data: np.ndarray | None = None) -> None:
    from cdflib.cdfwrite import CDF

    data = np.zeros((1, 4, 96)) + 100.0 if data is None else data
    cdf = CDF(str(path), cdf_spec={"Majority": "Row_major"})
    cdf.write_var({"Variable": name, "Data_Type": CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
                   "Dim_Sizes": list(data.shape[1:])}, var_attrs={}, var_data=data)  # fmt: skip
    cdf.close()


def _cdf_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare.h36m import read_cdf_poses

        path = tmp / "Walking 1.cdf"
        if kind == "junk":
            path.write_bytes(b"\x00" * 64)
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "no-pose":
            _write_cdf(path, name="Angles")
        elif kind == "wrong-width":
            _write_cdf(path, data=np.zeros((1, 4, 90)))
        elif kind == "nan":
            _write_cdf(path, data=np.full((1, 4, 96), np.nan))
        elif kind == "truncated":
            _write_cdf(path)
            path.write_bytes(path.read_bytes()[:200])
        elif kind == "missing":
            pass
        return lambda: read_cdf_poses(path)

    return build


def _calibration_case(text: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare.mpi_inf_3dhp import parse_calibration

        path = tmp / "camera.calibration"
        path.write_text(text)
        return lambda: parse_calibration(path)

    return build


GOOD_CALIB = ("name 0\n  size 2048 2048\n  intrinsic 1500 0 1024 0 0 1500 1024 0 0 0 1 0 0 0 0 1\n"
              "  extrinsic 1 0 0 0 0 1 0 0 0 0 1 3000 0 0 0 1\n")  # fmt: skip


def _annot_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        import h5py
        from scipy.io import savemat

        from metricpose.prepare import mpi_inf_3dhp

        if kind.startswith("train"):
            seq = tmp / "S1" / "Seq1"
            seq.mkdir(parents=True)
            (seq / "camera.calibration").write_text(GOOD_CALIB)
            if kind == "train-junk":
                (seq / "annot.mat").write_bytes(b"MATLAB junk" * 10)
            elif kind == "train-no-annot3":
                savemat(seq / "annot.mat", {"frames": np.arange(3)})
            elif kind == "train-cell-shape":
                cells = np.empty((1, 1), dtype=object)
                cells[0, 0] = np.zeros((3, 80))
                savemat(seq / "annot.mat", {"annot3": cells})
            elif kind == "train-missing-camera":
                cells = np.empty((1, 1), dtype=object)
                cells[0, 0] = np.zeros((3, 84))
                savemat(seq / "annot.mat", {"annot3": cells})
                (seq / "camera.calibration").write_text(GOOD_CALIB.replace("name 0", "name 5"))
            return lambda: list(
                mpi_inf_3dhp.training_sequences(tmp, ["S1"], cameras=(0,), with_frames=False)
            )
        folder = tmp / "TS1"
        folder.mkdir()
        path = folder / "annot_data.mat"
        if kind == "test-not-hdf5":
            path.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 100)
        else:
            with h5py.File(path, "w") as f:
                if kind != "test-no-valid":
                    f["valid_frame"] = np.ones((3, 1))
                f["annot3"] = (
                    np.zeros((3, 1, 16, 3)) if kind == "test-shape" else np.zeros((3, 1, 17, 3))
                )
                if kind == "test-count":
                    del f["valid_frame"]
                    f["valid_frame"] = np.ones((5, 1))
        return lambda: list(mpi_inf_3dhp.testset_sequences(tmp, with_frames=False))

    return build


def _panoptic_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare import panoptic

        cam = {"name": "00_00", "type": "hd", "resolution": [1920, 1080], "K": [[1600, 0, 960], [0, 1600, 540], [0, 0, 1]],
               "distCoef": [0, 0, 0, 0, 0], "R": np.eye(3).tolist(), "t": [[0], [0], [300]]}  # fmt: skip
        body = {"id": 0, "joints19": [v for j in range(19) for v in (j, 10.0 * j, 50.0, 0.9)]}
        calib, scene = {"calibDataSource": "x", "cameras": [cam]}, {"bodies": [body]}
        calib_text = None
        if kind == "calib-junk":
            calib_text = "{not json"
        elif kind == "calib-no-cameras":
            calib = {"calibDataSource": "x"}
        elif kind == "calib-no-K":
            del cam["K"]
        elif kind == "calib-R-reflection":
            cam["R"] = np.diag([1.0, 1, -1]).tolist()
        elif kind == "calib-negative-focal":
            cam["K"] = [[-1600, 0, 960], [0, 1600, 540], [0, 0, 1]]
        elif kind == "calib-no-resolution":
            del cam["resolution"]
        elif kind == "body-junk":
            scene = "nonsense"
        elif kind == "body-no-bodies":
            scene = {"people": []}
        elif kind == "body-short-joints":
            body["joints19"] = body["joints19"][:40]
        elif kind == "body-nan":
            body["joints19"][5] = float("nan")
        (tmp / "calibration_seqA.json").write_text(calib_text or json.dumps(calib))
        (tmp / "hdPose3d_stage1_coco19").mkdir()
        (tmp / "hdPose3d_stage1_coco19" / "body3DScene_00000001.json").write_text(json.dumps(scene))
        return lambda: list(panoptic.sequences(tmp, with_frames=False))

    return build


def _opencv_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare.custom import load_opencv_camera

        matrix = "!!opencv-matrix\n   rows: {r}\n   cols: {c}\n   dt: d\n   data: [ {d} ]\n"
        fields = {
            "image_width": "640", "image_height": "480",
            "camera_matrix": matrix.format(r=3, c=3, d="500., 0., 320., 0., 500., 240., 0., 0., 1."),
            "distortion_coefficients": matrix.format(r=1, c=5, d="0., 0., 0., 0., 0."),
            "rvec": matrix.format(r=3, c=1, d="0., 0., 0."), "tvec": matrix.format(r=3, c=1, d="0., 0., 3000."),
        }  # fmt: skip
        if kind == "no-matrix":
            del fields["camera_matrix"]
        elif kind == "matrix-size":
            fields["camera_matrix"] = matrix.format(r=3, c=3, d="500., 0., 320.")
        elif kind == "dist-3":
            fields["distortion_coefficients"] = matrix.format(r=1, c=3, d="0., 0., 0.")
        elif kind == "rvec-size":
            fields["rvec"] = matrix.format(r=2, c=1, d="0., 0.")
        elif kind == "negative-focal":
            fields["camera_matrix"] = matrix.format(
                r=3, c=3, d="-500., 0., 320., 0., 500., 240., 0., 0., 1."
            )
        elif kind == "width-text":
            fields["image_width"] = "wide"
        elif kind == "tvec-nan":
            fields["tvec"] = matrix.format(r=3, c=1, d=".nan, 0., 3000.")
        text = "%YAML:1.0\n---\n" + "".join(f"{k}: {v}\n" for k, v in fields.items())
        if kind == "not-yaml":
            text = "%YAML:1.0\n---\ncamera_matrix: [unclosed\n"
        elif kind == "list":
            text = "- 1\n- 2\n"
        path = tmp / "calibration" / "cam_a.yaml"
        path.parent.mkdir()
        path.write_text(text)
        return lambda: load_opencv_camera(path, "cam_a")

    return build


def _mmpose_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare import h36m

        n = 2
        data = {"imgname": np.array(["S1/S1_Walking_1.54138969/S1_Walking_1.54138969_000001.jpg"] * n),
                "center": np.full((n, 2), 500.0), "scale": np.full(n, 2.0), "S": np.ones((n, 17, 4))}  # fmt: skip
        if kind == "no-S":
            del data["S"]
        elif kind == "rows":
            data["scale"] = np.full(n + 1, 2.0)
        elif kind == "nan":
            data["S"][0, 3, 1] = np.nan
        elif kind == "millimetres":
            data["S"] = data["S"] * 1000
        elif kind == "name":
            data["imgname"] = np.array(["frame1.jpg"] * n)
        elif kind == "joints":
            data["S"] = np.ones((n, 15, 4))
        path = tmp / "annotations.npz"
        if kind == "junk":
            path.write_bytes(b"PK junk")
        else:
            np.savez(path, **data)
        return lambda: list(h36m.mmpose_sequences(tmp, path))

    return build


def _pickle_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare import mpi_inf_3dhp

        np.savez(tmp / "ann.npz", imgname=np.array(["S1_Seq1_Cam0_000001.jpg"]), center=np.zeros((1, 2)),
                 scale=np.ones(1), S=np.ones((1, 17, 4)))  # fmt: skip
        path = tmp / "cameras_train.pkl"
        if kind == "code":
            path.write_bytes(pickle.dumps(print))
        elif kind == "junk":
            path.write_bytes(b"\x80\x04junk")
        elif kind == "missing-entry":
            path.write_bytes(pickle.dumps({"S2_Seq1_Cam0": {}}))
        elif kind == "no-focal":
            path.write_bytes(pickle.dumps({"S1_Seq1_Cam0": {"c": np.zeros(2), "w": 10, "h": 10}}))
        return lambda: list(mpi_inf_3dhp.mmpose_sequences(tmp, tmp / "ann.npz", path))

    return build


def _rig_case(kind: str) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from metricpose.prepare import custom

        rig = default_rig(2, image_size=64)
        (tmp / "cameras.json").write_text(json.dumps([c.to_dict() for c in rig]))
        for cam in rig:
            (tmp / "images" / cam.name).mkdir(parents=True)
            for i in range(2):
                (tmp / "images" / cam.name / f"{i}.png").write_bytes(_png(64))
        if kind == "poses-shape":
            np.save(tmp / "poses_3d.npy", np.zeros((2, 15, 3)))
        elif kind == "poses-metres":
            np.save(tmp / "poses_3d.npy", np.tile(standing_pose(), (2, 1, 1)) / 1000)
        elif kind == "poses-junk":
            (tmp / "poses_3d.npy").write_bytes(b"junk")
        elif kind == "poses-count":
            np.save(tmp / "poses_3d.npy", np.tile(standing_pose(), (5, 1, 1)))
        elif kind == "boxes-shape":
            np.save(tmp / "boxes.npy", np.zeros((2, 2, 3)))
        elif kind == "no-frames":
            (tmp / "images" / rig[1].name / "0.png").unlink()
            (tmp / "images" / rig[1].name / "1.png").unlink()
        elif kind == "no-camera-folder":
            import shutil

            shutil.rmtree(tmp / "images" / rig[0].name)
        elif kind == "no-calibration":
            (tmp / "cameras.json").unlink()
        elif kind == "cameras-not-list":
            (tmp / "cameras.json").write_text("{}")
        elif kind == "broken-image":
            (tmp / "images" / rig[0].name / "1.png").write_bytes(b"\x89PNG broken")
            return lambda: list(_convert_all(custom.sequences(tmp, "ana"), tmp / "out"))
        return lambda: list(custom.sequences(tmp, "ana"))

    return build


def _png(size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def _convert_all(sequences, out: Path):
    from metricpose.prepare.common import convert

    return [convert(sequences, out, 16, progress=False)]


SOURCE_CASES: dict[str, tuple[Callable[[Path], Callable[[], object]], str]] = {}
for k in ("junk", "empty", "no-pose", "wrong-width", "nan", "truncated", "missing"):
    SOURCE_CASES[f"h36m-cdf-{k}"] = (_cdf_case(k), "Walking 1.cdf")
for k, text in {
    "empty": "", "junk": "hello world\n", "no-size": GOOD_CALIB.replace("  size 2048 2048\n", ""),
    "short-intrinsic": GOOD_CALIB.replace("1500 0 1024 0 0 1500 1024 0 0 0 1 0 0 0 0 1", "1500 0 1024"),
    "text-extrinsic": GOOD_CALIB.replace("extrinsic 1 0 0", "extrinsic a b c"),
    "non-rotation": GOOD_CALIB.replace("extrinsic 1 0 0 0 0 1", "extrinsic 2 0 0 0 0 1"),
    "negative-focal": GOOD_CALIB.replace("intrinsic 1500", "intrinsic -1500"),
    "nan": GOOD_CALIB.replace("extrinsic 1 0 0 0", "extrinsic nan 0 0 0"),
}.items():  # fmt: skip
    SOURCE_CASES[f"3dhp-calibration-{k}"] = (_calibration_case(text), "camera.calibration")
for k in ("train-junk", "train-no-annot3", "train-cell-shape", "train-missing-camera"):
    SOURCE_CASES[f"3dhp-{k}"] = (_annot_case(k), "Seq1")
for k in ("test-not-hdf5", "test-no-valid", "test-shape", "test-count", "test-no-univ", "test-nan"):
    SOURCE_CASES[f"3dhp-{k}"] = (_annot_case(k), "annot_data.mat")
for k in (
    "calib-junk",
    "calib-no-cameras",
    "calib-no-K",
    "calib-R-reflection",
    "calib-negative-focal",
    "calib-no-resolution",
):
    SOURCE_CASES[f"panoptic-{k}"] = (_panoptic_case(k), "calibration_seqA.json")
for k in ("body-junk", "body-no-bodies", "body-short-joints", "body-nan"):
    SOURCE_CASES[f"panoptic-{k}"] = (_panoptic_case(k), "body3DScene_00000001.json")
for k in (
    "no-matrix",
    "matrix-size",
    "dist-3",
    "rvec-size",
    "negative-focal",
    "width-text",
    "tvec-nan",
    "not-yaml",
    "list",
):
    SOURCE_CASES[f"opencv-{k}"] = (_opencv_case(k), "cam_a.yaml")
for k in ("no-S", "rows", "nan", "millimetres", "name", "joints", "junk"):
    SOURCE_CASES[f"mmpose-npz-{k}"] = (_mmpose_case(k), "annotations.npz")
for k in ("code", "junk", "missing-entry", "no-focal"):
    SOURCE_CASES[f"mmpose-pickle-{k}"] = (_pickle_case(k), "cameras_train.pkl")
for k, name in {"poses-shape": "poses_3d.npy", "poses-count": "disagree", "poses-metres": "metres",
                "poses-junk": "poses_3d.npy", "boxes-shape": "boxes.npy",
                "no-frames": "images", "no-camera-folder": "neither", "no-calibration": "cameras.json",
                "cameras-not-list": "cameras.json", "broken-image": "1.png"}.items():  # fmt: skip
    SOURCE_CASES[f"rig-{k}"] = (_rig_case(k), name)


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_corrupt_source_files(case, tmp_path):
    build, file_name = SOURCE_CASES[case]
    read = build(tmp_path)
    with pytest.raises(InputError) as err:
        read()
    assert file_name in str(err.value), str(err.value)


def test_the_suite_is_large_enough():
    total = len(SEQUENCE_CASES) + len(CONFIG_CASES) + len(CHECKPOINT_CASES) + len(SOURCE_CASES)
    assert total >= 200, total
