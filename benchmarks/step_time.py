"""Training throughput of the generator (one discriminator and one generator update per step)
and, with --classifier, seconds per step of the classifier (semi: labeled, weak and strong
views), at a preset's shapes; for this checkout, for earlier commits, and for a plain PyTorch
loop of the same two networks, all in one run:

    python benchmarks/step_time.py --data fmnist --preset quick --steps 60 --compare 4849b03

`--compare REV` checks REV out into a temporary git worktree and measures semigen there with the
same script (`semigen.generate` at that commit's defaults for the preset). The plain loop is
this checkout's generator and discriminator at the same batch size and precision, trained on
the same images with Adam and the hinge loss and nothing else: no Fabric, no DiffAugment, no EMA,
no checkpoints or sample grids, batches drawn by plain indexing. Whatever semigen's loop costs
beyond it is overhead. Each measurement is repeated `--repeats` times, the trees interleaved
(a shared host drifts from minute to minute), and the median reported. The first 10 steps
(start-up) are not counted, nor the sample grid and checkpoint at the end. Prints a Markdown
table for BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seconds_per_step(run: Path, stage: str, steps: int) -> float:
    from semigen.run import read_stats
    # the loss lines (every 10 steps), not the evaluation and "done" lines of the same step
    times = {r["step"]: r["time"] for r in read_stats(run)
             if r.get("stage") == stage and ("loss" in r or "d_loss" in r)}
    return (times[steps] - times[10]) / (steps - 10)


def measure_semigen(args) -> dict:
    """images/s of `semigen.generate` (labels-only: no label stage needed), and with
    --classifier the classifier's seconds per step, in whatever semigen is on the path."""
    import yaml

    import semigen
    common = dict(preset=args.preset, device=args.device, run__resume="none",
                  run__progress=False, run__log_every=10,
                  **{key.replace(".", "__"): value for key, value in args.set.items()})
    found = {"torch_threads": __import__("torch").get_num_threads()}
    with tempfile.TemporaryDirectory() as work:
        generate_run, label_run = Path(work) / "generate", Path(work) / "label"
        semigen.generate(args.data, out=str(generate_run), generate__mode="labels-only",
                         generate__steps=args.steps, generate__sample_every=10 * args.steps,
                         **common)
        batch = yaml.safe_load((generate_run / "config.yaml").read_text())["generate"][
            "batch_size"]
        found |= {"batch_size": batch,
                  "images_per_second": batch / seconds_per_step(generate_run, "generate",
                                                                args.steps)}
        if args.classifier:
            semigen.label(args.data, out=str(label_run), label__steps=args.steps,
                          label__eval_every=10 * args.steps, label__eval_unlabeled=100, **common)
            found["classifier_seconds"] = seconds_per_step(label_run, "label", args.steps)
    return found


def measure_plain(args) -> dict:
    """images/s of the plain loop of this checkout's two networks (see the module docstring)."""
    import torch

    from semigen.config import resolve
    from semigen.data import load_dataset, to_float
    from semigen.generation import losses
    from semigen.generation.gan import build_networks
    from semigen.runtime import PRECISION, use_threads

    cfg = resolve(preset=args.preset, overrides={"data.source": args.data,
                                                 "runtime.device": args.device, **args.set})
    use_threads(cfg.runtime.threads)
    gen, device = cfg.generate, torch.device("cuda" if args.device == "cuda" else "cpu")
    data = load_dataset(cfg.data)
    images = torch.from_numpy(data.labeled.images).permute(0, 3, 1, 2)
    labels = torch.from_numpy(data.labeled.labels)
    classify = gen.class_loss > 0  # the auxiliary class loss is part of the objective
    generator, discriminator = (net.to(device) for net in build_networks(
        len(data.classes), data.shape, gen.z_dim, gen.width, classify))
    opt_g = torch.optim.Adam(generator.parameters(), lr=gen.lr, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=gen.lr, betas=(0.0, 0.999))
    precision = PRECISION[cfg.runtime.precision]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if "bf16" in precision
                              else torch.float16, enabled=precision != "32-true")
    times = []
    for _ in range(args.steps):
        pick = torch.randint(len(labels), (gen.batch_size,))
        x = to_float(images[pick]).to(device, memory_format=torch.channels_last)
        y = labels[pick].to(device)
        with autocast:
            with torch.no_grad():
                fake = generator(torch.randn(len(y), gen.z_dim, device=device), y)
            d_loss, _ = losses.discriminator_loss(
                discriminator(torch.cat([x, fake.to(x.dtype)]), torch.cat([y, y])), y,
                gen.class_loss)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with autocast:
            fake = generator(torch.randn(len(y), gen.z_dim, device=device), y)
            g_loss, _ = losses.generator_loss(discriminator(fake, y), y, gen.class_loss)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return {"batch_size": gen.batch_size,
            "images_per_second": gen.batch_size * (args.steps - 10) / (times[-1] - times[9])}


