"""What generated images teach, by backend, K images per class and guidance: the
classification accuracy score (CAS) of a linear probe trained on them alone, in the run's
representation features, scored on the labeled images (what a round chooses by) and on the
test images (shown, never used to choose).

    python benchmarks/teaching_images.py 'runs/bench-rounds/lpc1-seed{seed}/base' --seeds 0 1 2
    python benchmarks/teaching_images.py 'runs/bench-rounds/lpc1-seed{seed}/base' \
        --seeds 0 --per-class 12 32 128 --backend diffusion --strengths 0.3 0.5 0.7

Each RUN is a finished label + generate run (e.g. rounds_few_labels.py's base runs). With
--backend, a copy of each RUN under OUT first trains that backend's generator (its quick
budget) on the same pseudo-labels, and is measured instead. For the diffusion backend every
guidance of `joint.GUIDANCES` is tried, and with --strengths the variations of the labeled
images (their CAS on the labeled images is not a fair figure: they were made from them; only
the test column counts). Beside them: the same probe trained on the labeled images alone.
Writes OUT/results.json and prints Markdown."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import common
import numpy as np

from semigen import checkpoint, generation
from semigen.config import from_dict, load_yaml, make_config
from semigen.data import load_dataset
from semigen.evaluation.teaching import classification_accuracy_score
from semigen.joint import images as joint
from semigen.labeling import nets, represent
from semigen.run import Layout, read_metrics


def measure(run: str, per_class: list[int], strengths: list[float]) -> list[dict]:
    cfg = from_dict(load_yaml(f"{run}/config.yaml"))
    data = load_dataset(cfg.data)
    features = represent.load_representation(run, cfg, data, "cpu")
    labeled = nets.embed(features, data.labeled.images, "cpu")
    test = nets.embed(features, data.test.images, "cpu")
    state = checkpoint.load(Layout(run).checkpoint("generate"))
    backend = generation.backend_of(state)
    rows = [{"backend": backend, "images": "the labeled images themselves",
             "per_class": len(data.labeled) // len(data.classes), "cas_labeled": None,
             "cas_test": classification_accuracy_score(labeled, data.labeled.labels, test,
                                                       data.test.labels)["cas"]}]
    options = joint.candidates(cfg, backend) + [("vary", s) for s in strengths]
    for how, value in options:
        start = time.perf_counter()
        images, labels = joint.make_images(state, data, how, value, max(per_class),
                                           cfg.runtime.seed + 1000, "cpu")
        seconds = time.perf_counter() - start
        made = nets.embed(features, images, "cpu")
        for k in per_class:
            pick = np.concatenate([np.flatnonzero(labels == c)[:k]
                                   for c in range(len(data.classes))])
            on_labeled = classification_accuracy_score(made[pick], labels[pick], labeled,
                                                       data.labeled.labels)["cas"]
            rows.append({"backend": backend, "images": joint.describe_candidate(how, value),
                         "per_class": k, "cas_labeled": None if how == "vary" else on_labeled,
                         "cas_test": classification_accuracy_score(
                             made[pick], labels[pick], test, data.test.labels)["cas"],
                         "seconds_to_make_all": round(seconds, 1)})
            print(rows[-1], flush=True)
    return rows


def with_backend(run: str, backend: str, out: str, seed: int) -> str:
    """A copy of `run` under `out` whose generator is `backend`'s, trained on the same
    pseudo-labels (once: a rerun continues or skips it)."""
    copy = Path(out) / f"seed{seed}-{backend}"
    if not (copy / "metrics.json").exists():
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("baselines", "generate*",
                                                                 "samples", "run.lock"))
        metrics = {k: v for k, v in read_metrics(copy).items() if not k.startswith("generate")}
        (copy / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if "generate" not in read_metrics(copy):
        generation.train(make_config(base=copy / "config.yaml", out=str(copy),
                                     generate__backend=backend, generate__steps=0,
                                     generate__batch_size=0, run__progress=False))
    return str(copy)


def table(rows: list[dict]) -> str:
    def cell(values):
        return common.mean_and_spread(values, 1)
    keys = sorted({(r["backend"], r["images"], r["per_class"]) for r in rows},
                  key=lambda k: (k[0], k[1] != "the labeled images themselves", k[1], k[2]))
    lines = ["| backend | images | per class | seeds | CAS on the labeled images | "
             "CAS on the test images |", "| --- | --- | ---: | --- | ---: | ---: |"]
    for key in keys:
        group = [r for r in rows if (r["backend"], r["images"], r["per_class"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | "
                     f"{', '.join(str(r['seed']) for r in group)} | "
                     f"{cell([r['cas_labeled'] for r in group])} | "
                     f"{cell([r['cas_test'] for r in group])} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", help="label + generate run directories, with {seed}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, nargs="+", default=[12, 32, 128, 256])
    p.add_argument("--strengths", type=float, nargs="*", default=[])
    p.add_argument("--backend", help="train this backend's generator in a copy of each RUN")
    p.add_argument("--out", default="runs/bench-teaching")
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        run = args.runs.format(seed=seed)
        if args.backend:
            run = with_backend(run, args.backend, args.out, seed)
        rows += [{"seed": seed, "run": run, **r}
                 for r in measure(run, args.per_class, args.strengths)]
    common.save_merged(args.out, rows, ("run", "images", "per_class"), table(rows))


if __name__ == "__main__":
    main()
