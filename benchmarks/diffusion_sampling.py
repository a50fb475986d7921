"""What sampling a trained diffusion model costs on this machine: images per second by batch
size (guidance 1, 20 solver steps), and by solver steps, guidance, bf16 autocast and the
channels-last layout (batches of 100). bf16 changes the images (the largest pixel difference
is printed), so it is a measurement, not a setting.

    python benchmarks/diffusion_sampling.py runs/bench15/b32/diffusion-seed0
"""

from __future__ import annotations

import argparse
import time

import torch

from semigen import checkpoint, generation
from semigen.run import Layout


def images_per_second(generator, n: int, batch: int, bf16: bool = False
                      ) -> tuple[float, torch.Tensor]:
    labels = torch.arange(n) % 10
    generation.sample(generator, labels[:8], list(range(8)))  # warm-up
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        images = torch.cat([generation.sample(generator, labels[i:i + batch],
                                              list(range(i, min(i + batch, n))))
                            for i in range(0, n, batch)])
    return n / (time.perf_counter() - start), images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run with a trained diffusion generator")
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    state = checkpoint.load(Layout(args.run).checkpoint("generate"))
    generator = generation.from_checkpoint(state, guidance=1.0, sample_steps=20)
    for batch in (25, 50, 100, 200, 400):
        print(f"batch {batch}: {images_per_second(generator, args.images, batch)[0]:.1f} "
              "images/s", flush=True)
    for guidance in (0.0, 1.0):
        for steps in (20, 10):
            generator = generation.from_checkpoint(state, guidance=guidance, sample_steps=steps)
            fp32, images = images_per_second(generator, 100, 100)
            bf16, low = images_per_second(generator, 100, 100, bf16=True)
            last = images_per_second(generator.to(memory_format=torch.channels_last), 100, 100)
            print(f"guidance {guidance:g}, {steps} solver steps: fp32 {fp32:.1f} images/s, bf16 "
                  f"{bf16:.1f} (largest difference {(images - low.float()).abs().max():.3f}), "
                  f"channels-last {last[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