def run_measurement(kind: str, args, src: Path, script: Path) -> dict:
    """One measurement in a fresh process with `src` first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(src), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, str(script), "--measure", kind, "--data", args.data,
               "--preset", args.preset, "--steps", str(args.steps), "--device", args.device]
    if args.classifier:
        command.append("--classifier")
    for key, value in args.set.items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} measurement in {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fmnist")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=60, help="a multiple of 10, > 10")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare", nargs="*", default=[], metavar="REV",
                        help="earlier commits to measure in the same run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classifier", action="store_true",
                        help="also the classifier's seconds per step (semigen only)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain loop")
    parser.add_argument("--set", action="append", default=[], metavar="k=v",
                        help="a config field for every measurement, e.g. data.fmnist_dir=DIR")
    parser.add_argument("--json", metavar="PATH", help="also write the medians here")
    parser.add_argument("--measure", choices=["semigen", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.set = dict(pair.split("=", 1) for pair in args.set)
    if args.measure:  # the child process: one measurement, printed as JSON
        found = measure_semigen(args) if args.measure == "semigen" else measure_plain(args)
        print(json.dumps(found))
        return

    import torch
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as work:
        trees = {"this checkout": ROOT}
        for rev in args.compare:
            tree = Path(work) / rev
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                            rev], check=True, capture_output=True)
            trees[rev] = tree
        jobs = [(f"semigen at {name}", "semigen", tree) for name, tree in trees.items()]
        if not args.no_plain:
            jobs.append(("plain loop, same networks", "plain", ROOT))
        results: dict[str, list[dict]] = {name: [] for name, _, _ in jobs}
        try:
            for repeat in range(args.repeats):
                for name, kind, tree in jobs:
                    results[name].append(run_measurement(kind, args, tree / "src", script))
                    print(f"repeat {repeat + 1}: {name}: "
                          f"{results[name][-1]['images_per_second']:.0f} images/s",
                          file=sys.stderr, flush=True)
        finally:
            for tree in list(trees.values())[1:]:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tree)], check=False, capture_output=True)

    rate = {name: statistics.median(r["images_per_second"] for r in rs)
            for name, rs in results.items()}
    here = rate["semigen at this checkout"]
    if args.json:
        Path(args.json).write_text(json.dumps({"images_per_second": rate, "each": results},
                                              indent=1))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{results['semigen at this checkout'][0]['torch_threads']} threads, device "
          f"{args.device}; {args.data}, preset {args.preset}; {args.steps} steps per "
          f"measurement, median of {args.repeats}\n")
    print("| generator training | batch | images/s (each repeat) | median | this checkout / it |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, rs in results.items():
        each = " / ".join(f"{r['images_per_second']:.0f}" for r in rs)
        print(f"| {name} | {rs[0]['batch_size']} | {each} | {rate[name]:.0f} | "
              f"{here / rate[name]:.2f} |")
    if args.classifier:
        print("\n| classifier step (semi) | seconds (median) |\n| --- | ---: |")
        for name, rs in results.items():
            if "classifier_seconds" in rs[0]:
                print(f"| {name} | "
                      f"{statistics.median(r['classifier_seconds'] for r in rs):.3f} |")


if __name__ == "__main__":
    main()
