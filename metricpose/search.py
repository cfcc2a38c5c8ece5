"""`metricpose search`: a saved pose-search index over a dataset or an image folder.

An index folder holds ``index.faiss`` (the embeddings; exact or IVF) and ``items.json`` (what
each row is: a dataset crop ``{"dataset", "sequence", "camera", "frame"}`` or an image file
``{"image", "box"}``). Queries embed an image with the same model and return the k nearest
poses from any camera, with a gallery picture.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from metricpose.api import PoseModel
from metricpose.errors import InputError
from metricpose.fileio import atomic_write_bytes, atomic_write_text
from metricpose.retrieval import build_index

INDEX_FILE, ITEMS_FILE = "index.faiss", "items.json"


def build_search_index(
    model: PoseModel, source: Path, out: Path, stride: int = 1, ivf_lists: int = 0
) -> dict[str, Any]:
    """Embed every crop of a dataset (every ``stride``-th instant) or every image of a folder."""
    from metricpose.data.dataset import MultiViewDataset
    from metricpose.data.format import is_complete
    from metricpose.evaluate import predict_dataset
    from metricpose.imaging import IMAGE_SUFFIXES, read_image
    from metricpose.predict import discover_inputs

    source, out = Path(source), Path(out)
    began = time.perf_counter()
    if source.is_dir() and any(is_complete(p) for p in source.iterdir() if p.is_dir()):
        pred = predict_dataset(
            model.network, MultiViewDataset(source, num_views=1), stride, device=model.device
        )
        vectors = pred.embedding
        items = [
            {
                "dataset": str(source.resolve()),
                "sequence": str(s),
                "camera": str(c),
                "frame": int(f),
            }
            for s, c, f in zip(pred.sequence, pred.camera, pred.frame, strict=True)
        ]
    else:
        paths = [p for p in discover_inputs([source]) if p.suffix.lower() in IMAGE_SUFFIXES]
        result = model.predict([read_image(p) for p in paths])
        vectors = result.embeddings
        items = [
            {"image": str(p.resolve()), "box": b.tolist()}
            for p, b in zip(paths, result.boxes, strict=True)
        ]
    embed_seconds = time.perf_counter() - began
    began = time.perf_counter()
    index = build_index(vectors, ivf_lists=ivf_lists)
    build_seconds = time.perf_counter() - began
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / INDEX_FILE, faiss.serialize_index(index).tobytes())
    atomic_write_text(out / ITEMS_FILE, json.dumps({"crop_size": model.crop_size, "items": items}))
    return {
        "items": len(items),
        "embed_seconds": embed_seconds,
        "index_build_seconds": build_seconds,
        "out": str(out),
    }


def load_search_index(folder: Path) -> tuple[faiss.Index, list[dict[str, Any]]]:
    folder = Path(folder)
    for name in (INDEX_FILE, ITEMS_FILE):
        if not (folder / name).is_file():
            raise InputError(
                f"{folder / name}: not found (build the index with `metricpose search build`)"
            )
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
        items = json.loads((folder / ITEMS_FILE).read_text())["items"]
    except (RuntimeError, json.JSONDecodeError, KeyError) as exc:
        raise InputError(f"{folder}: corrupt search index ({exc})") from None
    if index.ntotal != len(items):
        raise InputError(
            f"{folder}: index has {index.ntotal} vectors but items.json lists {len(items)}"
        )
    return index, items


def item_crop(item: dict[str, Any], size: int) -> np.ndarray:
    """The (size, size, 3) picture of an index row, read back from its source."""
    from metricpose.data.format import SequenceFolder
    from metricpose.imaging import crop, read_image

    if "dataset" in item:
        seq = SequenceFolder(Path(item["dataset"]) / item["sequence"], check_frames=False)
        return crop(
            np.asarray(seq.frames(item["camera"])[item["frame"]]),
            np.array([0, 0, seq.meta.crop_size, seq.meta.crop_size], float),
            size,
        )
    return crop(read_image(Path(item["image"])), np.asarray(item["box"]), size)


def query(
    model: PoseModel, folder: Path, image: np.ndarray, k: int = 5, box: np.ndarray | None = None
) -> dict[str, Any]:
    """The k nearest index rows to the pose in ``image``: items, L2 distances, query time."""
    index, items = load_search_index(folder)
    embedding = model.embed(image, None if box is None else np.asarray(box)[None])
    began = time.perf_counter()
    distances, rows = index.search(
        np.ascontiguousarray(embedding, dtype=np.float32), min(k, len(items))
    )
    seconds = time.perf_counter() - began
    return {
        "results": [
            {**items[r], "distance": float(d)}
            for d, r in zip(distances[0], rows[0], strict=True)
            if r >= 0
        ],
        "query_ms": 1000 * seconds,
    }


def gallery(
    query_image: np.ndarray, results: list[dict[str, Any]], path: Path, size: int = 128
) -> None:
    """A PNG row: the query, then the results nearest first, with their distances."""
    from metricpose.imaging import crop, whole_frame_box
    from metricpose.viz import plt

    fig, axes = plt.subplots(1, len(results) + 1, figsize=(2 * (len(results) + 1), 2.3))
    axes = np.atleast_1d(axes)
    axes[0].imshow(
        crop(query_image, whole_frame_box(query_image.shape[1], query_image.shape[0]), size)
    )
    axes[0].set_title("query", fontsize=8)
    for ax, result in zip(axes[1:], results, strict=True):
        ax.imshow(item_crop(result, size))
        label = (
            f"{result['sequence']}/{result['camera']}#{result['frame']}"
            if "dataset" in result
            else Path(result["image"]).name
        )
        ax.set_title(f"{label}\nd={result['distance']:.3f}", fontsize=6)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
