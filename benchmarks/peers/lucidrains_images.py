"""lucidrains' class-conditional diffusion (denoising-diffusion-pytorch 2.3.4, its
classifier-free-guidance model) trained for a given wall time on the images semigen's generator
of a run trains on (the labeled images and the confident pseudo-labels of its
pseudo_labels.csv), then judged as semigen's generators are: the full-label evaluator's FID,
class consistency and worst class, and images per second. Runs in the peers' venv
(`benchmarks/peers/setup.sh`):

    benchmarks/peers/.venv/bin/python benchmarks/peers/lucidrains_images.py RUN \\
        --minutes 20 --out benchmarks/results/peers/lucidrains
    benchmarks/peers/.venv/bin/python benchmarks/peers/lucidrains_images.py RUN \\
        --score RUN-gan/checkpoints/generate/latest.pt --out ...   # a semigen generator

The peer's settings are its README's (Adam 8e-5, batch 32, EMA 0.995 every 10 steps, 1,000
noise steps with the cosine schedule, ε-prediction, classes dropped half the time, guidance
scale 6 with rescaling 0.7, DDIM sampling) except two that the time and the 28 px images set:
the UNet's widths are semigen's diffusion UNet's (16-32-64, two halvings: the README's 64
with four would not divide 28 px, nor train in minutes on a CPU), and sampling takes
`--sample-steps` DDIM steps (README: 250). Batches are drawn as semigen draws its own (every
class equally often), so that both learn from the same images in the same proportions."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn


class LucidrainsGenerator(nn.Module):
    """The peer behind semigen's sampling interface: `sample(labels, seeds)` -> [-1, 1]."""

    def __init__(self, diffusion: nn.Module, cond_scale: float):
        super().__init__()
        self.diffusion, self.cond_scale = diffusion, cond_scale

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        torch.manual_seed(seeds[0])  # its sampler draws from the global generator
        return self.diffusion.sample(classes=labels, cond_scale=self.cond_scale) * 2 - 1


def build(num_classes: int, shape: tuple[int, int, int], sample_steps: int) -> nn.Module:
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion, Unet
    h, _, c = shape
    unet = Unet(dim=16, dim_mults=(1, 2, 4), num_classes=num_classes, cond_drop_prob=0.5,
                channels=c)
    return GaussianDiffusion(unet, image_size=h, timesteps=1000,
                             sampling_timesteps=sample_steps)


def score(generator: nn.Module, cfg, data, per_class: int) -> dict:
    """semigen's figures for a generator: its evaluator's FID, class consistency, worst class,
    per class; and images per second of sampling."""
    from semigen.evaluation.images import EvaluatorFeatures, Judge, image_metrics, load_evaluator
    evaluator, about = load_evaluator(cfg, data.labeled.images.shape[1:],
                                      cfg.evaluate.evaluator_steps)
    from semigen.generation import generate_per_class
    start = time.perf_counter()
    generate_per_class(generator, len(data.classes), 10, seed=1)  # the sampling rate alone
    seconds = time.perf_counter() - start
    found = image_metrics(generator, Judge(EvaluatorFeatures(evaluator), evaluator), data.test,
                          data.classes, per_class)
    return {"fid": found["fid"], "kid": found["kid"],
            "class_consistency": found["class_consistency"],
            "worst_class_consistency": found["worst_class_consistency"],
            "worst_class": min(found["per_class"],
                               key=lambda c: found["per_class"][c]["class_consistency"]),
            "per_class": {c: v["class_consistency"] for c, v in found["per_class"].items()},
            "images": found["n_fake"], "evaluator": about["network"],
            "images_per_second": round(10 * len(data.classes) / seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a semigen run with pseudo_labels.csv")
    p.add_argument("--minutes", type=float, help="training wall time of the peer")
    p.add_argument("--score", type=Path, help="score this semigen generator checkpoint instead")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=8e-5, help="Adam's (the README's: 8e-5)")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    from semigen import checkpoint
    from semigen.config import resolve
    from semigen.data import load_dataset
    from semigen.generation import from_checkpoint
    from semigen.generation.data import image_batches, training_set
    from semigen.run.pseudo_labels import read_pseudo_labels

    cfg = resolve(base_file=str(a.run / "config.yaml"))
    data = load_dataset(cfg.data)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.score:
        generator = from_checkpoint(checkpoint.load(a.score)).eval()
        result = {"generator": str(a.score), **score(generator, cfg, data, a.per_class)}
        (a.out / "result.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    pseudo = read_pseudo_labels(a.run / "pseudo_labels.csv", data.classes)
    images, labels, weights = training_set(data, "semi", pseudo, cfg.generate.min_confidence,
                                           cfg.generate.weight_by_confidence,
                                           cfg.generate.class_floor)
    shape = images.shape[1:]
    diffusion = build(len(data.classes), shape, a.sample_steps)
    from ema_pytorch import EMA
    ema = EMA(diffusion, beta=0.995, update_every=10)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=a.lr, betas=(0.9, 0.99))
    batches = image_batches(images, labels, weights, 32, a.seed, 0, torch.device("cpu"))
    steps, started, log = 0, time.time(), []
    while time.time() - started < a.minutes * 60:
        x, y = next(batches)
        loss = diffusion((x.contiguous() + 1) / 2, classes=y)  # it takes images in [0, 1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update()
        steps += 1
        if steps % 100 == 0:
            log.append({"step": steps, "minutes": round((time.time() - started) / 60, 2),
                        "loss": loss.item()})
            print(json.dumps(log[-1]), flush=True)
    trained = time.time() - started
    torch.save(ema.ema_model.state_dict(), a.out / "ema_model.pt")  # to score again
    generator = LucidrainsGenerator(ema.ema_model.eval(), cond_scale=6.0)
    result = {"peer": "denoising-diffusion-pytorch 2.3.4 (classifier-free guidance)",
              "run": str(a.run), "training_images": len(labels), "minutes": a.minutes,
              "trained_seconds": round(trained, 1), "steps": steps,
              "steps_per_second": round(steps / trained, 3),
              "parameters": sum(t.numel() for t in diffusion.model.parameters()),
              "sample_steps": a.sample_steps, "lr": a.lr,
              **score(generator, cfg, data, a.per_class),
              "loss_log": log}
    (a.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "loss_log"}))


if __name__ == "__main__":
    main()
