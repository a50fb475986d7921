"""The diffusion backend against the GAN on Fashion-MNIST-100 (semi mode), at equal generator
training time: FID, KID, class consistency and worst class by the evaluator network, sampling
images per second, and a guidance sweep.

    python benchmarks/diffusion_fmnist.py --preset quick --seeds 0 1 2 \\
        --pseudo-labels 'runs/bench13/fm10/semi-seed{seed}/pseudo_labels.csv' \\
        --gan-runs 'runs/bench14/fm10/semi-seed{seed}' --guidance 0 1 2 4

For each seed, the diffusion model trains on the pseudo-labels of that split seed's label run
for as many steps as fit in the GAN run's own training time (`--gan-runs`: finished
`generate_fmnist.py` semi runs; their time is in their stats.jsonl), its sample grids included,
after a 25-step probe of this machine's speed; `--steps N` fixes the steps instead. Then both
are scored by `semigen evaluate`'s image metrics on the same N per class (`--per-class`) and
seed, the diffusion model at every guidance of `--guidance`. Writes OUT/results.json, prints
Markdown for BENCHMARKS.md, and OUT/gan-vs-diffusion-seed<S>.png: the two models' last grids
side by side."""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import common
import torch

from semigen import checkpoint, generation
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.evaluation.run import generator_metrics
from semigen.rundir import read_stats


def config(args, out: Path, seed: int, **extra):
    overrides = {"data.source": "fmnist", "data.labels_per_class": str(args.labels_per_class),
                 "data.split_seed": str(seed), "runtime.seed": str(seed), "run.out": str(out),
                 "run.progress": "false", "generate.mode": "semi",
                 "generate.backend": "diffusion", "evaluate.seed": str(seed), **args.set,
                 **extra}
    return resolve(preset=args.preset, overrides=overrides)


def train_seconds(run: Path) -> float:
    """The generate stage's training time, from its stats.jsonl (first line to `done`), plus
    the time to its first logged step."""
    rows = [r for r in read_stats(run) if r["stage"] == "generate"]
    done = next(r for r in rows if r.get("event") == "done")
    first = rows[0]
    per_step = (done["time"] - first["time"]) / (done["step"] - first["step"])
    return done["time"] - first["time"] + first["step"] * per_step


def probe_speed(args, seed: int) -> tuple[float, float]:
    """This machine's seconds per diffusion step at the config, and per sample grid (a run
    samples one every ``generate.sample_every`` steps and at the end), from a short probe run."""
    probe = Path(args.out) / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir(parents=True)
    shutil.copy(args.pseudo_labels.format(seed=seed), probe / "pseudo_labels.csv")
    generation.train(config(args, probe, seed, **{"generate.steps": "25", "run.log_every": "1",
                                                  "generate.sample_every": "1000"}))
    stats = [r for r in read_stats(probe) if r["stage"] == "generate"]
    rows = [r for r in stats if "event" not in r]
    done = next(r for r in stats if r.get("event") == "done")
    per_step = (rows[-1]["time"] - rows[4]["time"]) / (rows[-1]["step"] - rows[4]["step"])
    return per_step, done["time"] - rows[-1]["time"]  # the last grid (and a checkpoint)


def steps_within(seconds: float, per_step: float, per_grid: float, sample_every: int) -> int:
    """How many steps, with a grid every `sample_every` and one at the end, fit in `seconds`."""
    return max(1, round((seconds - per_grid) / (per_step + per_grid / sample_every)))


def sampling_rate(generator: torch.nn.Module, n: int = 200) -> float:
    """Images per second of `generation.sample`, batch 200, on this machine."""
    labels = torch.arange(n) % 10
    generation.sample(generator, labels[:8], list(range(8)))  # warm-up
    start = time.perf_counter()
    generation.sample(generator, labels, list(range(n)))
    return n / (time.perf_counter() - start)


