"""The ``metricpose`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from metricpose.errors import InputError, TrainingInterrupted
from metricpose.fileio import atomic_write_text

if TYPE_CHECKING:
    from metricpose.prepare.common import SourceSequence


def _synth(args: argparse.Namespace) -> None:
    from metricpose.studio.generate import generate, synth_config

    config = synth_config(
        args.preset, seed=args.seed, res=args.res, cameras=args.cameras, frames=args.frames,
        random_rig=args.random_rig or None, rig_file=args.rig, backdrop=args.backdrop,
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


PREPARE_SOURCES = ("h36m", "mpi-inf-3dhp", "panoptic", "custom")


def _csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _source_sequences(args: argparse.Namespace) -> Iterable[SourceSequence]:
    """The converter's sequences for parsed `metricpose prepare <source>` arguments."""
    root, frames = Path(args.root), not args.no_frames
    if args.source == "h36m":
        from metricpose.prepare import h36m

        if args.annotations:
            return h36m.mmpose_sequences(root, Path(args.annotations))
        return h36m.official_sequences(root, _csv_list(args.subjects), args.stride, frames)
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
            cameras = tuple(int(c) for c in _csv_list(args.cameras))
        return mpi_inf_3dhp.training_sequences(
            root, _csv_list(args.subjects), cameras, args.stride, frames
        )
    if args.source == "panoptic":
        from metricpose.prepare import panoptic

        return panoptic.sequences(root, _csv_list(args.cameras), args.stride, frames)
    if args.source == "custom":
        from metricpose.prepare import custom

        return custom.sequences(root, args.subject, args.action, args.fps, args.stride, frames)
    raise InputError(f"unknown source {args.source!r}; choose from {', '.join(PREPARE_SOURCES)}")


def _prepare(args: argparse.Namespace) -> int:
    from metricpose.prepare import prepare

    counts = prepare(
        _source_sequences(args),
        Path(args.out),
        args.source,
        crop_size=args.crop_size,
        with_frames=not args.no_frames,
        progress=not args.no_progress,
    )
    print(
        f"{args.out}: wrote {counts['written']} sequences, kept {counts['skipped']} complete from before"
    )
    return _check_data(argparse.Namespace(data=args.out))


def _add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="convert a real dataset or your own rig to the metricpose format",
        description="Convert Human3.6M, MPI-INF-3DHP, CMU Panoptic or your own calibrated "
        "multi-view recording (docs/datasets.md). Re-running resumes: complete sequences are kept.",
    )
    kinds = p.add_subparsers(dest="source", required=True)
    parsers = {
        "h36m": kinds.add_parser("h36m", help="Human3.6M (official download or mmpose layout)"),
        "mpi-inf-3dhp": kinds.add_parser("mpi-inf-3dhp", help="MPI-INF-3DHP training or test set"),
        "panoptic": kinds.add_parser("panoptic", help="one CMU Panoptic Studio sequence folder"),
        "custom": kinds.add_parser("custom", help="your own synchronised, calibrated recording"),
    }
    for name, q in parsers.items():
        q.add_argument("--root", required=True, help="the source folder")
        q.add_argument("--out", required=True, help="dataset folder to write (or resume)")
        q.add_argument("--crop-size", type=int, default=128, help="side of the stored crops, px")
        q.add_argument("--stride", type=int, default=1 if name != "h36m" else 5,
                       help="keep every n-th frame")  # fmt: skip
        q.add_argument("--no-frames", action="store_true",
                       help="cameras and 3D poses only: no video decoding")  # fmt: skip
        q.add_argument("--no-progress", action="store_true")
    h = parsers["h36m"]
    h.add_argument("--subjects", help="comma-separated (default: S1,S5,S6,S7,S8,S9,S11)")
    h.add_argument("--annotations", help="mmpose layout: the annotation .npz (images under --root)")
    m = parsers["mpi-inf-3dhp"]
    m.add_argument("--subjects", help="comma-separated (default: S1..S8)")
    m.add_argument("--cameras", help="camera numbers, comma-separated (default: 0-10)")
    m.add_argument("--all-cameras", action="store_true", help="include the ceiling cameras 11-13")
    m.add_argument("--test", action="store_true", help="convert the test set TS1-TS6 instead")
    m.add_argument("--annotations", help="mmpose layout: the annotation .npz (images under --root)")
    m.add_argument("--cameras-pickle", help="mmpose layout: cameras_train.pkl or cameras_test.pkl")
    parsers["panoptic"].add_argument(
        "--cameras", help="HD camera names, e.g. 00_03,00_12 (default: all)"
    )
    c = parsers["custom"]
    c.add_argument("--subject", required=True, help="who is recorded (letters, digits, _ . + -)")
    c.add_argument("--action", default="capture", help="what they do (default: capture)")
    c.add_argument("--fps", type=float, default=25.0, help="frame rate of the recording")
    p.set_defaults(func=_prepare)


