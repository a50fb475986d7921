"""The diffusion backend against the GAN on Fashion-MNIST-100 (semi mode), at equal generator
training time: FID, KID, class consistency and worst class by the evaluator network, sampling
images per second, and a guidance sweep.

    python benchmarks/diffusion_fmnist.py --preset quick --seeds 0 1 2 \\
        --pseudo-labels 'runs/bench13/fm10/semi-seed{seed}/pseudo_labels.csv' \\
        --gan-runs 'runs/bench14/fm10/semi-seed{seed}' --guidance 0 1 2 4

For each seed, the diffusion model trains on the pseudo-labels of that split seed's label run
for as many steps as fit in the GAN run's own training time (`--gan-runs`: finished
`generate_fmnist.py` semi runs; their time is in their stats.jsonl), its sample grids included,
measured as it trains (`train_for`); `--steps N` fixes the steps instead. Then both
are scored on the same N per class (`--per-class`) and seed, the diffusion model at every
guidance of `--guidance`: FID and KID against the test images and, for choosing settings,
against 10,000 images of the training pool (`val_fid`, `val_kid`); class consistency by the
evaluator network; sampling images per second while generating them. Writes OUT/results.json,
prints Markdown for BENCHMARKS.md, and OUT/gan-vs-diffusion-seed<S>.png: the two models' last
grids side by side."""

from __future__ import annotations

import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import common
import numpy as np
import torch

from semigen import api, checkpoint, generation
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.evaluation.images import (
    EvaluatorFeatures,
    embed_images,
    feature_distances,
    load_evaluator,
    recognised,
)
from semigen.generation import generate_per_class
from semigen.run import Layout, read_stats

KEY = ("backend", "seed", "guidance", "sample_steps")  # of a row of results.json


def config(args, out: Path, seed: int, **extra):
    overrides = {"data.source": "fmnist", "data.labels_per_class": str(args.labels_per_class),
                 "data.split_seed": str(seed), "runtime.seed": str(seed), "run.out": str(out),
                 "run.progress": "false", "generate.mode": "semi",
                 "generate.backend": "diffusion", "evaluate.seed": str(seed), **args.set,
                 **extra}
    return resolve(preset=args.preset, overrides=overrides)


def train_seconds(run: Path, after_step: int = 0) -> float:
    """The generate stage's training time since `after_step` (where this sitting resumed), from
    stats.jsonl: its first logged step to `done`, plus the steps before that first log at the
    same pace; the start of a process (data, model) is not training."""
    rows = [r for r in read_stats(run) if r["stage"] == "generate" and r["step"] > after_step]
    done = [r for r in rows if r.get("event") == "done"][-1]
    logged = [r for r in rows if "event" not in r]
    first, last = logged[0], logged[-1]  # (the pace without the last grid and checkpoint)
    per_step = (last["time"] - first["time"]) / max(1, last["step"] - first["step"])
    return done["time"] - first["time"] + (first["step"] - after_step) * per_step


def finished_steps(run: Path) -> int:
    return [r["step"] for r in read_stats(run)
            if r["stage"] == "generate" and r.get("event") == "done"][-1]