def score(args, cfg, data, run: Path, guidance: float | None) -> dict:
    cfg = replace(cfg, evaluate=replace(cfg.evaluate, per_class=args.per_class))
    if guidance is not None:
        cfg = replace(cfg, generate=replace(cfg.generate, guidance=guidance))
    ckpt = checkpoint.stage_path(run, "generate")
    images = generator_metrics(cfg, data, ckpt, args.per_class, copying=False)
    state = checkpoint.load(ckpt)
    generator = generation.from_checkpoint(state, guidance=guidance)
    return {"fid": images["fid"], "kid": images["kid"],
            "consistency": images["class_consistency"],
            "worst_consistency": images["worst_class_consistency"],
            "worst_class": min(images["per_class"], key=lambda c:
                               images["per_class"][c]["class_consistency"]),
            "images_per_second": sampling_rate(generator), "settings": generator.settings(),
            "evaluator": images["feature_network"]}


def run_seed(args, seed: int, steps: int, data) -> list[dict]:
    gan_run = Path(args.gan_runs.format(seed=seed))
    out = Path(args.out) / f"diffusion-seed{seed}"
    cfg = config(args, out, seed, **{"generate.steps": str(steps)})
    if not (checkpoint.stage_path(out, "generate")).exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.pseudo_labels.format(seed=seed), out / "pseudo_labels.csv")
        generation.train(cfg)
    gan_cfg = resolve(base_file=str(gan_run / "config.yaml"),
                      overrides={"evaluate.seed": str(seed)})
    rows = [{"backend": "gan", "seed": seed, "guidance": None, "steps": gan_cfg.generate.steps,
             "train_seconds": train_seconds(gan_run),
             **score(args, gan_cfg, data, gan_run, None)}]
    for w in args.guidance:
        rows.append({"backend": "diffusion", "seed": seed, "guidance": w, "steps": steps,
                     "train_seconds": train_seconds(out), **score(args, cfg, data, out, w)})
        print(f"seed {seed} guidance {w}: consistency {rows[-1]['consistency']:.3f}, "
              f"FID {rows[-1]['fid']:.2f}", flush=True)
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
             f"{' '.join(map(str, args.guidance))}`, {date.today().isoformat()}; evaluator: "
             f"{evaluator['network']}, test accuracy {evaluator['test_accuracy']:.4f}; "
             f"N = {args.per_class} generated per class against the 10,000 test images", "",
             "| generator | guidance | steps | train time (min) | FID | KID | class consistency "
             "| worst class | sampling images/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    keys = sorted({(r["backend"], r["guidance"]) for r in results},
                  key=lambda k: (k[0] != "gan", k[1] or 0))
    for backend, guidance in keys:
        rs = [r for r in results if (r["backend"], r["guidance"]) == (backend, guidance)]
        lines.append(
            f"| {backend} | {'' if guidance is None else guidance} | "
            f"{statistics.mean(r['steps'] for r in rs):.0f} | "
            f"{statistics.mean(r['train_seconds'] for r in rs) / 60:.1f} | "
            f"{mean_std([r['fid'] for r in rs], 2)} | {mean_std([r['kid'] for r in rs], 4)} | "
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
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--steps", type=int, help="diffusion steps (default: the GAN's time)")
    args = common.parse(parser)
    data = load_dataset(config(args, Path(args.out) / "x", args.seeds[0]).data)
    results = []
    for seed in args.seeds:
        steps = args.steps
        if steps is None:
            per_step, per_grid = probe_speed(args, seed)
            budget = train_seconds(Path(args.gan_runs.format(seed=seed)))
            steps = steps_within(budget, per_step, per_grid,
                                 config(args, Path(args.out), seed).generate.sample_every)
            print(f"seed {seed}: {per_step:.3f} s per diffusion step, {per_grid:.1f} s per "
                  f"grid -> {steps} steps in the GAN's {budget / 60:.1f} min", flush=True)
        results += run_seed(args, seed, steps, data)
        common.save_merged(args.out, results, ("backend", "seed", "guidance"))
    common.save_merged(args.out, results, ("backend", "seed", "guidance"),
                       markdown(results, args))


if __name__ == "__main__":
    main()