def _predict(args: argparse.Namespace) -> int:
    from metricpose.api import load
    from metricpose.predict import predict_files

    summary = predict_files(
        load(args.checkpoint, args.device), [Path(p) for p in args.inputs], Path(args.out),
        boxes_file=Path(args.boxes) if args.boxes else None, detector=args.detector,
        stride=args.stride, smooth=args.smooth, viz=args.viz, batch_size=args.batch_size,
        progress=not args.no_progress,
    )  # fmt: skip
    print(
        f"{summary['frames']} frames predicted, {summary['skipped']} inputs skipped: "
        f"{summary['out']}/predictions.json and predictions.npz"
    )
    return 1 if summary["skipped"] else 0


def _search(args: argparse.Namespace) -> None:
    from metricpose.api import load
    from metricpose.imaging import read_image
    from metricpose.search import build_search_index, gallery, query

    model = load(args.checkpoint, args.device)
    if args.action == "build":
        s = build_search_index(model, Path(args.source), Path(args.index), args.stride, args.ivf)
        print(
            f"indexed {s['items']} crops in {s['embed_seconds']:.1f} s "
            f"({s['items'] / max(s['embed_seconds'], 1e-9):.0f} crops/s); index built in "
            f"{1000 * s['index_build_seconds']:.1f} ms: {s['out']}"
        )
        return
    image = read_image(Path(args.image))
    found = query(model, Path(args.index), image, args.k)
    for rank, r in enumerate(found["results"], 1):
        where = (
            f"{r['sequence']} {r['camera']} frame {r['frame']}" if "dataset" in r else r["image"]
        )
        print(f"{rank:>3}  d={r['distance']:.4f}  {where}")
    print(f"query took {found['query_ms']:.2f} ms (search only)")
    if args.out:
        gallery(image, found["results"], Path(args.out))
        print(f"wrote {args.out}")


def _export(args: argparse.Namespace) -> None:
    from metricpose.export import export

    if not args.onnx and not args.torchscript:
        raise InputError("give --onnx FILE and/or --torchscript FILE")
    written = export(Path(args.checkpoint), args.onnx, args.torchscript)
    for kind in ("onnx", "torchscript"):
        if kind in written:
            print(f"wrote {written[kind]}")
    print(
        f"input: images (batch, {written['crop_size']}, {written['crop_size']}, 3) float RGB 0-255"
    )


