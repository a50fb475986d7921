"""Does the self-supervised judge rank generators as the full-label evaluator does? On
Fashion-MNIST, where both exist: every generator checkpoint given (GAN checkpoints along a
run, generators trained on labels of different quality, the diffusion backend) is scored by
both on the same generated images, and the ranks are compared (Spearman and Kendall).

    python benchmarks/judge_agreement.py runs/a/checkpoints/generate/step-*.pt ... \\
        --per-class 200 --out benchmarks/results/judge

The judge is the one `evaluate` gives a user's own images: SimCLR features trained on the
training images only, consistency by a linear probe on the 10 labeled images per class of
split seed 0. Results: OUT/results.json, OUT/table.md."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import save
from scipy.stats import kendalltau, spearmanr

from semigen import checkpoint
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.evaluation.images import EvaluatorFeatures, Judge, image_metrics, load_evaluator
from semigen.evaluation.judge import judge_features, probe_classifier
from semigen.generation import from_checkpoint
from semigen.runtime import use_threads

FIGURES = ("fid", "class_fid", "kid", "precision", "recall", "class_consistency")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--judge-steps", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results/judge")
    args = p.parse_args()
    cfg = resolve(overrides={"data.source": "fmnist", "evaluate.judge_steps": args.judge_steps})
    use_threads(cfg.runtime.threads)
    data = load_dataset(cfg.data)
    evaluator, _ = load_evaluator(cfg, data.shape, cfg.evaluate.evaluator_steps)
    features, about = judge_features(cfg, data)
    probe, probe_about = probe_classifier(features, data)
    rows = []
    for path in args.checkpoints:
        start = time.time()
        generator = from_checkpoint(checkpoint.load(path))
        found = image_metrics(generator, Judge(EvaluatorFeatures(evaluator), evaluator),
                              data.test, data.classes, args.per_class,
                              second_judge=Judge(features, probe))
        rows.append({"checkpoint": str(path), "backend": generator.settings()["backend"],
                     "evaluator": {k: found.get(k) for k in FIGURES},
                     "judge": {k: found["judge"].get(k) for k in FIGURES},
                     "seconds": round(time.time() - start, 1)})
        print(rows[-1], flush=True)
        save(args.out, rows)
    agreement = {}
    for k in FIGURES:
        a = [r["evaluator"][k] for r in rows]
        b = [r["judge"][k] for r in rows]
        agreement[k] = {"spearman": spearmanr(a, b).statistic,
                        "kendall": kendalltau(a, b).statistic}
    lines = [f"Judge: {about['network']}; probe: {probe_about['labels']} labels, "
             f"{probe_about['held_out_accuracy']:.1%} held out. {len(rows)} generators, "
             f"{args.per_class} images per class against the {len(data.test)} test images.", "",
             "| generator | evaluator FID | judge FD | evaluator class-aware FID "
             "| judge class-aware FD | evaluator consistency | judge consistency "
             "| judge precision | judge recall |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: r["evaluator"]["fid"]):
        e, j = r["evaluator"], r["judge"]
        lines.append(f"| {r['checkpoint']} | {e['fid']:.2f} | {j['fid']:.2f} | "
                     f"{e['class_fid']:.2f} | {j['class_fid']:.2f} | "
                     f"{e['class_consistency']:.3f} | {j['class_consistency']:.3f} | "
                     f"{j['precision']:.3f} | {j['recall']:.3f} |")
    lines += ["", "| figure | Spearman | Kendall |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v['spearman']:.3f} | {v['kendall']:.3f} |" for k, v in agreement.items()]
    save(args.out, rows + [{"agreement": agreement}], "\n".join(lines))


if __name__ == "__main__":
    main()
