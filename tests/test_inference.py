"""Using a trained model: the Python API, predict, search and export."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metricpose
from metricpose.checkpoint import build_model, save_model
from metricpose.cli import main
from metricpose.config import load_config
from metricpose.data.format import SequenceFolder, list_sequences
from metricpose.errors import InputError
from metricpose.imaging import crop
from metricpose.skeleton import JOINT_NAMES

CROP = 64  # the studio's crop size, so that a stored crop is its own query


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A small randomly initialised body-frame model saved as a model.pt."""
    torch.manual_seed(0)
    config = load_config("metric", ["model.regressor_width=64", "model.embedding_dim=16"])
    net = build_model(config, pretrained=False)
    with torch.no_grad():
        net.pose_std.fill_(300.0)  # a spread like real poses, so outputs differ between images
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, net.state_dict(), config, ["S1"], step=0, crop_size=CROP)
    return path


def images(n: int, h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def write_video(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


# --- Python API ---------------------------------------------------------------------------


def test_load_predict_embed_on_every_input_kind(model_file):
    model = metricpose.load(model_file, device="cpu")
    assert model.crop_size == CROP
    batch = images(3)
    ref = model.predict(batch)
    assert ref.poses.shape == (3, 17, 3) and ref.embeddings.shape == (3, 16)
    assert ref.joint_names == JOINT_NAMES
    np.testing.assert_allclose(ref.poses[:, 0], 0, atol=1e-4)  # root-relative
    np.testing.assert_allclose(np.linalg.norm(ref.embeddings, axis=1), 1, atol=1e-5)
    assert np.abs(ref.poses[0] - ref.poses[1]).max() > 1  # the images matter
    as_pil = model.predict([Image.fromarray(b) for b in batch])
    as_torch = model.predict(torch.from_numpy(batch).permute(0, 3, 1, 2).float())
    one_by_one = [model.predict(b) for b in batch]
    for other in (as_pil, as_torch):
        np.testing.assert_allclose(other.poses, ref.poses, atol=1e-3)
    np.testing.assert_allclose(np.concatenate([o.poses for o in one_by_one]), ref.poses, atol=1e-3)
    np.testing.assert_allclose(model.embed(batch), ref.embeddings, atol=1e-5)


def test_predict_crops_the_given_box(model_file):
    model = metricpose.load(model_file, device="cpu")
    frame = images(1, 120, 160)[0]
    box = np.array([40.0, 10.0, 120.0, 90.0])
    by_box = model.predict(frame, box[None])
    by_hand = model.predict(crop(frame, box, CROP))
    np.testing.assert_allclose(by_box.poses, by_hand.poses, atol=1e-3)
    np.testing.assert_array_equal(by_box.boxes[0], box)


@pytest.mark.parametrize(
    "bad, boxes, message",
    [
        (np.zeros((2, 10, 10)), None, "shape"),
        (np.full((1, 10, 10, 3), np.nan), None, "NaN"),
        (np.full((1, 10, 10, 3), 300.0), None, "0-255"),
        (np.zeros((2, 10, 10, 3), np.uint8), np.zeros((1, 4)), "1 boxes for 2 images"),
        (np.zeros((1, 10, 10, 3), np.uint8), np.array([[5.0, 5.0, 2.0, 9.0]]), "x1 > x0"),
        (np.zeros((0, 64, 64, 3), np.uint8), None, "no images given"),
        ([], None, "no images given"),
        (np.zeros((1, 64, 64, 3), np.uint8), np.array([[10.0, 10.0, 5000.0, 5000.0]]), "outside"),
    ],
)
def test_api_bad_inputs(model_file, bad, boxes, message):
    with pytest.raises(InputError, match=message):
        metricpose.load(model_file, device="cpu").predict(bad, boxes)


def test_a_tiny_image_is_predicted_with_a_warning_and_a_border_box_is_accepted(model_file):
    model = metricpose.load(model_file, device="cpu")
    with pytest.warns(UserWarning, match="1x1 px"):
        model.predict(np.zeros((1, 1, 1, 3), np.uint8))
    # A person cut off by the image border: a third of the box outside is fine.
    result = model.predict(images(1, 60, 80), np.array([[40.0, 0.0, 100.0, 60.0]]))
    assert np.isfinite(result.poses).all()


# --- export -------------------------------------------------------------------------------


def test_onnx_and_torchscript_match_pytorch(model_file, tmp_path):
    import onnxruntime as ort

    onnx_file, ts_file = tmp_path / "m.onnx", tmp_path / "m.ts"
    assert main(["export", "--checkpoint", str(model_file), "--onnx", str(onnx_file),
                 "--torchscript", str(ts_file)]) == 0  # fmt: skip
    model = metricpose.load(model_file, device="cpu")
    x = torch.from_numpy(images(5, CROP, CROP)).float()  # batch 5: not the export's example size
    with torch.no_grad():
        ref = model.network(x)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    pose, embedding = session.run(None, {"images": x.numpy()})
    # Poses are compared in the regressor's normalised units (mm / pose_std): 1e-4 in mm would
    # sit below float32 resolution for joints hundreds of mm from the root.
    std = model.network.pose_std.numpy()
    np.testing.assert_allclose(pose / std, ref["pose_cam"].numpy() / std, atol=1e-4)
    np.testing.assert_allclose(embedding, ref["embedding"].numpy(), atol=1e-4)
    traced = torch.jit.load(str(ts_file))
    ts_pose, ts_embedding = traced(x)
    np.testing.assert_allclose(
        ts_pose.detach().numpy() / std, ref["pose_cam"].numpy() / std, atol=1e-4
    )
    np.testing.assert_allclose(ts_embedding.detach().numpy(), ref["embedding"].numpy(), atol=1e-4)


def test_export_needs_a_target(model_file, capsys):
    assert main(["export", "--checkpoint", str(model_file)]) == 2
    assert "--onnx" in capsys.readouterr().err


def test_export_to_an_unwritable_path_is_one_error_naming_it(model_file, tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    target = blocked / "pose.onnx"
    assert main(["export", "--checkpoint", str(model_file), "--onnx", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "Traceback" not in err


# --- predict ------------------------------------------------------------------------------


def test_predict_images_video_boxes_smoothing_and_bad_files(model_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    stills = images(2, 60, 80)
    for i, im in enumerate(stills):
        Image.fromarray(im).save(folder / f"still{i}.png")
    clip = np.repeat(images(1, 64, 96, seed=3), 6, axis=0)
    clip[:, :, : 8 * np.arange(6).max()] = 0
    for t in range(6):
        clip[t, :, : 8 * t] = 255  # a bar that grows: the frames differ
    write_video(folder / "clip.mp4", clip)
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 10)
    (tmp_path / "boxes.json").write_text(json.dumps({"still1.png": [10, 5, 60, 55]}))
    out = tmp_path / "out"
    rc = main(["predict", str(folder), str(tmp_path / "missing.jpg"), "--checkpoint", str(model_file),
               "--out", str(out), "--boxes", str(tmp_path / "boxes.json"), "--smooth", "3", "--viz",
               "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 1  # some inputs were skipped, the rest were written
    doc = json.loads((out / "predictions.json").read_text())
    assert "millimetres" in doc["units"] and doc["joint_names"] == list(JOINT_NAMES)
    skipped = " ".join(s["error"] for s in doc["skipped"])
    assert "broken.mp4: unreadable or corrupt video" in skipped and "missing.jpg" in skipped
    assert [(Path(f["source"]).name, f["frame"]) for f in doc["frames"]] == [
        ("clip.mp4", t) for t in range(6)
    ] + [("still0.png", 0), ("still1.png", 0)]
    assert doc["frames"][-1]["box_px"] == [10, 5, 60, 55]
    data = np.load(out / "predictions.npz")
    poses = data["poses_mm"][:6]
    np.testing.assert_allclose(data["poses_smoothed_mm"][2], poses[1:4].mean(0), atol=1e-3)
    np.testing.assert_allclose(
        data["poses_smoothed_mm"][0], (2 * poses[0] + poses[1]) / 3, atol=1e-3
    )
    assert data["embeddings"].shape == (8, 16)
    assert (out / "viz" / "clip.mp4").stat().st_size > 0 and (out / "viz" / "still0.png").is_file()


@pytest.mark.slow
def test_predict_with_a_person_detector_from_a_local_file(model_file, tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    weights = tmp_path / "detector.pt"
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), weights)
    Image.fromarray(images(1, 96, 128)[0]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(model_file), "--out", str(out),
                 "--detector", str(weights), "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    box = json.loads((out / "predictions.json").read_text())["frames"][0]["box_px"]
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])  # detections become square boxes
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(model_file), "--out", str(out),
                 "--detector", str(bad), "--no-progress"]) == 2  # fmt: skip


# --- search -------------------------------------------------------------------------------


def test_search_finds_an_indexed_crop_first(model_file, tiny_studio, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["search", "build", str(tiny_studio), "--checkpoint", str(model_file),
                 "--index", str(index), "--stride", "4", "--device", "cpu"]) == 0  # fmt: skip
    items = json.loads((index / "items.json").read_text())["items"]
    target = items[len(items) // 2]
    seq = SequenceFolder(Path(target["dataset"]) / target["sequence"])
    crop_image = np.asarray(seq.frames(target["camera"])[target["frame"]])
    query_file = tmp_path / "q.png"
    Image.fromarray(crop_image).save(query_file)
    capsys.readouterr()
    gallery = tmp_path / "gallery.png"
    assert main(["search", "query", str(query_file), "--checkpoint", str(model_file), "--index",
                 str(index), "--k", "3", "--out", str(gallery), "--device", "cpu"]) == 0  # fmt: skip
    first = capsys.readouterr().out.splitlines()[0]
    assert f"{target['sequence']} {target['camera']} frame {target['frame']}" in first
    assert "d=0.0000" in first
    assert gallery.stat().st_size > 0

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, seq_dir in enumerate(list_sequences(tiny_studio)[:3]):
        s = SequenceFolder(seq_dir)
        Image.fromarray(np.asarray(s.frames(s.cameras[0].name)[0])).save(folder / f"{i}.png")
    assert main(["search", "build", str(folder), "--checkpoint", str(model_file), "--index",
                 str(tmp_path / "idx2"), "--device", "cpu"]) == 0  # fmt: skip
    (index / "index.faiss").write_bytes(b"junk")
    assert main(["search", "query", str(query_file), "--checkpoint", str(model_file), "--index",
                 str(index)]) == 2  # fmt: skip


def test_readme_python_example_runs(model_file):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Python API") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    code = code.replace('"runs/demo/runs/metric__S1__seed0/model.pt"', repr(str(model_file)))
    namespace = {"images": images(2), "ground_truth": np.zeros((2, 17, 3))}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].poses.shape == (2, 17, 3)
    assert namespace["vectors"].shape == (2, 16) and namespace["error_mm"] > 0


def test_model_files_from_before_an_option_existed_load_as_they_were_built(tmp_path):
    # regressor_input was added after the first release with a new default; files saved
    # before must be rebuilt with the regressor they were trained with.
    from metricpose.checkpoint import load_model

    config = load_config("metric", ["model.regressor_input=embedding", "model.regressor_width=32"])
    net = build_model(config, pretrained=False)
    del config["model"]["regressor_input"], config["model"]["norm_eval"]
    del config["model"]["pool_grid"]
    save_model(tmp_path / "old.pt", net.state_dict(), config, ["S1"], step=0, crop_size=CROP)
    loaded, loaded_config = load_model(tmp_path / "old.pt")
    assert loaded_config["model"]["regressor_input"] == "embedding"
    assert loaded_config["model"]["pool_grid"] == 1
    assert loaded_config["model"]["regressor_width"] == 32


def test_model_files_of_the_removed_body_frame_design_are_refused_by_name(tmp_path):
    # Files saved while model.pose_frame existed carry it: "camera" models load as they were
    # built; "body" models (orientation head, removed) get one error naming the option.
    from metricpose.checkpoint import load_model

    config = load_config("baseline", ["model.regressor_width=32"])
    net = build_model(config, pretrained=False)
    config["model"]["pose_frame"] = "camera"
    save_model(tmp_path / "camera.pt", net.state_dict(), config, ["S1"], step=0, crop_size=CROP)
    loaded, _ = load_model(tmp_path / "camera.pt")
    images = torch.zeros(2, CROP, CROP, 3)
    assert torch.equal(loaded(images)["pose_cam"], net.eval()(images)["pose_cam"])
    config["model"]["pose_frame"] = "body"
    save_model(tmp_path / "body.pt", net.state_dict(), config, ["S1"], step=0, crop_size=CROP)
    with pytest.raises(InputError, match="pose_frame='body'"):
        load_model(tmp_path / "body.pt")


@pytest.mark.parametrize("regressor_input", ["embedding", "embedding+features"])
def test_the_regressor_reads_the_backbone_features_only_when_asked(regressor_input):
    # The ablation of docs/design.md ("What the regressor reads"): with the embedding head
    # silenced, only a regressor that also reads the pooled features can tell images apart.
    from metricpose.models import PoseNet

    torch.manual_seed(0)
    net = PoseNet(width=0.25, regressor_width=32, dropout=0.0, regressor_input=regressor_input)
    torch.nn.init.zeros_(net.embed.weight)
    torch.nn.init.zeros_(net.embed.bias)
    images = torch.rand(4, CROP, CROP, 3) * 255
    pose = net.eval()(images)["pose_cam"]
    varies = not torch.allclose(pose[0], pose[1:], atol=1e-6)
    assert varies == (regressor_input == "embedding+features")


@pytest.mark.parametrize("grid", [1, 2])
def test_the_backbone_pools_its_last_feature_map_to_a_grid(grid):
    # model.pool_grid: the last map averaged over each cell of a grid x grid partition of the
    # crop, flattened; 1 is torchvision's global average pooling.
    from metricpose.models.backbone import ResNetBackbone

    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", 0.25, pool_grid=grid).eval()
    x = torch.randn(2, 3, 96, 96)
    stem = torch.nn.Sequential(*list(backbone.children())[:-2])  # conv1 ... layer4
    last = stem(x)  # (2, 128, 3, 3)
    cells = [slice(0, 2), slice(1, 3)] if grid == 2 else [slice(0, 3)]  # adaptive pooling's cells
    expected = torch.stack(
        [last[:, :, r, c].mean((2, 3)) for r in cells for c in cells], -1
    ).flatten(1)
    assert backbone.out_features == 128 * grid**2
    torch.testing.assert_close(backbone(x), expected)