def _add_inference_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="3D poses for images, image folders and videos")
    p.add_argument("inputs", nargs="+", help="image files, video files or folders of them")
    p.add_argument("--checkpoint", required=True, help="model.pt or a training .ckpt")
    p.add_argument("--out", required=True, help="folder for predictions.json/.npz (and viz/)")
    p.add_argument(
        "--boxes",
        help="person boxes: JSON {file: box | {frame: box}} or CSV file,frame,x0,y0,x1,y1",
    )
    p.add_argument(
        "--detector",
        help="person detector weights (Faster R-CNN R50-FPN state_dict) or 'torchvision' to download them",
    )
    p.add_argument("--stride", type=int, default=1, help="video: predict every n-th frame")
    p.add_argument(
        "--smooth",
        type=int,
        default=1,
        help="video: moving-average window (frames) for a smoothed track",
    )
    p.add_argument(
        "--viz", action="store_true", help="write a picture per image / an mp4 per video"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_predict)

    p = sub.add_parser("search", help="pose search: build an index, query it with an image")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="embed a dataset or an image folder into an index")
    b.add_argument("source", help="dataset folder (project format) or folder of images")
    b.add_argument("--stride", type=int, default=1, help="dataset: every n-th instant")
    b.add_argument("--ivf", type=int, default=0, help="IVF lists (0: exact search)")
    q = actions.add_parser("query", help="the k most similar poses to an image")
    q.add_argument("image", help="query image (the person filling it)")
    q.add_argument("--k", type=int, default=5)
    q.add_argument("--out", help="gallery PNG to write")
    for a in (b, q):
        a.add_argument("--checkpoint", required=True, help="model.pt or a training .ckpt")
        a.add_argument("--index", required=True, help="index folder")
        a.add_argument("--device", default="auto")
    p.set_defaults(func=_search)

    p = sub.add_parser("export", help="export the model to ONNX and/or TorchScript")
    p.add_argument("--checkpoint", required=True, help="model.pt or a training .ckpt")
    p.add_argument("--onnx", help="ONNX file to write (dynamic batch)")
    p.add_argument("--torchscript", help="TorchScript file to write")
    p.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> None:
    from metricpose.config import load_config
    from metricpose.train import train

    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"data.root={args.data}")
    config = load_config(args.config, overrides, recipe=args.recipe)
    summary = train(config, Path(args.out), resume=args.resume, progress=not args.no_progress)
    rate = summary["images_per_second"]
    rate_text = "" if rate is None else f" ({rate:.0f} images/s from the first to the last step)"
    print(
        f"trained {summary['steps']} steps in {summary['train_seconds']:.0f} s"
        f"{rate_text}; model: {summary['model']}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    import json

    from metricpose.evaluate import evaluate_checkpoint, format_table

    subjects = _csv_list(args.subjects)
    scores = evaluate_checkpoint(
        Path(args.checkpoint), Path(args.data), subjects, args.stride, flip_test=args.flip_test
    )
    print(format_table(scores))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(scores, indent=1))
        print(f"wrote {args.out}")


def _pseudo_label(args: argparse.Namespace) -> None:
    from metricpose.pseudo_labels import write_pseudo_labels

    subjects = _csv_list(args.subjects)
    index = write_pseudo_labels(
        Path(args.checkpoint),
        Path(args.data),
        Path(args.out),
        subjects,
        mirror=not args.no_mirror,
        smooth_s=args.smooth_s,
        silhouettes=not args.no_silhouettes,
    )
    fallback = sum(len(s["fallback_frames"]) for s in index["sequences"].values())
    frames = sum(s["frames"] for s in index["sequences"].values())
    print(
        f"pseudo-labelled {len(index['sequences'])} sequences, {frames} instants "
        f"({fallback} from the views' average where triangulation flew off): {args.out}\n"
        f"train a student: metricpose train --config pseudo_labelled --data {args.data} "
        f"--set data.pseudo_labels={args.out}"
    )


