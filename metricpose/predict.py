"""`metricpose predict`: 3D poses for a user's images, image folders and videos.

Person boxes come from a boxes file, a person detector (torchvision Faster R-CNN) or the whole
frame. Outputs: ``predictions.npz`` and ``predictions.json`` (per frame: the source, the frame
index, the box, the 17 joints in root-relative camera-frame millimetres, the embedding), and with
``--viz`` a picture per image or an mp4 per video. Unreadable inputs are reported by name and
skipped; the others' results are kept.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from metricpose.api import PoseModel
from metricpose.errors import InputError
from metricpose.fileio import atomic_write_bytes, atomic_write_text
from metricpose.imaging import (
    BOX_MARGIN,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    iter_video,
    read_image,
    whole_frame_box,
)
from metricpose.skeleton import JOINT_NAMES

UNITS = "millimetres, root-relative (pelvis at 0), camera frame (x right, y down, z forward)"


def discover_inputs(inputs: list[Path]) -> list[Path]:
    """Image and video files named directly or found (not recursively) in named folders."""
    found: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
        else:
            found.append(path)  # a missing or unsupported file is reported when read
    if not found:
        raise InputError(f"no images or videos in {', '.join(map(str, inputs))}")
    return found


def read_frames(path: Path, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, (H, W, 3) uint8) of an image (index 0) or every stride-th video frame."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        yield 0, read_image(path)
        return
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"{path}: not an image or video ({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})"
        )
    for i, frame in iter_video(path):
        if i % stride == 0:
            yield i, frame


def load_boxes(path: Path) -> dict[tuple[str, int], np.ndarray]:
    """Person boxes by (file name, frame): JSON ``{"a.jpg": [x0, y0, x1, y1], "v.mp4":
    {"0": [...], ...}}`` or CSV with columns ``file,frame,x0,y0,x1,y1`` (pixels)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: boxes file not found")
    boxes: dict[tuple[str, int], np.ndarray] = {}
    try:
        if path.suffix.lower() == ".json":
            for name, value in json.loads(path.read_text()).items():
                per_frame = value if isinstance(value, dict) else {"0": value}
                for frame, box in per_frame.items():
                    boxes[(name, int(frame))] = np.asarray(box, dtype=np.float64)
        else:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    box = [row[k] for k in ("x0", "y0", "x1", "y1")]
                    boxes[(row["file"], int(row.get("frame") or 0))] = np.asarray(
                        box, dtype=np.float64
                    )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: malformed boxes file ({type(exc).__name__}: {exc})") from None
    for key, box in boxes.items():
        if (
            box.shape != (4,)
            or not np.all(np.isfinite(box))
            or box[2] <= box[0]
            or box[3] <= box[1]
        ):
            raise InputError(
                f"{path}: box of {key[0]} frame {key[1]} is not (x0, y0, x1, y1) with x1 > x0, y1 > y0"
            )
    return boxes


