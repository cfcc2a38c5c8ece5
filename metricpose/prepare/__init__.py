"""Converters from real datasets and users' own rigs to the project format (`metricpose prepare`).

One module per source: h36m, mpi_inf_3dhp, panoptic, custom; common holds what they share.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from metricpose.checkpoint import no_empty_output_on_failure
from metricpose.errors import InputError
from metricpose.prepare.common import SourceSequence, convert

SOURCES = ("h36m", "mpi-inf-3dhp", "panoptic", "custom")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def source_sequences(args: argparse.Namespace) -> Iterator[SourceSequence]:
    """The converter's sequences for parsed `metricpose prepare <source>` arguments."""
    root, frames = Path(args.root), not args.no_frames
    if args.source == "h36m":
        from metricpose.prepare import h36m

        if args.annotations:
            return h36m.mmpose_sequences(root, Path(args.annotations))
        return h36m.official_sequences(root, _csv(args.subjects), args.stride, frames)
    if args.source == "mpi-inf-3dhp":
        from metricpose.prepare import mpi_inf_3dhp

        if args.annotations:
            if not args.cameras_pickle:
                raise InputError("--annotations (mmpose layout) needs --cameras-pickle")
            return mpi_inf_3dhp.mmpose_sequences(
                root, Path(args.annotations), Path(args.cameras_pickle)
            )
        if args.test:
            return mpi_inf_3dhp.testset_sequences(root, args.stride, frames)
        cameras = mpi_inf_3dhp.ALL_CAMERAS if args.all_cameras else mpi_inf_3dhp.DEFAULT_CAMERAS
        if args.cameras:
            cameras = tuple(int(c) for c in _csv(args.cameras))
        return mpi_inf_3dhp.training_sequences(
            root, _csv(args.subjects), cameras, args.stride, frames
        )
    if args.source == "panoptic":
        from metricpose.prepare import panoptic

        return panoptic.sequences(root, _csv(args.cameras), args.stride, frames)
    if args.source == "custom":
        from metricpose.prepare import custom

        return custom.sequences(root, args.subject, args.action, args.fps, args.stride, frames)
    raise InputError(f"unknown source {args.source!r}; choose from {', '.join(SOURCES)}")


def prepare(args: argparse.Namespace) -> dict[str, int]:
    """Convert, skipping sequences already complete in --out; returns written/skipped counts.
    A conversion that fails before writing anything leaves no empty --out folder behind."""
    out = Path(args.out)
    with no_empty_output_on_failure(out):
        return convert(
            source_sequences(args),
            out,
            crop_size=args.crop_size,
            with_frames=not args.no_frames,
            source=args.source,
            progress=not args.no_progress,
        )