def _retrieval(args: argparse.Namespace) -> None:
    import json

    from metricpose.checkpoint import load_model
    from metricpose.data.dataset import MultiViewDataset
    from metricpose.evaluate import default_test_subjects, predict_dataset
    from metricpose.retrieval import (
        evaluate_retrieval,
        protocol,
        prvipe_sets,
        read_keys,
        read_prvipe_keys,
        write_keys,
    )

    prvipe = args.protocol == "pr-vipe"
    if args.keys_in and len(args.keys_in) > 1 and not prvipe:
        raise InputError("--keys-in takes one file (several only with --protocol pr-vipe)")
    model, config = load_model(Path(args.checkpoint))
    subjects = _csv_list(args.subjects) or default_test_subjects(Path(args.data), config)
    dataset = MultiViewDataset(Path(args.data), subjects=subjects, num_views=1)
    pred = predict_dataset(model, dataset)
    if prvipe:
        takes = {
            seq.name: (
                seq.meta.extra.get("take", seq.meta.action),
                seq.meta.extra.get("source_frames"),
            )
            for seq in dataset.sequences
        }
        cameras = read_prvipe_keys(args.keys_in, pred, takes) if args.keys_in else None
        sets = prvipe_sets(pred, cameras, args.query_stride)
    elif args.keys_in:
        sets = read_keys(Path(args.keys_in[0]), pred)
    else:
        sets = protocol(pred, args.query_stride, args.cross_subject)
    if args.keys_out:
        write_keys(Path(args.keys_out), pred, sets)
    result = evaluate_retrieval(
        pred, threshold=args.threshold, ivf_lists=args.ivf_lists, sets=sets, prvipe=prvipe
    )
    per_pair = result.pop("per_pair", {})
    print("| retrieval | " + " | ".join(k for k in result["embedding"]) + " |")
    for row, values in [*result.items(), *((f"embedding {p}", v) for p, v in per_pair.items())]:
        print(
            f"| {row} | "
            + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values.values())
            + " |"
        )
    if args.out:
        atomic_write_text(
            Path(args.out),
            json.dumps({**result, **({"per_pair": per_pair} if prvipe else {})}, indent=1),
        )