class PersonDetector:
    """torchvision's Faster R-CNN (ResNet-50 FPN): the highest-scoring person per frame.

    ``weights`` is a local state_dict file, or "torchvision" for torchvision's own download
    (needs a network connection once).
    """

    def __init__(self, weights: str, device: torch.device, min_score: float = 0.5) -> None:
        from torchvision.models import detection

        if weights == "torchvision":
            self.net = detection.fasterrcnn_resnet50_fpn(weights="DEFAULT")
        else:
            from metricpose.checkpoint import safe_load

            self.net = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
            try:
                self.net.load_state_dict(safe_load(Path(weights)))
            except RuntimeError as exc:
                raise InputError(
                    f"{weights}: not Faster R-CNN ResNet-50 FPN weights ({str(exc).splitlines()[0]})"
                ) from None
        self.net.to(device).eval()
        self.device, self.min_score = device, min_score

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """A square (4,) box around the most confident person, or None."""
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).to(self.device)
        out = self.net([x])[0]
        keep = (out["labels"] == 1) & (out["scores"] >= self.min_score)
        if not keep.any():
            return None
        x0, y0, x1, y1 = out["boxes"][keep][out["scores"][keep].argmax()].cpu().numpy()
        cx, cy, side = (
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            max(x1 - x0, y1 - y0) * BOX_MARGIN,
        )  # like the training crops
        return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def smooth_track(poses: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over time of (T, 17, 3) poses (edges repeat the end frames)."""
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(poses, size=window, axis=0, mode="nearest") if window > 1 else poses


def overlay_joints(pose_mm: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(17, 2) px: a weak-perspective drawing of a root-relative pose inside its box.

    The model predicts no root depth, so the skeleton is scaled to fill the box as people fill
    the training crops and centred on it; an illustration, not a measured 2D pose.
    """
    xy = pose_mm[:, :2] - (pose_mm[:, :2].max(0) + pose_mm[:, :2].min(0)) / 2
    extent = max(np.abs(xy).max() * 2, 1e-6)
    scale = (box[2] - box[0]) / BOX_MARGIN / extent
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - 0.5 + xy * scale


def render(image: np.ndarray, pose_mm: np.ndarray, box: np.ndarray, title: str) -> np.ndarray:
    """(H', W', 3) uint8 picture: the input with box and skeleton, and the 3D skeleton beside it."""
    from metricpose.viz import plot_skeleton_2d, plot_skeleton_3d, plt

    fig = plt.figure(figsize=(8, 4), dpi=80)
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(image)
    ax.plot(box[[0, 2, 2, 0, 0]] - 0.5, box[[1, 1, 3, 3, 1]] - 0.5, color="yellow", lw=1)
    plot_skeleton_2d(ax, overlay_joints(pose_mm, box))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    # Camera frame (x right, y down, z forward) drawn with z up: (x, z, -y).
    upright = np.stack([pose_mm[:, 0], pose_mm[:, 2], -pose_mm[:, 1]], axis=-1)
    plot_skeleton_3d(fig.add_subplot(1, 2, 2, projection="3d"), upright)
    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture


def write_video(path: Path, pictures: list[np.ndarray], fps: float) -> None:
    import av

    h, w = (pictures[0].shape[0] // 2) * 2, (pictures[0].shape[1] // 2) * 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for pic in pictures:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pic[:h, :w]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@dataclass
class _Results:
    sources: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    smoothed: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def predict_files(
    model: PoseModel,
    inputs: list[Path],
    out: Path,
    boxes_file: Path | None = None,
    detector: str | None = None,
    stride: int = 1,
    smooth: int = 1,
    viz: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, object]:
    """Predict every frame of every input; write the outputs under ``out``; return a summary."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    given = load_boxes(boxes_file) if boxes_file else {}
    detect = PersonDetector(detector, model.device) if detector else None
    results = _Results()
    for path in tqdm(discover_inputs(inputs), desc="predict", unit="file", disable=not progress):
        try:
            frames, images, boxes = [], [], []
            for index, image in read_frames(path, stride):
                box = given.get((path.name, index))
                if box is None and detect is not None:
                    box = detect(image)
                frames.append(index)
                images.append(image)
                boxes.append(
                    box if box is not None else whole_frame_box(image.shape[1], image.shape[0])
                )
            if not frames:
                raise InputError(f"{path}: no frames")
        except InputError as exc:
            results.skipped.append({"source": str(path), "error": str(exc)})
            print(f"skipped {exc}")
            continue
        pred = model.predict(images, np.stack(boxes), batch_size)
        track = smooth_track(pred.poses, smooth) if len(frames) > 1 else pred.poses
        results.sources += [str(path)] * len(frames)
        results.frames += frames
        results.poses.append(pred.poses)
        results.smoothed.append(track)
        results.embeddings.append(pred.embeddings)
        results.boxes.append(pred.boxes)
        if viz:
            _visualise(out / "viz", path, frames, images, track, pred.boxes)
    if not results.frames:
        raise InputError(
            "no input could be read: " + "; ".join(s["error"] for s in results.skipped)
        )
    return _write_outputs(out, results, smooth)


def _visualise(
    folder: Path,
    path: Path,
    frames: list[int],
    images: list[np.ndarray],
    poses: np.ndarray,
    boxes: np.ndarray,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [
        render(img, p, b, f"{path.name} #{i}")
        for i, img, p, b in zip(frames, images, poses, boxes, strict=True)
    ]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        Image.fromarray(pictures[0]).save(folder / f"{path.stem}.png")
    else:
        write_video(folder / f"{path.stem}.mp4", pictures, fps=25)


def _write_outputs(out: Path, r: _Results, smooth: int) -> dict[str, object]:
    poses, smoothed = np.concatenate(r.poses), np.concatenate(r.smoothed)
    embeddings, boxes = np.concatenate(r.embeddings), np.concatenate(r.boxes)
    arrays = {
        "sources": np.array(r.sources), "frames": np.array(r.frames), "poses_mm": poses,
        "embeddings": embeddings, "boxes_px": boxes, "joint_names": np.array(JOINT_NAMES),
    }  # fmt: skip
    if smooth > 1:
        arrays["poses_smoothed_mm"] = smoothed
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(out / "predictions.npz", buffer.getvalue())
    document = {
        "units": UNITS,
        "joint_names": list(JOINT_NAMES),
        "smoothing_window": smooth,
        "frames": [
            {
                "source": s,
                "frame": int(f),
                "box_px": b.round(2).tolist(),
                "joints_mm": p.round(1).tolist(),
                "embedding": e.round(5).tolist(),
                **({"joints_smoothed_mm": q.round(1).tolist()} if smooth > 1 else {}),
            }  # fmt: skip
            for s, f, b, p, q, e in zip(
                r.sources, r.frames, boxes, poses, smoothed, embeddings, strict=True
            )
        ],
        "skipped": r.skipped,
    }
    atomic_write_text(out / "predictions.json", json.dumps(document))
    return {"frames": len(r.frames), "skipped": len(r.skipped), "out": str(out)}
