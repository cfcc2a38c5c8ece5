"""View-invariant pose retrieval benchmark (``metricpose retrieval``).

Protocol: every camera takes a turn as the query camera. Queries are (sub-sampled) frames of
the evaluation subjects seen from that camera; the database holds the same subjects' frames
seen from every *other* camera, so the query's own view is never in it. A good pose embedding
retrieves the same instant, or the same pose, from another viewpoint.

Scores, for k in (1, 5, 10, 20):
* mean PA-MPJPE@k (mm): the PA-MPJPE between the query's true 3D pose and each of its top-k
  retrievals' true poses, averaged over the k and over queries (lower is better);
* Hit@k: share of queries with at least one of the top-k retrievals within the pose threshold:
  NP-MPJPE ≤ 0.1, the PA-MPJPE between poses first centred on the pelvis and scaled to unit
  root-mean-square joint distance (a scale-free pose distance in the spirit of Pr-VIPE's;
  the threshold is configurable).

``protocol="pr-vipe"`` follows Pr-VIPE (Sun et al., ECCV 2020; google-research ``poem``) for
numbers comparable with its tables: poses centred on the pelvis and divided by the
pelvis-spine plus spine-thorax length (its ``LEGACY_3DH36M17`` profile), a hit is NP-MPJPE
*strictly* below the threshold, and every ordered camera pair (query camera → database
camera) is a retrieval set of its own, reported per pair and as the mean over pairs; its
published frames come as one key file per camera (``subject:action:camera:frame``, the frame
counted from 0 in the source video; :func:`read_prvipe_keys`). Mean PA-MPJPE@k, the
same-subject share and the cross-subject variant have no counterpart in its tables.

The cross-subject variant restricts the database to other subjects than the query's, and the
share of top-1 retrievals from the query's own subject (in the standard variant) shows how
much the embedding finds the person rather than the pose.
Reference rows: an oracle that retrieves by true 3D pose, and random retrieval.
Nearest neighbours come from FAISS (exact L2 index, or IVF for large databases).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from metricpose.errors import InputError
from metricpose.evaluate import Predictions
from metricpose.fileio import atomic_write_text
from metricpose.metrics import pa_mpjpe_per_sample
from metricpose.skeleton import ROOT, SPINE, THORAX, body_frame, root_relative

KS = (1, 5, 10, 20)


def build_index(vectors: np.ndarray, ivf_lists: int = 0, nprobe: int = 0) -> faiss.Index:
    """An exact L2 index, or an IVF-Flat one with ``ivf_lists`` lists searched ``nprobe`` at a
    time (default: a quarter of the lists) when ``ivf_lists`` > 0."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    d = vectors.shape[1]
    if ivf_lists <= 0:
        index = faiss.IndexFlatL2(d)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, ivf_lists)
        index.train(vectors)
        index.nprobe = nprobe or max(1, ivf_lists // 4)
    index.add(vectors)
    return index


def nearest_neighbours(
    database: np.ndarray, queries: np.ndarray, k: int, ivf_lists: int = 0, nprobe: int = 0
) -> np.ndarray:
    """(Q, k) database row indices of each query's k nearest neighbours, nearest first."""
    k = min(k, len(database))
    index = build_index(database, ivf_lists, nprobe)
    _, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return idx


def normalise_pose(poses: np.ndarray) -> np.ndarray:
    """Centre (N, 17, 3) poses on the pelvis and scale each to unit RMS joint distance."""
    centred = root_relative(poses)
    rms = np.sqrt((centred**2).sum(-1).mean(-1))
    return centred / np.maximum(rms, 1e-9)[:, None, None]


def normalise_pose_prvipe(poses: np.ndarray) -> np.ndarray:
    """Pr-VIPE's 3D normalisation of (N, 17, 3) poses: centred on the pelvis, divided by the
    pelvis-spine plus spine-thorax distance."""
    centred = root_relative(poses)
    torso = sum(
        np.linalg.norm(centred[:, a] - centred[:, b], axis=-1)
        for a, b in ((ROOT, SPINE), (SPINE, THORAX))
    )
    return centred / np.maximum(torso, 1e-9)[:, None, None]


@dataclass
class RetrievalSet:
    """Which rows of a Predictions serve as queries and which as database, for one query
    camera (and, in the cross-subject variant, one query subject)."""

    label: str
    queries: np.ndarray  # row indices
    database: np.ndarray


def protocol(
    pred: Predictions, query_stride: int = 1, cross_subject: bool = False
) -> list[RetrievalSet]:
    """Query/database splits, one per query camera (see the module docstring)."""
    sets = []
    for camera in np.unique(pred.camera):
        q = np.flatnonzero(pred.camera == camera)
        q = q[np.argsort(pred.instant[q], kind="stable")][::query_stride]
        db = np.flatnonzero(pred.camera != camera)
        if cross_subject:
            sets.extend(
                RetrievalSet(f"{camera}/{s}", q[pred.subject[q] == s], db[pred.subject[db] != s])
                for s in np.unique(pred.subject[q])
                if (pred.subject[db] != s).any()
            )
        else:
            sets.append(RetrievalSet(camera, q, db))
    return sets


def prvipe_sets(
    pred: Predictions, cameras: dict[str, np.ndarray] | None = None, query_stride: int = 1
) -> list[RetrievalSet]:
    """Pr-VIPE's retrieval sets: one per ordered camera pair, queries from the first camera,
    database from the second. ``cameras`` maps a camera to its frames' rows (from
    :func:`read_prvipe_keys`); by default every ``query_stride``-th instant of each camera,
    in both roles."""
    if cameras is None:
        cameras = {}
        for camera in np.unique(pred.camera):
            rows = np.flatnonzero(pred.camera == camera)
            cameras[str(camera)] = rows[np.argsort(pred.instant[rows], kind="stable")][
                ::query_stride
            ]
    return [
        RetrievalSet(f"{a}->{b}", cameras[a], cameras[b])
        for a in cameras
        for b in cameras
        if a != b
    ]


def read_prvipe_keys(
    paths: list[Path], pred: Predictions, takes: dict[str, tuple[str, list[int] | None]]
) -> dict[str, np.ndarray]:
    """Rows of ``pred`` named by Pr-VIPE key files (``subject:action:camera:frame`` per line,
    e.g. ``S11:Directions 1:54138969:000020``, the frame counted from 0 in the source video),
    grouped by camera.

    ``takes`` maps each sequence name to its source take (Human3.6M's "Directions 1"; the
    converter keeps it in ``meta.extra["take"]``) and the source frame of each stored frame
    (``meta.extra["source_frames"]``; None: stored frame = source frame).
    """
    row = {}
    for i, (seq, frame, camera) in enumerate(
        zip(pred.sequence, pred.frame, pred.camera, strict=True)
    ):
        take, source_frames = takes[str(seq)]
        source = int(source_frames[frame]) if source_frames is not None else int(frame)
        row[(str(pred.subject[i]), str(take), str(camera), source)] = i
    grouped: dict[str, list[int]] = {}
    for path in paths:
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(":")
            if len(parts) != 4 or not parts[3].isdigit():
                raise InputError(
                    f"{path}:{n}: expected 'subject:action:camera:frame', got {line!r}"
                )
            key = (parts[0], parts[1], parts[2], int(parts[3]))
            if key not in row:
                raise InputError(
                    f"{path}:{n}: {line.strip()!r} is not in the evaluated data (convert the "
                    "subjects' takes with a frame stride that keeps this frame, e.g. "
                    "`prepare h36m --stride 5` keeps every 5th)"
                )
            grouped.setdefault(parts[2], []).append(row[key])
    if len(grouped) < 2:
        raise InputError(f"{', '.join(map(str, paths))}: keys of at least two cameras needed")
    return {camera: np.array(rows) for camera, rows in grouped.items()}


def _scores(
    pred: Predictions,
    sets: list[RetrievalSet],
    neighbours: list[np.ndarray],
    threshold: float,
    prvipe: bool = False,
) -> dict[str, float]:
    pa_at = {k: [] for k in KS}
    hits = {k: [] for k in KS}
    own_subject = []
    for rs, nn in zip(sets, neighbours, strict=True):
        kmax = nn.shape[1]
        q_pose = np.repeat(pred.pose_gt[rs.queries], kmax, axis=0)
        r_pose = pred.pose_gt[rs.database[nn.ravel()]]
        pa = pa_mpjpe_per_sample(r_pose, q_pose).reshape(len(rs.queries), kmax)
        normalise = normalise_pose_prvipe if prvipe else normalise_pose
        np_pa = pa_mpjpe_per_sample(normalise(r_pose), normalise(q_pose)).reshape(
            len(rs.queries), kmax
        )
        close = np_pa < threshold if prvipe else np_pa <= threshold
        for k in KS:
            kk = min(k, kmax)
            pa_at[k].append(pa[:, :kk].mean(1))
            hits[k].append(close[:, :kk].any(1))
        own_subject.append(pred.subject[rs.database[nn[:, 0]]] == pred.subject[rs.queries])
    out = {f"mean_pa_mpjpe@{k}": float(np.concatenate(pa_at[k]).mean()) for k in KS}
    out.update({f"hit@{k}": float(np.concatenate(hits[k]).mean()) for k in KS})
    out["top1_same_subject"] = float(np.concatenate(own_subject).mean())
    out["queries"] = int(sum(len(rs.queries) for rs in sets))
    return out


def evaluate_retrieval(
    pred: Predictions,
    query_stride: int = 1,
    threshold: float = 0.1,
    cross_subject: bool = False,
    ivf_lists: int = 0,
    seed: int = 0,
    sets: list[RetrievalSet] | None = None,
    references: bool = True,
    prvipe: bool = False,
) -> dict[str, dict[str, float]]:
    """Scores of the embedding (and, with ``references``, of the oracle and random reference
    rows, which do not depend on the model), on ``sets`` (from a key file) or on the
    protocol's own splits.

    With ``prvipe`` the scores follow Pr-VIPE (see the module docstring): its normalisation
    and strict threshold, each row the mean over the sets (camera pairs) rather than over
    pooled queries, and ``"per_pair"`` holds the embedding's scores of each pair.
    """
    if not pred.labelled.all():
        raise InputError("retrieval scoring needs ground-truth 3D poses for every evaluated frame")
    if sets is None:
        sets = (
            prvipe_sets(pred, None, query_stride)
            if prvipe
            else protocol(pred, query_stride, cross_subject)
        )
    if not sets:
        raise InputError(
            "retrieval needs at least two cameras (and two subjects for the cross-subject variant)"
        )
    kmax = max(KS)
    emb = [
        nearest_neighbours(pred.embedding[rs.database], pred.embedding[rs.queries], kmax, ivf_lists)
        for rs in sets
    ]

    def per_set(neighbours: list[np.ndarray]) -> dict[str, dict[str, float]]:
        return {
            rs.label: _scores(pred, [rs], [nn], threshold, prvipe=True)
            for rs, nn in zip(sets, neighbours, strict=True)
        }

    def mean_over_sets(results: dict[str, dict[str, float]]) -> dict[str, float]:
        rows = list(results.values())
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "queries"}
        return {**mean, "queries": int(sum(r["queries"] for r in rows))}

    def scores(neighbours: list[np.ndarray]) -> dict[str, float]:
        if prvipe:
            return mean_over_sets(per_set(neighbours))
        return _scores(pred, sets, neighbours, threshold)

    if prvipe:
        pairs = per_set(emb)
        result = {"embedding": mean_over_sets(pairs), "per_pair": pairs}
    else:
        result = {"embedding": scores(emb)}
    if not references:
        return result
    # Oracle: nearest by the true pose itself, in the body-centred frame (no view, no heading).
    gt = torch.as_tensor(pred.pose_gt)
    flat = (gt @ body_frame(gt)).reshape(len(gt), -1).numpy()
    oracle = [nearest_neighbours(flat[rs.database], flat[rs.queries], kmax) for rs in sets]
    rng = np.random.default_rng(seed)
    random = [
        rng.integers(len(rs.database), size=(len(rs.queries), min(kmax, len(rs.database))))
        for rs in sets
    ]
    result["oracle_3d"] = scores(oracle)
    result["random"] = scores(random)
    return result


