"""`kerascls-edge` command line: `predict`, `convert`, `report` and `info`.

argparse rather than absl (the kerascls CLI's choice) keeps the edge install down to numpy,
Pillow and LiteRT; the flags still follow kerascls's snake_case names.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from .bundle import EdgeError

PROG = "kerascls-edge"


MAX_THREADS = 256  # more would only exhaust memory: every thread has its own stack


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _thread_count(low: int):
    """An argparse type: an int in [low, MAX_THREADS]."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= MAX_THREADS:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {MAX_THREADS}], got {value}")
        return value
    parse.__name__ = "int"
    return parse


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float_in(lo: float, hi: float, allow_inf: bool = False):
    """An argparse type: a float in [lo, hi]; NaN always refused (it compares false to all)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if math.isnan(value) or (math.isinf(value) and not allow_inf) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be a number in [{lo:g}, {hi:g}], "
                                             f"got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images into MegaDetector-format JSON or CSV")
    p.add_argument("bundle", help="bundle directory, or a .tflite file (with --labels)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True,
                   help="results file (.json or .csv), or a folder with --format camtrapdp")
    p.add_argument("--format", choices=("megadetector", "csv", "camtrapdp"), default=None,
                   help="default: csv for a .csv output, else megadetector; camtrapdp: a "
                        "Camtrap DP 1.0 package in the --output folder")
    p.add_argument("--labels", help="labels file for a bare .tflite (line i = class i)")
    p.add_argument("--threads", type=_thread_count(1), default=None,
                   help="interpreter threads (default 1: each decode thread then runs "
                        "its own one-thread interpreter on what it decoded; N > 1: one "
                        "interpreter of N threads behind the decode threads)")
    p.add_argument("--decode_threads", type=_thread_count(0), default=None,
                   help="decode threads (default: one per core, at least --threads + 1; "
                        "0 decodes inline)")
    p.add_argument("--recursive", action="store_true", help="descend into subfolders")
    p.add_argument("--top_k", type=_positive_int, default=5)
    p.add_argument("--detections", help="MegaDetector output file: classify its animal boxes")
    p.add_argument("--detection_threshold", type=_float_in(0.0, 1.0), default=0.2,
                   help="with --detections: classify boxes at or above this confidence")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint of an interrupted run")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier checkpoint, and replace an existing output file "
                        "that is not an earlier kerascls-edge result")
    p.add_argument("--checkpoint_every", type=_positive_int, default=100,
                   help="write a checkpoint every N images")
    p.add_argument("--keep_checkpoint", action="store_true",
                   help="keep the <output>.partial checkpoint folder after success")
    p.add_argument("--smooth", choices=("none", "mean"), default="none",
                   help="add per-sequence (burst) mean probabilities beside each result")
    p.add_argument("--sequence_gap", type=_float_in(0.0, 1e9), default=10.0,
                   help="seconds between frames that start a new sequence")
    p.add_argument("--max_pixels", type=_nonneg_int, default=None,
                   help="most decoded pixels per image (PNG, BMP, TIFF: no reduced-scale "
                        "decode), and 6 bytes of decode memory per pixel of it (progressive "
                        "JPEG, WebP); a larger image is a failure entry. Default 24000000, "
                        "safe for a 1 GB device; 0: no cap")
    p.add_argument("--strict", action="store_true",
                   help="treat truncated JPEGs as failures instead of decoding what is there")
    p.add_argument("--rollup_threshold", type=_float_in(0.0, 1.0), default=None,
                   help="top label below this: report the deepest taxon whose summed "
                        "probability reaches it (needs taxonomy.csv in the bundle)")
    p.add_argument("--allow", help="labels/taxa allowed at the site, one a line, or a CSV "
                                   "with taxon[,deployment] columns; the rest are zeroed")
    p.add_argument("--sort_into", help="afterwards, link each image into SORT_INTO/LABEL/ "
                                       "(below --sort_threshold: SORT_INTO/_uncertain/)")
    p.add_argument("--copy", action="store_true", help="with --sort_into: copy, not link")
    p.add_argument("--sort_threshold", type=_float_in(0.0, 1.0), default=None,
                   help="with --sort_into (default: the bundle's default threshold)")
    p.add_argument("--frame_every", type=_float_in(1e-3, 1e6), default=None,
                   help="videos: seconds of video between sampled frames (default: the "
                        "bundle's model.json input.video, else 1.0; a different value is "
                        "used with a warning; docs/edge-outputs.md, Videos)")
    p.add_argument("--max_frames", type=_positive_int, default=None,
                   help="videos: most sampled frames per video, spread evenly over a longer "
                        "one (default: the bundle's, else 32)")
    p.add_argument("--progress_every", type=_float_in(-math.inf, math.inf, allow_inf=True),
                   default=5.0,
                   help="seconds between progress lines on stderr (negative: none)")


def _add_package_flags(p: argparse.ArgumentParser) -> None:
    """What a Camtrap DP package needs that the results do not say."""
    g = p.add_argument_group("Camtrap DP and deployments")
    g.add_argument("--deployment", help="one deploymentID for all images (default: one per "
                                        "top-level input folder); also what --allow's "
                                        "deployment column matches")
    g.add_argument("--location", help="LAT,LON of the deployments (decimal degrees)")
    g.add_argument("--utc_offset", default="Z",
                   help="the camera clock's UTC offset, e.g. +02:00 (default Z)")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="MegaDetector-format JSON (ours or MegaDetector's) to "
                                       "Camtrap DP or CSV")
    p.add_argument("results", help="MegaDetector-format results file (.json)")
    p.add_argument("--to", choices=("camtrapdp", "csv"), required=True)
    p.add_argument("-o", "--output", required=True, help="package folder, or .csv file")
    p.add_argument("--image_dir", help="the folder the results' file paths are relative to "
                                       "(default: the file's image_base, else its folder)")
    p.add_argument("--detection_threshold", type=_float_in(0.0, 1.0), default=None,
                   help="boxes below this are not observations (default: the file's "
                        "typical_detection_threshold, else 0.2)")
    p.add_argument("--taxonomy", help="taxonomy.csv mapping the file's labels to scientific "
                                      "names (docs/bundle.md)")
    p.add_argument("--overwrite", action="store_true")
    _add_package_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict(sub)
    _add_package_flags(sub.choices["predict"])
    _add_convert(sub)
    rep = sub.add_parser("report", help="a static HTML page to review results with thumbnails")
    rep.add_argument("results", help="results file: our JSON or CSV, or MegaDetector's JSON")
    rep.add_argument("-o", "--output", required=True, help="the page (.html)")
    rep.add_argument("--image_dir", help="the folder the results' file paths are relative to")
    rep.add_argument("--page_size", type=_positive_int, default=60, help="images per page")
    rep.add_argument("--inline", action="store_true",
                     help="thumbnails inside the page (one file; slow past a few thousand)")
    rep.add_argument("--overwrite", action="store_true")
    info = sub.add_parser("info", help="print what the runtime reads from a bundle")
    info.add_argument("bundle")
    info.add_argument("--labels")
    return parser


def _check_paths(args: argparse.Namespace) -> None:
    """A NUL byte cannot be in a file name: say so instead of failing deep inside a call."""
    for value in [getattr(args, "bundle", None), getattr(args, "labels", None),
                  getattr(args, "allow", None), getattr(args, "sort_into", None),
                  getattr(args, "output", None), getattr(args, "results", None),
                  getattr(args, "detections", None), *getattr(args, "images", [])]:
        if value is not None and "\0" in value:
            raise EdgeError(f"not a valid path (it holds a NUL byte): {value!r}")


def _predict(args: argparse.Namespace, backend: Optional[Backend] = None) -> int:
    from .classifier import Classifier
    from .runner import Options, predict

    if backend is not None:  # kerascls: its Keras model, or the Ray engine, behind this CLI
        clf = backend.classifier(args)
        predict = backend.predict
    else:
        # default: one-thread interpreters, one per decode thread (runner.invoke_in_workers)
        clf = Classifier(args.bundle, labels=args.labels, threads=args.threads or 1)
    if args.max_pixels is not None:
        from . import decode
        decode.max_pixels_default = args.max_pixels or None
    fmt = args.format or ("csv" if args.output.lower().endswith(".csv") else "megadetector")
    package = None
    if fmt == "camtrapdp":
        from . import convert
        package = convert.prepare_package(args)
        fmt, args.output = "megadetector", str(package / convert.RESULTS_NAME)
    opts = Options(
        output=Path(args.output), format=fmt, top_k=args.top_k, recursive=args.recursive,
        resume=args.resume, overwrite=args.overwrite, checkpoint_every=args.checkpoint_every,
        decode_threads=args.decode_threads,
        strict=args.strict, smooth=args.smooth, sequence_gap=args.sequence_gap,
        detections=Path(args.detections) if args.detections else None,
        detection_threshold=args.detection_threshold, progress_every=args.progress_every,
        keep_checkpoint=args.keep_checkpoint, labels_path=args.labels,
        post=_post(clf, args), allow_path=args.allow, frame_every=args.frame_every,
        max_frames=args.max_frames)
    if args.sort_into:
        from .sortinto import check_target
        check_target(Path(args.sort_into), args.images)
    from .journal import OutputLock

    with OutputLock(package or opts.output):  # the whole run: results, sorting, package
        summary = predict(clf, args.images, opts)
        if args.sort_into:
            summary["sort_into"] = _sort(args, clf, Path(summary["output"]), fmt)
        if package is not None:
            from . import convert
            summary["camtrapdp"] = convert.package_from_run(args, clf, package)
    print(json.dumps(summary))
    rc = 0
    if summary.get("unreadable"):
        print(f"{PROG}: warning: {summary['unreadable']} folder(s) or entries could not be "
              f"read; they are failure entries in {summary['output']}", file=sys.stderr)
        rc = 1
    sort = summary.get("sort_into") or {}
    if sort.get("errors"):
        stopped = f" (stopped: {sort['stopped']})" if sort.get("stopped") else ""
        print(f"{PROG}: warning: {sort['errors']} image(s) not sorted{stopped}; each is a row "
              f"with its reason in {sort['manifest']}", file=sys.stderr)
        rc = 1
    return rc


def _sort(args: argparse.Namespace, clf, output: Path, fmt: str) -> dict:
    """--sort_into: link or copy the images by the labels the run just wrote."""
    from .runner import image_base
    from .sortinto import labels_from_csv, labels_from_json, sort_into

    blank = (clf.spec.empty_classes or ["blank"])[0]
    labels = labels_from_csv(output, blank) if fmt == "csv" else labels_from_json(output, blank)
    threshold = (args.sort_threshold if args.sort_threshold is not None
                 else float(clf.spec.thresholds.get("default", 0.5)))
    base = args.images[0] if args.detections else image_base(args.images)
    return sort_into(labels, Path(base), Path(args.sort_into), threshold, args.copy)


def _post(clf, args: argparse.Namespace):
    """--allow / --rollup_threshold (taxonomy.py), with deployments named as in Camtrap DP."""
    from .runner import image_base
    from .taxonomy import make_post

    if args.rollup_threshold is None and not args.allow:
        return None
    base = args.images[0] if args.detections else image_base(args.images)
    return make_post(clf, args.rollup_threshold, args.allow, args.deployment,
                     Path(base).resolve().name)


def _info(args: argparse.Namespace) -> int:
    from .classifier import Classifier

    clf = Classifier(args.bundle, labels=args.labels, threads=1)
    s = clf.spec
    print(json.dumps({"model": str(s.model_path), "name": s.name, "input": [s.height, s.width,
                      s.channels], "dtype": s.dtype, "resize": s.resize,
                      "activation": s.activation, "classes": len(clf.labels),
                      "empty_classes": s.empty_classes}, indent=1))
    return 0


def _terminate_on_sigterm() -> object:
    """SIGTERM (systemd, `timeout`) unwinds like Ctrl-C, so pending results are checkpointed.

    Returns the previous handler so a host program calling `main` gets its own back.
    """
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals to the host program
        return None


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _user_path(filename: object, output: Optional[str]) -> str:
    """The file a user knows for an OSError: our temp files and checkpoint map to the output."""
    if filename is None:
        return ""
    name = os.fsdecode(filename) if isinstance(filename, bytes) else str(filename)
    if output:
        out = os.path.abspath(output)
        full = os.path.abspath(name)
        if full == os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tmp"):
            return output
        if full.startswith(out + ".partial"):
            return f"{output} (its checkpoint folder {output}.partial)"
    return name


class Backend:
    """Another classifier and/or run loop behind `predict`'s flags, journal and writers.

    `classifier(args)` returns an object with Classifier's interface; `predict(clf, images,
    opts)` runs like `runner.predict` (the default), e.g. on a Ray cluster.
    """

    def classifier(self, args: argparse.Namespace):
        from .classifier import Classifier
        return Classifier(args.bundle, labels=args.labels, threads=args.threads)

    def predict(self, clf, images: Sequence[str], opts) -> dict:
        from .runner import predict
        return predict(clf, images, opts)


def main(argv: Optional[Sequence[str]] = None, backend: Optional[Backend] = None) -> int:
    """Run the CLI; returns the exit status (bad input: a one-line error and 2, no traceback).

    `backend` (kerascls's `predict`) swaps the classifier or the run loop of `predict`."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its usage error
        return int(e.code or 0)
    previous = _terminate_on_sigterm()
    prog = getattr(backend, "prog", PROG)
    try:
        _check_paths(args)
        if args.command == "report":
            from .report import build, check_page_output
            check_page_output(Path(args.output), Path(args.results), args.overwrite)
            print(json.dumps(build(Path(args.results), Path(args.output), args.image_dir,
                                   page_size=args.page_size, inline=args.inline)))
            return 0
        if args.command == "convert":
            from .convert import convert_cli
            return convert_cli(args)
        return _predict(args, backend) if args.command == "predict" else _info(args)
    except EdgeError as e:
        print(f"{prog}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        where = _user_path(e.filename, getattr(args, "output", None))
        print(_one_line(f"{prog}: error: {e.strerror or e}: {where}".rstrip(": ")),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; results so far are checkpointed (rerun with --resume)",
              file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
