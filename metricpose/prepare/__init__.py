"""Converters from real datasets and users' own rigs to the project format (`metricpose prepare`).

One module per source: h36m, mpi_inf_3dhp, panoptic, custom; common holds what they share.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from metricpose.fileio import no_empty_output_on_failure
from metricpose.prepare.common import SourceSequence, convert


def prepare(
    sequences: Iterable[SourceSequence],
    out: Path,
    source: str,
    crop_size: int = 128,
    with_frames: bool = True,
    progress: bool = True,
) -> dict[str, int]:
    """Convert a converter's ``sequences`` into ``out``, skipping sequences already complete
    there; returns written/skipped counts. ``source`` names the dataset in every sequence's
    metadata. A conversion that fails before writing anything leaves no empty ``out``."""
    out = Path(out)
    with no_empty_output_on_failure(out):
        return convert(
            sequences,
            out,
            crop_size=crop_size,
            with_frames=with_frames,
            source=source,
            progress=progress,
        )
