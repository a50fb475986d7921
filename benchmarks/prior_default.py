"""The class prior's settings side by side on whole label runs: the pseudo-labels under the
default (`labeled`: the labeled shares), `uniform` and `estimate` (EM's estimate of the
unlabeled images' shares), on collections balanced and unequal by construction.

    python benchmarks/prior_default.py data/elpv-balanced-l5 data/icons-l5 \\
        'digits@5' --settings labeled uniform estimate --preset demo --out runs/b/prior

A DATA is a folder set with ``<DATA>.truth.csv`` beside it (the unlabeled images' classes, as
`make_elpv.py`, `make_icons.py`, `make_imbalanced.py` and `make_shapes.py` write them) or a
built-in with its labels per class (`digits@5`). Per DATA, one `semigen label` run per setting,
the same seed; the representation (SimCLR reads no label, and no setting touches it) is
trained by the first and copied into the others. Scored against the truth training never
read: pseudo-labels right, the shares EM estimated against the true ones (total variation),
test accuracy. Writes OUT/results.json and prints Markdown for BENCHMARKS.md."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import common
import numpy as np
from score_folder_run import score

from semigen import api
from semigen.config import make_config
from semigen.data import load_dataset
from semigen.labeling import represent
from semigen.run import Layout, read_metrics


def source(spec: str) -> tuple[str, dict, Path | None]:
    """(data, config fields, truth CSV) of a DATA argument."""
    if "@" in spec:
        name, lpc = spec.split("@")
        return name, {"data__labels_per_class": int(lpc)}, None
    return spec, {}, Path(spec).with_name(Path(spec).name + ".truth.csv")


def run_one(args, spec: str, setting: str, first: Path | None) -> dict:
    data, fields, truth_csv = source(spec)
    lpc = f"-{fields['data__labels_per_class']}" if fields else ""
    out = Path(args.out) / f"{Path(data).name}{lpc}-{setting}"
    cfg = make_config(data=data, out=str(out), preset=args.preset, runtime__seed=args.seed,
                      data__split_seed=args.seed, run__progress=False,
                      label__class_prior=setting, **fields,
                      **{k.replace(".", "__"): v for k, v in args.set.items()})
    if first is not None and not out.exists():
        shutil.copytree(Layout(first).stage_folder(represent.STAGE),
                        out / "checkpoints" / represent.STAGE)
    start = time.perf_counter()
    if "label" not in read_metrics(out):
        api.label_run(cfg)
    metrics = read_metrics(out)
    found = metrics["represent"]
    labeled_shares = found["labeled_prior"]
    if truth_csv is not None:
        scored = score(out, truth_csv, None)
        right, true = scored["pseudo_label_accuracy"], list(scored["true_shares"].values())
    else:
        right = metrics["label"]["pseudo_label_accuracy"]
        truth = load_dataset(cfg.data).unlabeled_truth
        true = list(np.bincount(truth, minlength=len(labeled_shares)) / len(truth))
    labeled = np.array(found["labeled_prior"])
    row = {"data": spec, "setting": setting, "run": str(out), "seconds":
           time.perf_counter() - start, "pseudo_label_accuracy": right,
           "test_accuracy": metrics["label"].get("test_accuracy"),
           "labeled_shares": found["labeled_prior"], "aimed_at": found["class_prior"],
           "estimate": found.get("class_prior_estimate"),
           "estimate_from_labeled": found.get("class_prior_shift")}
    if true is not None:
        row["true_from_labeled"] = 0.5 * float(np.abs(np.array(true) - labeled).sum())
        if row["estimate"] is not None:  # how far EM's estimate lies from the truth
            row["estimate_from_true"] = 0.5 * float(np.abs(np.array(true)
                                                          - np.array(row["estimate"])).sum())
    return row


def markdown(rows: list[dict], settings: list[str]) -> str:
    """One row per DATA: how far its true shares and EM's estimate lie from the labeled shares,
    the pseudo-labels right under each setting, and the default minus each other setting."""
    others = [s for s in settings if s != "labeled"]
    lines = ["| data | true shares from the labeled (TV) | EM's estimate from the labeled / "
             "from the true | " + " | ".join(f"pseudo-labels right %: {s}" for s in settings)
             + "".join(f" | default − {s}" for s in others) + " |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in settings + others) + " |"]
    for spec in dict.fromkeys(r["data"] for r in rows):
        found = {r["setting"]: r for r in rows if r["data"] == spec}
        first = next(iter(found.values()))
        right = {s: 100 * found[s]["pseudo_label_accuracy"] for s in settings if s in found}
        gaps = [f"{right['labeled'] - right[s]:+.2f}" if {"labeled", s} <= right.keys() else "–"
                for s in others]
        est = first.get("estimate_from_labeled")
        lines.append(
            f"| {Path(spec).name} | {first.get('true_from_labeled', 0):.3f} | "
            f"{'–' if est is None else f'{est:.3f}'} / "
            f"{first.get('estimate_from_true', float('nan')):.3f} | "
            + " | ".join(f"{right[s]:.2f}" if s in right else "–" for s in settings)
            + "".join(f" | {g}" for g in gaps) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-prior-default")
    parser.add_argument("data", nargs="+", help="folder sets (truth CSV beside) or NAME@LPC")
    parser.add_argument("--settings", nargs="+", default=["labeled", "uniform", "estimate"])
    parser.add_argument("--seed", type=int, default=0)
    args = common.parse(parser)
    rows = []
    for spec in args.data:
        first = None
        for setting in args.settings:
            row = run_one(args, spec, setting, first)
            first = first or Path(row["run"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            common.save_merged(args.out, rows, ("data", "setting"))
    every = common.save_merged(args.out, rows, ("data", "setting"))
    common.save(args.out, every, markdown(every, args.settings))


if __name__ == "__main__":
    main()