def train_for(args, seed: int, out: Path, budget: float, first_steps: int = 1000) -> float:
    """Train the diffusion model for `budget` seconds of this machine's time, its sample grids
    included: `first_steps`, then top up at the pace measured so far until within 1 %. Exact
    resume makes the sittings one run (a probe of a few steps misjudged the pace by 15 %).
    Returns the training time, also kept in OUT/train_seconds.txt: a resumed run's stats.jsonl
    reads as one run, without the gaps between sittings."""
    steps, spent, done = first_steps, 0.0, 0
    for _ in range(4):
        api.generate_run(config(args, out, seed, **{"generate.steps": str(steps)}))
        spent += train_seconds(out, done)
        done = steps
        print(f"seed {seed}: {steps} steps in {spent / 60:.2f} min of the GAN's "
              f"{budget / 60:.2f}", flush=True)
        more = round((budget - spent) * steps / spent)
        if more < max(10, steps // 100):
            break
        steps += more
    (out / "train_seconds.txt").write_text(f"{spent}\n")
    return spent


def training_pool_sample(data, n: int = 10_000, seed: int = 0) -> np.ndarray:
    """`n` images of the training pool (labeled and unlabeled), a fixed pick: the reference
    for choosing settings without looking at the test images."""
    pool = np.concatenate([data.labeled.images, data.unlabeled.images])
    ids = np.array(data.labeled.ids + data.unlabeled.ids)
    by_id = np.argsort(ids, kind="stable")  # the same pick whatever the labeled split
    pick = np.random.default_rng(seed).permutation(len(pool))[:n]
    return pool[by_id[np.sort(pick)]]


def score(args, data, references: dict, run: Path, seed: int, guidance: float | None = None,
          sample_steps: int | None = None) -> dict:
    """One generation of N per class, its features compared with each reference set's."""
    state = checkpoint.load(Layout(run).checkpoint("generate"))
    generator = generation.from_checkpoint(state, guidance=guidance,
                                           sample_steps=sample_steps).eval()
    start = time.perf_counter()
    fake, labels = generate_per_class(generator, len(data.classes), args.per_class, seed)
    rate = len(fake) / (time.perf_counter() - start)
    fake_features = embed_images(references["features"], fake)
    found = {"images_per_second": rate, "settings": generator.settings(),
             "evaluator": references["about"]}
    for prefix, real in (("", references["test"]), ("val_", references["training_pool"])):
        distances = feature_distances(real, fake_features)
        found |= {prefix + "fid": distances["fid"], prefix + "kid": distances["kid"]}
    right = recognised(references["classifier"], fake, labels)
    per_class = [right[labels == c].mean().item() for c in range(len(data.classes))]
    worst = min(range(len(per_class)), key=per_class.__getitem__)
    return found | {"consistency": right.mean().item(), "worst_consistency": per_class[worst],
                    "worst_class": data.classes[worst]}


def reference_features(cfg, data) -> dict:
    """The evaluator network (features and judge) and the features of the two reference sets."""
    classifier, about = load_evaluator(cfg, data.shape, cfg.evaluate.evaluator_steps)
    classifier = classifier.eval().cpu()
    features = EvaluatorFeatures(classifier)

    def embed(images: np.ndarray) -> torch.Tensor:
        return embed_images(features, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())

    return {"classifier": classifier, "features": features, "about": about,
            "test": embed(data.test.images), "training_pool": embed(training_pool_sample(data))}


def run_seed(args, seed: int, data, references: dict) -> list[dict]:
    """Train the seed's diffusion model (`--steps`, or the GAN's time) unless it is trained,
    score it at every guidance, and score the seed's GAN."""
    gan_run = Path(args.gan_runs.format(seed=seed))
    out = Path(args.out) / f"diffusion-seed{seed}"
    cfg = config(args, out, seed)
    if not (Layout(out).checkpoint("generate")).exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.pseudo_labels.format(seed=seed), out / "pseudo_labels.csv")
        if args.steps:
            api.generate_run(config(args, out, seed, **{"generate.steps": str(args.steps)}))
        else:
            train_for(args, seed, out, train_seconds(gan_run))
    sittings = out / "train_seconds.txt"
    diffusion_seconds = float(sittings.read_text()) if sittings.exists() else train_seconds(out)
    rows = [{"backend": "gan", "seed": seed, "guidance": None, "sample_steps": None,
             "steps": finished_steps(gan_run), "train_seconds": train_seconds(gan_run),
             **score(args, data, references, gan_run, seed)}]
    for w in args.guidance:
        for n in args.sample_steps:
            rows.append({"backend": "diffusion", "seed": seed, "guidance": w, "sample_steps": n,
                         "steps": finished_steps(out), "train_seconds": diffusion_seconds,
                         "batch_size": cfg.generate.batch_size,
                         **score(args, data, references, out, seed, w, n)})
            print(f"seed {seed} guidance {w}, {n} solver steps: consistency "
                  f"{rows[-1]['consistency']:.3f}, FID {rows[-1]['fid']:.2f}, validation FID "
                  f"{rows[-1]['val_fid']:.2f}", flush=True)
    side_by_side(Path(args.out), seed, gan_run, out, data.classes)
    return rows