def write_keys(path: Path, pred: Predictions, sets: list[RetrievalSet]) -> None:
    """Write the evaluated (query, database) frame keys as text, one line per key:
    ``query|database <set label> <sequence> <frame> <camera>``."""
    lines = []
    for rs in sets:
        for role, rows in (("query", rs.queries), ("database", rs.database)):
            lines.extend(
                f"{role} {rs.label} {pred.sequence[i]} {pred.frame[i]} {pred.camera[i]}"
                for i in rows
            )
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_keys(path: Path, pred: Predictions) -> list[RetrievalSet]:
    """Rebuild retrieval sets from a key file written by :func:`write_keys`."""
    row = {
        (s, int(f), c): i
        for i, (s, f, c) in enumerate(zip(pred.sequence, pred.frame, pred.camera, strict=True))
    }
    grouped: dict[str, dict[str, list[int]]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 5 or parts[0] not in ("query", "database"):
            raise InputError(
                f"{path}:{n}: expected 'query|database <set label> <sequence> <frame> <camera>'"
            )
        key = (parts[2], int(parts[3]), parts[4])
        if key not in row:
            raise InputError(f"{path}:{n}: frame {key} is not in the evaluated data")
        grouped.setdefault(parts[1], {"query": [], "database": []})[parts[0]].append(row[key])
    return [
        RetrievalSet(label, np.array(g["query"]), np.array(g["database"]))
        for label, g in grouped.items()
    ]
