"""The class prior over many splits of one built-in data set, balanced and made unequal: what
the labeled shares (the default) and EM's estimate (label.class_prior estimate) give.

One finished label run gives the representation (learned on every training image, whatever
the split: its features serve every split). For each labels-per-class count, split seed and
ratio, the unlabeled pool is the split's, or (ratio R > 1) each class kept at a share falling
geometrically from 1 to 1/R in an order drawn from the split seed, as
`make_imbalanced.py` makes it. The features' labels are made as the label stage makes them
(`represent.chosen_features`, the self-supervised features, spreading or the linear probe by
the held-out estimate); then EM's estimate, and the features' labels under the labeled shares
(label.class_prior's default), EM's estimate (label.class_prior estimate), a
confusion-corrected estimate (`confusion_corrected`) and the true shares: right, and expected
calibration error (15 bins), against the pool's truth.

    python benchmarks/prior_splits.py runs/b/label-fm10-s0 --lpc 1 5 10 --seeds 0 1 2 \\
        --ratios 1 10 --out runs/b/prior-splits
    python benchmarks/prior_splits.py --table runs/b/prior-splits/results.json ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from prior_rule import figures, save

from semigen.config import from_dict, load_yaml
from semigen.data import load_dataset
from semigen.labeling import nets, prior, represent


def unequal(data, ratio: float, seed: int):
    """`data` with its unlabeled pool thinned: class at rank r (order from `seed`) keeps a share
    ratio ** (-r / (K - 1)) of its images."""
    if ratio == 1:
        return data
    rng = np.random.default_rng(seed + 1000)
    k = len(data.classes)
    keep_share = {int(c): ratio ** (-r / (k - 1)) for r, c in enumerate(rng.permutation(k))}
    truth = data.unlabeled_truth
    keep = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(truth == c), round(keep_share[c] * (truth == c).sum()),
                   replace=False) for c in range(k)]))
    pool = data.unlabeled
    return dataclasses.replace(
        data, unlabeled=dataclasses.replace(pool, ids=[pool.ids[i] for i in keep],
                                            images=pool.images[keep], labels=pool.labels[keep]),
        unlabeled_truth=truth[keep])


def confusion_corrected(labels: torch.Tensor, held_probs: torch.Tensor,
                        held_labels: np.ndarray, k: int) -> torch.Tensor:
    """Black-box shift estimation (Lipton et al. 2018), the alternative to EM: the shares p
    whose held-out confusion rows C give the labels' shares on the pool, C^T p = q, solved by
    least squares, clipped at prior.SMALLEST_SHARE and normalised."""
    predicted = held_probs.argmax(1).numpy()
    rows = np.stack([np.bincount(predicted[held_labels == c], minlength=k)
                     / max(1, int((held_labels == c).sum())) for c in range(k)])
    q = prior.predicted_shares(labels).double().numpy()
    p = np.clip(np.linalg.lstsq(rows.T, q, rcond=None)[0], prior.SMALLEST_SHARE, None)
    return torch.from_numpy(p / p.sum()).float()


def table(rows: list[dict]) -> str:
    """Markdown: per labels-per-class count and ratio, the features' labels right / ECE (means
    over the split seeds) under the labeled shares (the default), EM's estimate
    (label.class_prior estimate) and the true shares."""
    def mean(found: list[dict], key: str, what: str) -> str:
        values = [r[key][what] for r in found if key in r]
        return f"{100 * sum(values) / len(values):.1f}" if values else ""

    lines = ["| labels per class | pool | right % / ECE x100: **labeled shares (default)** | "
             "EM's estimate | true shares |", "| ---: | --- | ---: | ---: | ---: |"]
    for lpc, ratio in sorted({(r["lpc"], r["ratio"]) for r in rows}):
        found = [r for r in rows if r["lpc"] == lpc and r["ratio"] == ratio]
        pairs = [" / ".join(mean(found, key, what) for what in ("right", "ece"))
                 for key in ("with_labeled_shares", "with_estimate", "with_true_shares")]
        lines.append(f"| {lpc} | {'balanced' if ratio == 1 else f'{ratio:g}:1'} | "
                     f"**{pairs[0]}** | {pairs[1]} | {pairs[2]} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", help="a finished label run on a built-in (its representation)")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="only print the table of "
                   "these results.json files")
    p.add_argument("--lpc", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ratios", type=float, nargs="+", default=[1, 10])
    p.add_argument("--out")
    args = p.parse_args()
    if args.table:
        print(table([row for path in args.table for row in json.loads(Path(path).read_text())]))
        return
    torch.set_num_threads(1)
    cfg = from_dict(load_yaml(f"{args.run}/config.yaml"))
    net = None
    embedded: dict[str, torch.Tensor] = {}
    rows = []
    for lpc in args.lpc:
        for seed in args.seeds:
            split = dataclasses.replace(cfg.data, labels_per_class=lpc, split_seed=seed)
            whole = load_dataset(split)
            if net is None:
                net = represent.load_representation(args.run, cfg, whole, "cpu")
            for ratio in args.ratios:
                data = unequal(whole, ratio, seed)
                ids = data.labeled.ids + data.unlabeled.ids
                missing = [i for i in ids if i not in embedded]
                if missing:
                    images = np.concatenate([data.labeled.images, data.unlabeled.images])
                    where = {image: n for n, image in enumerate(ids)}
                    values = nets.embed(net, images[[where[i] for i in missing]], "cpu")
                    embedded |= dict(zip(missing, values, strict=True))
                own = torch.stack([embedded[i] for i in ids])
                _, targets, choice, held_out, _ = represent.chosen_features(
                    data, own, None, "self-supervised", "auto")
                held, held_probs = held_out.held, held_out.probs
                labels = targets[len(data.labeled):]
                share = prior.labeled_prior(data.labeled.labels, len(data.classes))
                truth = data.unlabeled_truth
                row = {"lpc": lpc, "seed": seed, "ratio": ratio, "labels_by": choice["labels_by"],
                       "true_shift": prior.shift(prior.labeled_prior(truth, len(share)), share),
                       "with_labeled_shares": figures(labels, truth)}
                true_shares = prior.labeled_prior(truth, len(share))
                row["with_true_shares"] = figures(prior.reweighted(labels, share, true_shares),
                                                  truth)
                if lpc >= 2:
                    estimate = prior.estimate_prior(labels, share)
                    corrected = confusion_corrected(labels, held_probs, data.labeled.labels[held],
                                                    len(share))
                    row |= {"shift": prior.shift(estimate, share),
                            "estimate_error": prior.shift(estimate, true_shares),
                            "corrected_error": prior.shift(corrected, true_shares),
                            "with_estimate": figures(prior.reweighted(labels, share, estimate),
                                                     truth),
                            "with_corrected": figures(prior.reweighted(labels, share, corrected),
                                                      truth)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    save(rows, args.out)
    print(table(rows))


if __name__ == "__main__":
    main()
