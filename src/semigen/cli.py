"""Command line: parse, resolve one typed config, call the API. No training logic lives here.

Any config field can be set as a dotted option: ``--label.lr 0.03`` or ``--label.lr=0.03``."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .config import FLAG_FIELDS, ConfigError, make_config, presets, to_yaml
from .run import Layout, is_run_directory


def _add_data_options(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    p.add_argument("data", nargs=None if data_required else "?", metavar="DATA",
                   help="image folder (DATA/labeled/<class>/..., DATA/unlabeled/..., "
                        "DATA/test/<class>/...) or a built-in: digits, fmnist, mnist, cifar10, "
                        "svhn (default: digits)")
    p.add_argument("--labels", metavar="CSV", help="path,label CSV, paths relative to DATA "
                   "(or to the CSV's folder when DATA is not given); empty label = unlabeled")
    p.add_argument("--added-labels", metavar="CSV", help="path,label CSV of labels given after "
                   "the split, taken as true (what `semigen review` writes to "
                   "RUN/added_labels.csv; a run continued reads its own by itself)")
    p.add_argument("--labels-per-class", type=int, metavar="N",
                   help="built-ins: labeled images per class")
    p.add_argument("--split-seed", type=int, metavar="S", help="built-ins: which are labeled")
    p.add_argument("--image-size", type=int, metavar="PX", help="resize every image to PXxPX")
    p.add_argument("--preset", choices=presets(), help="a budget: tiny (tests), quick "
                   "(2-core CPU), full (GPU); the defaults are quick")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML with sections data:, label:, ...")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="RUN", help="run directory (default: runs/default)")
    p.add_argument("--seed", type=int, help="seed for model init and data order")
    p.add_argument("--device", help="auto, cpu, cuda or mps")
    p.add_argument("--devices", type=int, help="processes; > 1 runs data-parallel")
    p.add_argument("--precision", help="fp32, bf16 or fp16")
    p.add_argument("--resume", metavar="auto|none|PATH",
                   help="auto (default): continue from RUN's latest checkpoint if there is one")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and the data report, then stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semigen", description="Semi-supervised image generation: from a few labels to "
        "pseudo-labels, class-conditional images and a better classifier.",
        epilog="Any config field is also an option: --section.field VALUE "
               "(e.g. --label.lr 0.03). See README.md.")
    parser.add_argument("--version", action="version", version=f"semigen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def _add_data_command(commands) -> None:
    data = commands.add_parser("data", help="inspect a data source")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    check = data_commands.add_parser(
        "check", help="validate DATA and print its report (exit 1 on errors)",
        description="Read every image as training would; print per-class counts, sizes, "
                    "channels and every skipped file with the reason. Exits 1 on errors.")
    _add_data_options(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_label_command(commands) -> None:
    label = commands.add_parser("label", help="train the semi-supervised classifier and write "
                                "RUN/pseudo_labels.csv")
    _add_data_options(label)
    _add_run_options(label)


def _add_predict_command(commands) -> None:
    predict = commands.add_parser(
        "predict", help="label new images with a run's classifier: path,label,confidence CSV")
    predict.add_argument("run", metavar="RUN", help="a run directory that `label` wrote")
    predict.add_argument("images", metavar="IMAGES", help="an image file or a folder (any depth)")
    predict.add_argument("--out", required=True, metavar="F.csv")
    predict.add_argument("--checkpoint", default="latest", metavar="latest|PATH",
                         help="latest (default: the weights pseudo_labels.csv came from), or "
                              "a checkpoint file")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _add_generate_command(commands) -> None:
    generate = commands.add_parser(
        "generate", help="train the class-conditional generator on a label run's real and "
        "pseudo labels (or on DATA's real labels: --generate.mode labels-only)")
    _add_data_options(generate)
    _add_run_options(generate)


def _add_sample_command(commands) -> None:
    sample = commands.add_parser("sample", help="write N images per class from RUN's generator")
    sample.add_argument("run", metavar="RUN")
    sample.add_argument("--per-class", type=int, required=True, metavar="N")
    sample.add_argument("--out", required=True, metavar="DIR")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=int, default=256)
    sample.add_argument("--checkpoint", default="latest", metavar="latest|PATH")
    sample.add_argument("--device", default="auto")
    sample.add_argument("--overwrite", action="store_true",
                        help="write into a folder that holds files (same names are replaced)")
    sample.add_argument("--generate.guidance", dest="guidance", type=float, metavar="W",
                        help="diffusion: classifier-free guidance (default: the run's)")
    sample.add_argument("--generate.sample_steps", dest="sample_steps", type=int, metavar="N",
                        help="diffusion: solver steps per image (default: the run's)")


def _add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="metrics on real held-out images: classifier, pseudo-labels, and "
        "generated images (FID, KID, class consistency) into RUN/metrics.json")
    evaluate.add_argument("run", metavar="RUN")
    evaluate.add_argument("--test", metavar="DATA", help="held-out images in class folders "
                          "(DATA/<class>/... or DATA/test/<class>/...) instead of the data "
                          "set's own test split")
    evaluate.add_argument("--per-class", type=int, metavar="N",
                          help="generated images per class for the image metrics (1000)")
    evaluate.add_argument("--seed", type=int, help="seed of the generated images (0)")
    evaluate.add_argument("--evaluator-steps", type=int, metavar="STEPS",
                          help="training budget of the evaluator network (3000)")
    evaluate.add_argument("--inception-weights", metavar="PATH|download",
                          help="FID/KID on Inception-v3 features: a torchvision state dict "
                               "(needed for image metrics on your own folders)")


def _add_fit_command(commands) -> None:
    fit = commands.add_parser(
        "fit", help="the whole loop: label, generate, joint rounds, evaluate, report")
    _add_data_options(fit)
    _add_run_options(fit)
    fit.add_argument("--rounds", type=int, metavar="R",
                     help="joint rounds after label and generate (default -1: one where "
                     "a class has 1 labeled image, where rounds pay; else none)")


def _add_report_command(commands) -> None:
    report = commands.add_parser("report", help="write RUN/report.html from a run's files")
    report.add_argument("run", metavar="RUN")


def _add_suggest_command(commands) -> None:
    suggest = commands.add_parser(
        "suggest", help="which unlabeled images to label next (uncertain and diverse)")
    suggest.add_argument("run", metavar="RUN")
    suggest.add_argument("--n", type=int, default=50, metavar="K", help="how many (50)")
    suggest.add_argument("--out", required=True, metavar="F.csv")
    suggest.add_argument("--seed", type=int, default=0)
    suggest.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _add_review_command(commands) -> None:
    review = commands.add_parser(
        "review", help="a local web page: check pseudo-labels, label the suggested images by "
        "keyboard, correct your labels, see the generated images",
        description="Serve RUN's pseudo-labels, suggestions, likely label errors and generated "
                    "images on a local web page. Each decision is saved at once to "
                    "RUN/added_labels.csv; `semigen label RUN` (or fit) then trains on them.")
    review.add_argument("run", metavar="RUN")
    review.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: "
                        "this machine only); the printed address carries a fresh token")
    review.add_argument("--port", type=int, default=8765, help="port (8765; 0: any free one, "
                        "the printed address says which)")
    review.add_argument("--suggest", type=int, default=50, metavar="N",
                        help="images offered by Label next (50)")
    review.add_argument("--generated-per-class", type=int, default=16, metavar="N",
                        help="generated images shown per class (16; sampled once)")


def _add_export_command(commands) -> None:
    export = commands.add_parser(
        "export", help="the labeled and confidently pseudo-labeled images (and generated ones) "
        "as an ImageFolder tree, a Hugging Face dataset or a CSV")
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", required=True, choices=("imagefolder", "hf", "csv"))
    export.add_argument("--out", required=True, metavar="DIR")
    export.add_argument("--min-confidence", type=float, metavar="P", help="pseudo-labels kept "
                        "from this confidence on (default: the run's generate.min_confidence)")
    export.add_argument("--generated-per-class", type=int, default=0, metavar="N",
                        help="also N generated images per class from RUN's generator (0)")
    export.add_argument("--overwrite", action="store_true",
                        help="write into a folder that holds files")


def _add_demo_command(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the whole fit on the built-in digits set, a few minutes on a CPU")
    demo.add_argument("--out", default="runs/demo", metavar="RUN")
    demo.add_argument("--device", default="auto")


# The commands in the order `semigen --help` lists them.
COMMANDS = (
    _add_data_command, _add_label_command, _add_predict_command, _add_generate_command,
    _add_sample_command, _add_evaluate_command, _add_fit_command, _add_report_command,
    _add_suggest_command, _add_review_command, _add_export_command, _add_demo_command)


def parse_overrides(tokens: list[str]) -> dict:
    """``--a.b VALUE`` / ``--a.b=VALUE`` pairs; anything else is an error naming it."""
    overrides, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ConfigError(f"unrecognized argument: {token}")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"option --{key} needs a value")
            i += 1
            value = tokens[i]
        overrides[key] = value
        i += 1
    return overrides


def config_from_args(args: argparse.Namespace, extra: list[str]):
    """Flags and dotted overrides over a preset and a YAML file. A run directory given as DATA
    (it holds config.yaml) continues that run: its config is the base and it is the output."""
    flags = {flag: getattr(args, flag) for flag in FLAG_FIELDS
             if getattr(args, flag, None) is not None}
    base = None
    if args.data and is_run_directory(args.data):
        base = Layout(args.data).config
        flags.setdefault("out", flags.pop("data"))
    elif args.data and Layout(args.data).config.is_file():
        logging.getLogger("semigen").warning(
            f"{Layout(args.data).config}: ignored; {args.data} is read as images (give "
            "the file with --config to use its settings)")
    if args.labels and not args.data:
        flags["data"] = str(Path(args.labels).parent)
    return make_config(preset=args.preset, config=args.config, base=base,
                       **flags | parse_overrides(extra))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # A log line that cannot be written (a full disk) must not print a traceback; the next
    # file write fails too and is reported as one line.
    logging.raiseExceptions = False
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: a message and a resume hint, and
        # inside a stage after the step in progress, with a checkpoint (stage.run_steps)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataError
    try:
        if args.command in ("predict", "sample", "report", "suggest", "demo", "review",
                            "export"):
            if extra:
                raise ConfigError(f"unrecognized arguments: {' '.join(extra)}")
            return _run_tool(args)
        if args.command == "evaluate":
            return _evaluate(args, extra)
        cfg = config_from_args(args, extra)
        if args.command == "data":
            return _data_check(cfg, as_json=args.json)
        if args.dry_run:
            print(to_yaml(cfg))
            return _data_check(cfg, as_json=False)
        from . import api
        if args.command == "fit":
            from .joint.fit import fit
            if fit(cfg) is not None:  # None: a DDP rank other than 0
                print(f"report: {Layout(cfg.run.out).report}")
        elif args.command == "generate":
            api.generate_run(cfg)
        else:
            api.label_run(cfg)
        return 0
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"semigen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's side: disk full, permissions, a path in the way
        print(f"semigen: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        name = getattr(e, "signal_name", "SIGINT")
        print(f"semigen: stopped by {name}{'' if name == 'SIGINT' else ' (like Ctrl-C)'}; run "
              "the same command again to resume", file=sys.stderr)
        return 128 + signal.Signals[name].value


def _stop_on_sigterm(signum, frame):
    from .stage import StopRequested
    raise StopRequested("SIGTERM")


def describe_os_error(e: OSError) -> str:
    """What went wrong with a file, and what to do: a sentence, not a traceback."""
    where = " ".join(f"{name}" for name in (e.filename, e.filename2) if name)
    what = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        return (f"no space left on the device{' writing ' + where if where else ''}: free some "
                "space, then run the same command again (a run resumes from its last "
                "checkpoint)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{where or 'a file'}: {what.lower()}: semigen cannot write there; choose "
                "another --out (or make it writable)")
    if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return (f"{where or 'a path'}: {what.lower()}: a file stands where semigen needs a "
                "folder (or the other way round); choose another --out")
    return f"{where + ': ' if where else ''}{what}"


def _run_tool(args) -> int:
    """The commands that work on a finished run (or, demo, make one) and take no config."""
    from . import api
    if args.command == "predict":
        api.predict(args.run, args.images, args.out, args.checkpoint, args.device,
                    args.overwrite)
    elif args.command == "sample":
        api.sample(args.run, args.per_class, args.out, args.seed, args.batch_size,
                   args.checkpoint, args.device, args.guidance, args.sample_steps, args.overwrite)
    elif args.command == "report":
        print(f"report: {api.report(args.run)}")
    elif args.command == "suggest":
        api.suggest(args.run, args.n, args.out, args.seed, args.overwrite)
    elif args.command == "review":
        api.review(args.run, args.host, args.port, args.suggest, args.generated_per_class)
    elif args.command == "export":
        found = api.export(args.run, args.format, args.out, args.min_confidence,
                           args.generated_per_class, args.overwrite)
        print(f"exported {found['images']:,} images ({found['by_source']}) to {found['out']}")
    else:
        print(f"report: {api.demo(out=args.out, device=args.device)}")
    return 0


def _data_check(cfg, as_json: bool) -> int:
    import json

    from .data import load_dataset
    dataset = load_dataset(cfg.data, progress=True)
    report = dataset.report
    print(json.dumps(report.to_dict(), indent=1) if as_json else report.format())
    return 0 if report.ok else 1


def _evaluate(args, extra) -> int:
    import json

    from .api import evaluate
    flags = {"evaluate.per_class": args.per_class, "evaluate.seed": args.seed,
             "evaluate.evaluator_steps": args.evaluator_steps,
             "evaluate.inception_weights": args.inception_weights}
    found = evaluate(args.run, args.test, **{k: v for k, v in flags.items() if v is not None}
                     | parse_overrides(extra))
    summary = {"classifier": {k: v for k, v in found.get("classifier", {}).items()
                              if k in ("test_accuracy", "test_ece", "n_test")},
               "pseudo_labels": found.get("pseudo_labels", {}),
               "images": {k: v for k, v in found.get("images", {}).items()
                          if k != "per_class"}}
    per_class = found.get("images", {}).get("per_class", {})
    if any("variety" in v for v in per_class.values()):  # what each class covers of real
        summary["images"]["variety_per_class"] = {
            name: round(v["variety"]["recall_ratio"], 3) for name, v in per_class.items()
            if "variety" in v}
    print(json.dumps(summary, indent=1))
    return 0
