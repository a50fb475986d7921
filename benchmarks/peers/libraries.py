"""semigen's own small pieces against the well-kept libraries that do the same: the same
inputs, the figures side by side (values, and milliseconds a call on this machine).

- SimCLR's NT-Xent loss: `semigen.labeling.losses.contrastive_loss` / lightly's NTXentLoss;
- precision, recall, density, coverage: `semigen.evaluation.judge.precision_recall` / prdc
  (Naeem et al.'s reference code);
- FID and KID from features: torchmetrics (what semigen uses) / torch-fidelity;
- EMA: `semigen.training.make_ema` (torch's AveragedModel, with warm-up) / ema-pytorch.

Runs in the peers' venv (`benchmarks/peers/setup.sh`):

    benchmarks/peers/.venv/bin/python benchmarks/peers/libraries.py --out OUT"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def timed(fn, repeat: int = 5) -> tuple[object, float]:
    """fn()'s value and its best time of `repeat` calls, in milliseconds."""
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return value, round(best * 1000, 2)


def nt_xent(g: torch.Generator) -> dict:
    from lightly.loss import NTXentLoss

    from semigen.labeling.losses import contrastive_loss
    z1, z2 = torch.randn(128, 128, generator=g), torch.randn(128, 128, generator=g)
    z2 = z1 + 0.5 * z2  # two views: correlated
    ours, ours_ms = timed(lambda: contrastive_loss(z1, z2, 0.2).item())
    theirs_fn = NTXentLoss(temperature=0.2)
    theirs, theirs_ms = timed(lambda: theirs_fn(z1, z2).item())
    return {"semigen": ours, "lightly": theirs, "semigen_ms": ours_ms, "lightly_ms": theirs_ms,
            "batch": 128, "dim": 128}


def prdc_figures(g: torch.Generator) -> dict:
    from prdc import compute_prdc

    from semigen.evaluation.judge import precision_recall
    real = torch.randn(5000, 128, generator=g)
    fake = 0.8 * torch.randn(2000, 128, generator=g) + 0.3  # narrower and shifted
    ours, ours_ms = timed(lambda: precision_recall(real, fake, k=3), repeat=2)
    theirs, theirs_ms = timed(lambda: compute_prdc(real.numpy(), fake.numpy(), nearest_k=3),
                              repeat=2)
    keys = ("precision", "recall", "density", "coverage")
    return {"semigen": {k: ours[k] for k in keys}, "prdc": {k: float(theirs[k]) for k in keys},
            "semigen_ms": ours_ms, "prdc_ms": theirs_ms, "real": 5000, "fake": 2000, "k": 3}


def fid_kid(g: torch.Generator) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    from semigen.evaluation.images import feature_distances
    real = torch.randn(10000, 128, generator=g, dtype=torch.float64)
    fake = 0.9 * torch.randn(2000, 128, generator=g, dtype=torch.float64) + 0.1
    ours, ours_ms = timed(lambda: feature_distances(real, fake), repeat=2)

    def theirs():
        fid = fid_statistics_to_metric(fid_features_to_statistics(real),
                                       fid_features_to_statistics(fake), verbose=False)
        kid = kid_features_to_metric(real, fake, kid_subsets=100, kid_subset_size=1000,
                                     kid_degree=3, kid_gamma=None, kid_coef0=1, verbose=False,
                                     rng_seed=0)
        return {"fid": fid["frechet_inception_distance"],
                "kid": kid["kernel_inception_distance_mean"]}
    their, their_ms = timed(theirs, repeat=2)
    return {"semigen (torchmetrics)": {k: ours[k] for k in ("fid", "kid")},
            "torch-fidelity": their, "semigen_ms": ours_ms, "torch_fidelity_ms": their_ms,
            "real": 10000, "fake": 2000, "dim": 128}


def ema(g: torch.Generator) -> dict:
    from ema_pytorch import EMA

    from semigen.labeling import nets
    from semigen.training import make_ema
    net = nets.build(**nets.arguments("cnn", (28, 28, 1), 10, 16))
    ours = make_ema(net, 0.999)
    theirs = EMA(net, beta=0.999, update_after_step=0, update_every=1)
    _, ours_ms = timed(lambda: ours.update_parameters(net), repeat=20)
    _, theirs_ms = timed(lambda: theirs.update(), repeat=20)
    return {"semigen_ms": ours_ms, "ema_pytorch_ms": theirs_ms,
            "parameters": sum(p.numel() for p in net.parameters()), "network": "cnn width 16"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    found = {}
    for name, fn in (("nt_xent", nt_xent), ("precision_recall", prdc_figures),
                     ("fid_kid", fid_kid), ("ema", ema)):
        found[name] = fn(torch.Generator().manual_seed(0))
        print(name, json.dumps(found[name]), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "libraries.json").write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