def side_by_side(out: Path, seed: int, gan_run: Path, diffusion_run: Path, classes) -> Path:
    grids = {name: common.last_grid(run) for name, run in
             (("GAN", gan_run), ("diffusion", diffusion_run))}
    titles = {f"{name}, {int(png.stem.split('-')[-1])} steps": png
              for name, png in grids.items()}
    return common.grids_side_by_side(out / f"gan-vs-diffusion-seed{seed}.png", titles, classes)


def mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(results: list[dict], args) -> str:
    evaluator = results[0]["evaluator"]
    lines = [f"`python benchmarks/diffusion_fmnist.py --preset {args.preset} --seeds "
             f"{' '.join(map(str, args.seeds))} --guidance "
             f"{' '.join(map(str, args.guidance))} --sample-steps "
             f"{' '.join(map(str, args.sample_steps))} --per-class {args.per_class}"
             f"{''.join(f' --set {k}={v}' for k, v in args.set.items())}`, "
             f"{date.today().isoformat()}; evaluator: "
             f"{evaluator['network']}, test accuracy {evaluator['test_accuracy']:.4f}; "
             f"N = {args.per_class} generated per class against the 10,000 test images (FID, KID) "
             "and 10,000 training-pool images (validation FID)", "",
             "| generator | guidance | solver steps | steps | train time (min) | FID | KID "
             "| validation FID | class consistency | worst class | sampling images/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    keys = sorted({(r["backend"], r["guidance"], r["sample_steps"]) for r in results},
                  key=lambda k: (k[0] != "gan", k[1] or 0, k[2] or 0))
    for backend, guidance, sample_steps in keys:
        rs = [r for r in results
              if (r["backend"], r["guidance"], r["sample_steps"]) == (backend, guidance,
                                                                      sample_steps)]
        lines.append(
            f"| {backend} | {'' if guidance is None else guidance} | {sample_steps or ''} | "
            f"{statistics.mean(r['steps'] for r in rs):.0f} | "
            f"{statistics.mean(r['train_seconds'] for r in rs) / 60:.1f} | "
            f"{mean_std([r['fid'] for r in rs], 2)} | {mean_std([r['kid'] for r in rs], 4)} | "
            f"{mean_std([r['val_fid'] for r in rs], 2)} | "
            f"{mean_std([r['consistency'] for r in rs])} | "
            f"{mean_std([r['worst_consistency'] for r in rs])} | "
            f"{statistics.mean(r['images_per_second'] for r in rs):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-diffusion")
    parser.add_argument("--pseudo-labels", required=True, metavar="PATTERN",
                        help="pseudo_labels.csv of a label run per seed ({seed})")
    parser.add_argument("--gan-runs", required=True, metavar="PATTERN",
                        help="a finished semi GAN run per seed ({seed}), from generate_fmnist.py")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[20],
                        help="DPM-Solver++ steps per image to score the diffusion model at")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--steps", type=int, help="diffusion steps (default: the GAN's time)")
    args = common.parse(parser)
    first = config(args, Path(args.out) / "x", args.seeds[0])
    data = load_dataset(first.data)  # every split seed shares the test set and training pool
    references = reference_features(first, data)
    results = []
    for seed in args.seeds:
        results += run_seed(args, seed, data, references)
        common.save_merged(args.out, results, KEY)
    common.save_merged(args.out, results, KEY,
                       markdown(results, args))


if __name__ == "__main__":
    main()