def _demo(args: argparse.Namespace) -> None:
    from metricpose.demo import run_demo

    run_demo(
        Path(args.out),
        args.preset,
        Path(args.data) if args.data else None,
        progress=not args.no_progress,
        threads=args.threads,
        overrides=args.set,
        variants=tuple(_csv_list(args.variants)) if args.variants else None,
        workers=args.jobs,
    )


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
    p.add_argument(
        "--res",
        type=int,
        default=None,
        help="crop side in px (default: the preset's; 48 for default)",
    )
    p.add_argument("--cameras", type=int, default=None, help="number of cameras (default 4)")
    p.add_argument("--frames", type=int, default=None, help="frames per take")
    p.add_argument("--random-rig", action="store_true", help="random camera placement and lenses")
    p.add_argument("--rig", help="JSON list of cameras (cameras.json layout) to render with")
    p.add_argument(
        "--backdrop",
        choices=["studio", "random"],
        help="behind the person: the studio room, or a random pattern per crop "
        "(default: the preset's; random for default)",
    )
    p.set_defaults(func=_synth)

    p = sub.add_parser("show", help="write a contact-sheet PNG of a dataset")
    p.add_argument("data", help="dataset folder")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--frames", type=int, default=4, help="number of frames (rows)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_show)

    _add_prepare_parser(sub)
    _add_inference_parsers(sub)

    p = sub.add_parser("check-data", help="validate a dataset and print a summary")
    p.add_argument("data", help="dataset folder")
    p.set_defaults(func=_check_data)

    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train on a dataset. Every config option can be overridden with --set key=value "
        "(e.g. --set loss.margin=0.3 --set train.steps=3000); see metricpose/configs/default.yaml.",
    )
    p.add_argument(
        "--config", default="metric", help="preset (baseline, metric, metric_adv) or a YAML file"
    )
    p.add_argument(
        "--recipe",
        help="a dataset's experiment settings applied after the preset: h36m_paper "
        "(docs/datasets.md) or a YAML file",
    )
    p.add_argument("--data", help="dataset folder (same as --set data.root=DIR)")
    p.add_argument(
        "--out", required=True, help="run folder: checkpoints, logs, config.yaml, model.pt"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config option (repeatable)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="3D pose metrics of a checkpoint on a dataset")
    p.add_argument("--checkpoint", required=True, help="model.pt or a training .ckpt")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument(
        "--subjects",
        help="comma-separated subjects (default: a studio's test people, else the config's test subjects)",
    )
    p.add_argument("--stride", type=int, default=1, help="evaluate every N-th instant")
    p.add_argument(
        "--flip-test",
        action="store_true",
        help="each pose is the mean of the answers for the crop and its mirror image",
    )
    p.add_argument("--out", help="also write the scores as JSON")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "pseudo-label",
        help="3D pseudo-labels for unlabelled multi-view video: a model's views, triangulated "
        "and fitted to the silhouettes",
    )
    p.add_argument("--checkpoint", required=True, help="the teacher: model.pt or a training .ckpt")
    p.add_argument("--data", required=True, help="dataset folder with calibrated cameras")
    p.add_argument("--out", required=True, help="folder for the pseudo-labels (data.pseudo_labels)")
    p.add_argument(
        "--subjects", help="comma-separated subjects (default: the teacher's training subjects)"
    )
    p.add_argument(
        "--no-mirror",
        action="store_true",
        help="the teacher sees each crop once (default: also mirrored left-right, answers averaged)",
    )
    p.add_argument(
        "--smooth-s",
        type=float,
        default=0.16,
        help="Gaussian smoothing of the labels along time, sigma in seconds (0: none; default 0.16)",
    )
    p.add_argument(
        "--no-silhouettes",
        action="store_true",
        help="keep the triangulated labels (default: fit them to the person's silhouettes, "
        "masks/<camera>.npy, where every camera of a person's sequences has them)",
    )
    p.set_defaults(func=_pseudo_label)

    p = sub.add_parser("retrieval", help="view-invariant pose retrieval benchmark of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--subjects",
        help="comma-separated subjects (default: a studio's test people, else the config's test subjects)",
    )
    p.add_argument("--query-stride", type=int, default=1, help="use every N-th frame as a query")
    p.add_argument(
        "--cross-subject", action="store_true", help="database holds only other subjects"
    )
    p.add_argument("--threshold", type=float, default=0.1, help="NP-MPJPE threshold of a hit")
    p.add_argument("--ivf-lists", type=int, default=0, help="FAISS IVF lists (0: exact search)")
    p.add_argument(
        "--protocol",
        choices=["ours", "pr-vipe"],
        default="ours",
        help="ours: every other camera pooled as the database, unit-RMS poses, hit if NP-MPJPE "
        "<= threshold; pr-vipe: Pr-VIPE's camera pairs, normalisation and strict < threshold",
    )
    p.add_argument("--keys-out", help="write the evaluated query/database keys to this text file")
    p.add_argument(
        "--keys-in",
        nargs="+",
        help="evaluate exactly these keys: a file written by --keys-out, or with --protocol "
        "pr-vipe its per-camera key files (subject:action:camera:frame)",
    )
    p.add_argument("--out", help="also write the scores as JSON")
    p.set_defaults(func=_retrieval)

    p = sub.add_parser("demo", help="the end-to-end experiment on the synthetic studio")
    p.add_argument(
        "--out", required=True, help="output folder (results.json, report.md, plots, runs/)"
    )
    p.add_argument("--preset", default="default", help="tiny | default | seeds | sweep | full")
    p.add_argument(
        "--data",
        help="studio data folder (default: OUT/data/studio-<preset>; generated if missing)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads per training (0: 1 when trainings run side by side, else torch's default)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every variant (ablations, e.g. model.regressor_input=embedding+features)",
    )
    p.add_argument(
        "--variants",
        default="",
        help="comma-separated variants to train and compare (default: the demo preset's; the "
        "baseline and its all-labels ceiling always run)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="trainings at once (default: 2 on a CPU machine with 2+ cores, 1 on a GPU)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, OSError) as exc:
        print(f"metricpose {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:  # train, or demo training in this process
        print(f"metricpose {args.command}: {stop}", file=sys.stderr)
        return 128 + stop.signal_number  # the shell's convention for "ended by a signal"


if __name__ == "__main__":
    sys.exit(main())
