"""Images, videos and person boxes: decoding with one clear error per bad file, square crop
boxes around joints, and crops resized to the network's input. Shared by the dataset
converters and inference (``api``, ``predict``, ``search``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from metricpose.errors import InputError
from metricpose.fileio import require_file

#: A crop box is the projected pose's bounding square enlarged by this factor.
BOX_MARGIN = 1.25
#: Smallest crop box side, px: keeps a box finite when only a few joints project.
MIN_BOX_PX = 32.0

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"})

#: (frame index in the source) -> (H, W, 3) uint8 RGB image
FrameReader = Callable[[list[int]], Iterator[np.ndarray]]


def pose_boxes(
    points_px: np.ndarray, margin: float = BOX_MARGIN, min_size: float = MIN_BOX_PX
) -> np.ndarray:
    """Square crop boxes around 2D joints.

    Args:
        points_px: (..., J, 2) pixel-centre coordinates; NaN joints are ignored.

    Returns:
        (..., 4) boxes (x0, y0, x1, y1) in the format's box convention (pixel edges), centred
        on the joints' bounding box, side = margin · its longer side (at least ``min_size``).
    """
    lo = np.nanmin(points_px, axis=-2)
    hi = np.nanmax(points_px, axis=-2)
    center = (lo + hi) / 2 + 0.5  # pixel centres -> edge coordinates
    side = np.maximum((hi - lo).max(axis=-1) * margin, min_size)
    half = side[..., None] / 2
    return np.concatenate([center - half, center + half], axis=-1)


def center_scale_boxes(center_px: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """mmpose/Human3.6M-style (center, scale) boxes (side = 200·scale px) -> (..., 4) boxes."""
    half = 100.0 * np.asarray(scale, dtype=np.float64)[..., None]
    center = np.asarray(center_px, dtype=np.float64) + 0.5
    return np.concatenate([center - half, center + half], axis=-1)


def whole_frame_box(width: int, height: int) -> np.ndarray:
    """The largest centred square of a frame, (4,)."""
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)


def crop(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop a box (pixel-edge coordinates, may leave the image: black there) resized to size².

    Args:
        image: (H, W, 3) uint8 RGB. box: (4,). Returns (size, size, 3) uint8.
    """
    pil = Image.fromarray(image)
    out = pil.transform(
        (size, size),
        Image.Transform.EXTENT,
        tuple(float(v) for v in box),
        Image.Resampling.BILINEAR,
    )
    return np.asarray(out, dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; one clear error for a missing or undecodable file."""
    path = require_file(path, "image")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{path}: cannot decode image ({exc})") from None


def image_reader(paths: list[Path] | dict[int, Path]) -> FrameReader:
    """A frame reader over image files: frame i is ``paths[i]`` (a list, or a dict by frame)."""

    def read(indices: list[int]) -> Iterator[np.ndarray]:
        for i in indices:
            if isinstance(paths, dict) and i not in paths:
                raise InputError(f"no image for frame {i} (have frames {sorted(paths)[:5]}...)")
            if isinstance(paths, list) and not 0 <= i < len(paths):
                raise InputError(f"frame {i} requested from a list of {len(paths)} images")
            yield read_image(paths[i])

    return read


def video_frame_count(path: Path) -> int:
    """Number of frames in a video (decoded count when the container does not say)."""
    import av

    path = require_file(path, "video")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"{path}: unreadable video ({exc})") from None


def iter_video(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, (H, W, 3) uint8 RGB) of every frame, decoded front to back; one clear
    error naming the file for a missing, unreadable or corrupt video."""
    import av

    require_file(path, "video")
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                yield i, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"{path}: unreadable or corrupt video ({exc})") from None


def video_reader(path: Path) -> FrameReader:
    """A frame reader that decodes a video once, front to back, keeping the wanted frames."""

    def read(indices: list[int]) -> Iterator[np.ndarray]:
        wanted = sorted(indices)
        if not wanted:
            return
        position = 0
        for i, frame in iter_video(path):
            if i == wanted[position]:
                yield frame
                position += 1
                if position == len(wanted):
                    return
        raise InputError(
            f"{path}: video ends before frame {wanted[position]} (truncated or shorter than its poses)"
        )

    return read
