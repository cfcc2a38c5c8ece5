"""The ``metricpose`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _synth(args: argparse.Namespace) -> None:
    from metricpose.studio.generate import generate, synth_config

    config = synth_config(
        args.preset, seed=args.seed, res=args.res, cameras=args.cameras, frames=args.frames,
        random_rig=args.random_rig or None,
    )  # fmt: skip
    folders = generate(Path(args.out), config)
    print(f"wrote {len(folders)} sequences to {args.out}")


def _show(args: argparse.Namespace) -> None:
    from metricpose.viz import contact_sheet

    out = contact_sheet(Path(args.data), Path(args.out), num_frames=args.frames, seed=args.seed)
    print(f"wrote {out}")


def _check_data(args: argparse.Namespace) -> int:
    from metricpose.data.format import check_dataset

    summary, problems = check_dataset(Path(args.data))
    print(
        f"{args.data}: {summary['sequences']} sequences, {summary['frames']} frames, "
        f"{summary['crops']} crops, cameras {', '.join(summary['cameras']) or '-'}"
    )
    if summary["frames"]:
        share = summary["labelled_frames"] / summary["frames"]
        print(f"labelled: {summary['labelled_frames']} frames ({100 * share:.1f}%)")
        for subject, frames in sorted(summary["subjects"].items()):
            print(f"  {subject}: {frames} frames")
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metricpose",
        description="Monocular 3D human pose from scarce 3D labels and multi-view metric learning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a synthetic multi-view studio dataset")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--preset", default="default", help="tiny | default | full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--res", type=int, default=None, help="crop side in px (default 64)")
    p.add_argument("--cameras", type=int, default=None, help="number of cameras (default 4)")
    p.add_argument("--frames", type=int, default=None, help="frames per take")
    p.add_argument("--random-rig", action="store_true", help="random camera placement and lenses")
    p.set_defaults(func=_synth)

    p = sub.add_parser("show", help="write a contact-sheet PNG of a dataset")
    p.add_argument("data", help="dataset folder")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--frames", type=int, default=4, help="number of frames (rows)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_show)

    p = sub.add_parser("check-data", help="validate a dataset and print a summary")
    p.add_argument("data", help="dataset folder")
    p.set_defaults(func=_check_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Our readers raise ValueError subclasses whose message names the file and the problem.
        print(f"metricpose {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
