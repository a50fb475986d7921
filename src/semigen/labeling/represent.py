"""(1a) represent: features learned from every training image before any label is used.

With a handful of labels, a classifier trained from random weights memorises them, and
self-training then amplifies its own guesses. So the label stage first trains its network's
feature extractor self-supervised on all training images, labeled and unlabeled (never the
test images), with SimCLR (Chen et al. 2020): two views of each image, made with the nuisances
of `contrastive_views`, must pick each other out of the batch (`losses.contrastive_loss`),
through a small projection head that is dropped afterwards. BENCHMARKS.md says why SimCLR.

Then labels come from the features (`propagate`): every image is linked to its nearest
neighbours and the few labels spread along those links (label spreading, Zhou et al. 2004).
Those labels are the first pseudo-labels, and the labeled images, held out in turn
(`cross_validated_accuracy`), say how far to trust them; `semigen.labeling.train` then
fine-tunes the pretrained network with FixMatch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.semi_supervised import LabelSpreading
from torch import nn

from .. import checkpoint
from ..config import Config
from ..data import Dataset, to_float
from ..data.transforms import contrastive_views, seeded_cpu_rng
from ..run import Layout
from ..runtime import mix_seed
from ..stage import Stage, resume_or_start, run_steps
from . import losses, nets, prior
from .nets import embed
from .predict import predict, scores

STAGE = "represent"
NEIGHBOURS = 10  # links per image in the label-spreading graph
# How far labels travel along the graph: each step keeps this share of what the neighbours
# say (sklearn's default, 0.2, lets a label fade within two or three links). 0.9 spread
# better on the training pools of Fashion-MNIST and the shapes sets (BENCHMARKS.md).
SPREAD = 0.9


def projector(width: int, out: int = 64) -> nn.Sequential:
    """SimCLR's projection head: the loss is taken on its output, the features stay general."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out))


def recalibrate_batch_norm(module: nn.Module, images: np.ndarray, device, limit: int = 10_000,
                           batch_size: int = 256) -> None:
    """BatchNorm's running statistics measured afresh on (a fixed sample of) the images
    themselves. Those of a stage that saw other images (augmented views, or ImageNet for a
    user's backbone) make eval-mode features, and a head fitted to them, disagree with the
    training-mode network that fine-tunes: a random resnet18's first loss was 44."""
    pick = np.sort(np.random.default_rng(0).permutation(len(images))[:limit])
    batches = (to_float(torch.from_numpy(images[pick[i:i + batch_size]]).permute(0, 3, 1, 2))
               for i in range(0, len(pick), batch_size))
    torch.optim.swa_utils.update_bn(batches, module, device)


class Features(NamedTuple):
    """Every training image's features (labeled images first) and a neighbour graph: that of
    these features, or of the candidate the labels spread over (`chosen_features`); and, where
    a probe read the labels (`LABELS_BY`), the features it read (`chosen`)."""
    values: torch.Tensor
    links: sparse.csr_matrix
    chosen: torch.Tensor | None = None
    how: str = "spread"


def labels_from(features: Features, known: np.ndarray, num_classes: int) -> torch.Tensor:
    """The features' labels of every training image (labeled first) from the entries of
    `known` that are >= 0, made the way the stage's were: spread along the graph, or read by
    the probe (whose own training images keep their labels)."""
    if features.how != "linear" or features.chosen is None:
        return propagate(features.links, known, num_classes)
    fit = np.flatnonzero(known >= 0)
    found = linear_labels(features.chosen, fit, known[fit], num_classes)
    found[fit] = F.one_hot(torch.as_tensor(known[fit]), num_classes).float()
    return found


def neighbour_graph(features: torch.Tensor) -> sparse.csr_matrix:
    """Each row of `features` linked to its NEIGHBOURS nearest rows by cosine (itself among
    them, as in sklearn's knn kernel): the graph labels spread over. Built once, it serves every
    spreading over the same features (held-out folds, calibration halves): on 60,000 images
    the graph, not the spreading, takes the time."""
    x = F.normalize(features, dim=1).numpy()
    k = min(NEIGHBOURS, len(x) - 1)
    return NearestNeighbors(n_neighbors=k).fit(x).kneighbors_graph(x, k, mode="connectivity")


def features_of(module: nn.Module, images: np.ndarray, device) -> Features:
    """`module`'s features of `images` (see `embed`) with their neighbour graph."""
    values = embed(module, images, device)
    return Features(values, neighbour_graph(values))


def propagate(links: sparse.csr_matrix, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Class probabilities for every node of the neighbour graph `links` from the nodes whose
    label is >= 0, by label spreading; nodes the graph does not reach get the uniform
    distribution."""
    # The graph is given as the data and the kernel hands it back: sklearn's knn kernel
    # would rebuild the same graph on every call.
    spreading = LabelSpreading(kernel=lambda graph, _: graph, alpha=SPREAD, max_iter=100)
    with np.errstate(divide="ignore", invalid="ignore"):
        spreading.fit(links, labels)
    probs = np.nan_to_num(spreading.label_distributions_, nan=0.0)
    found = np.zeros((len(labels), num_classes))
    found[:, spreading.classes_[spreading.classes_ >= 0]] = probs[:, spreading.classes_ >= 0]
    empty = found.sum(1) == 0
    found[empty] = 1.0 / num_classes
    return torch.from_numpy(found / found.sum(1, keepdims=True)).float()


def folds_per_class(labels: np.ndarray, num_classes: int, folds: int, seed: int = 0,
                    allowed: np.ndarray | None = None) -> np.ndarray:
    """A fold (0 to `folds` - 1) for each labeled image, dealt in turn within each class in a
    seeded order; -1 (always trained on, never held out) for the images `allowed` leaves out
    (`Dataset.held_out_allowed`) and for a class with fewer than two of the others, which
    needs an image left to be predicted from at all."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1)
    allowed = np.ones(len(labels), bool) if allowed is None else allowed
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero((labels == c) & allowed))
        if len(members) >= 2:
            fold[members] = np.arange(len(members)) % min(folds, len(members))
    return fold


class HeldOut(NamedTuple):
    """Labels for labeled images held out in turn (`folds_per_class`), each from the others."""
    held: np.ndarray  # positions into the labeled images, fold by fold (empty: none held out)
    probs: torch.Tensor  # the label distribution each held-out image gets, len(held) x classes


def _held_out(parts: list[tuple[np.ndarray, torch.Tensor]], num_classes: int) -> HeldOut:
    """One `HeldOut` from each fold's (held, their probs)."""
    if not parts:
        return HeldOut(np.zeros(0, int), torch.zeros(0, num_classes))
    return HeldOut(np.concatenate([held for held, _ in parts]),
                   torch.cat([probs for _, probs in parts]))


def held_out_labels(links: sparse.csr_matrix, labeled: np.ndarray, labels: np.ndarray,
                    num_classes: int, folds: int = 5, seed: int = 0,
                    allowed: np.ndarray | None = None) -> HeldOut:
    """The labeled images `propagate` can be checked on (`folds_per_class`) and the label
    distribution each gets when its fold is held out and spread from the others."""
    fold_of = folds_per_class(labels, num_classes, folds, seed, allowed)
    known = np.full(links.shape[0], -1)
    parts = []
    for f in range(fold_of.max() + 1):
        train = known.copy()
        train[labeled[fold_of != f]] = labels[fold_of != f]
        held = np.flatnonzero(fold_of == f)
        spread = propagate(links, train, num_classes)
        parts.append((held, spread[labeled[held]]))
    return _held_out(parts, num_classes)


def cross_validated_accuracy(links: sparse.csr_matrix, labeled: np.ndarray, labels: np.ndarray,
                             num_classes: int, folds: int = 5, seed: int = 0,
                             allowed: np.ndarray | None = None) -> dict:
    """Accuracy of `propagate` on labeled images it did not see (`held_out_labels`: each of
    `folds` folds, one image per class per fold at most, labeled from the others); images
    `allowed` leaves out are never held out. With a Wilson 95 % interval, and None where no
    class has two labeled images to hold out."""
    found = held_out_labels(links, labeled, labels, num_classes, folds, seed, allowed)
    return accuracy_held_out(found.held, found.probs, labels)


def accuracy_held_out(held: np.ndarray, probs: torch.Tensor, labels: np.ndarray) -> dict:
    """`cross_validated_accuracy`'s figures from `held_out_labels`' answer."""
    if not len(held):
        return {"estimated_accuracy": None, "estimate_held_out": 0}
    right, total = int((probs.argmax(1).numpy() == labels[held]).sum()), len(held)
    low, high = wilson_interval(right, total)
    return {"estimated_accuracy": right / total, "estimate_low": low, "estimate_high": high,
            "estimate_held_out": total}


def wilson_interval(right: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (sound for small counts)."""
    p = right / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def colour_tells_classes_apart(images: np.ndarray, labels: np.ndarray) -> bool:
    """Whether an image's colour alone (per-channel mean and spread) tells its class, judged
    on the labeled images held out one at a time (1-NN). Then colour is a cue, not a
    nuisance, and the views keep it: dark against light, ripe against unripe."""
    pixels = images.reshape(len(images), -1, images.shape[-1]).astype(np.float64)
    stats = np.concatenate([pixels.mean(1), pixels.std(1)], axis=1)
    stats = (stats - stats.mean(0)) / (stats.std(0) + 1e-9)
    # the nearest other image (the first neighbour is the image itself), in bounded memory
    nearest = NearestNeighbors(n_neighbors=2).fit(stats).kneighbors(stats)[1][:, 1]
    right = int((labels[nearest] == labels).sum())
    low, _ = wilson_interval(right, len(labels))
    chance = 1 / len(np.unique(labels))
    # At least halfway from chance to perfect, and surely above chance: brightness that
    # only hints at a class (trousers against coats, 29 % against 10 % on Fashion-MNIST)
    # stays a nuisance, which measured better there (BENCHMARKS.md).
    return right / len(labels) >= (1 + chance) / 2 and low > chance


def pretrain(stage: Stage, data: Dataset, net: nn.Module, colour: bool) -> None:
    """Train ``net.features`` in place with SimCLR for ``label.pretrain_steps`` steps, from
    ``RUN/checkpoints/represent/`` if an earlier attempt left one. Batch t is drawn and
    augmented from seeds of (seed, rank, t) alone, so a resumed run equals an uninterrupted
    one. `stage` is the representation stage (a part of the label stage)."""
    lab, rt = stage.cfg.label, stage.rt
    total_steps = lab.pretrain_steps
    encoder = nn.Sequential(net.features, projector(net.head.in_features)
                            ).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lab.pretrain_lr, weight_decay=1e-6)
    start_step, _ = resume_or_start(stage, {"model": encoder, "optimizer": optimizer})
    if start_step >= total_steps:
        return
    model, optimizer = rt.fabric.setup(encoder, optimizer)

    pool = torch.from_numpy(np.concatenate([data.labeled.images, data.unlabeled.images])
                            ).permute(0, 3, 1, 2)
    augment = contrastive_views(data.shape, data.hflip, data.rotate, colour)
    seed = rt.data_seed(100)

    def step(t: int) -> dict:
        with seeded_cpu_rng(mix_seed(seed, t)):  # the batch and its views from (seed, t)
            index = torch.randint(len(pool), (lab.pretrain_batch_size,))
            batch = pool[index].to(rt.device).float() / 255
            views = torch.cat([augment(batch), augment(batch)]) * 2 - 1
        z1, z2 = model(views.contiguous(memory_format=torch.channels_last)).chunk(2)
        loss = losses.contrastive_loss(z1, z2, lab.pretrain_temperature,
                                       decoupled=lab.pretrain_loss == "dcl")
        optimizer.zero_grad(set_to_none=True)
        rt.fabric.backward(loss)
        optimizer.step()
        return {"loss": loss}

    def checkpoint_state() -> dict:
        return {"kind": "representation", "stage": STAGE, "model": encoder.state_dict(),
                "optimizer": optimizer.state_dict(), "config": stage.cfg.to_dict()}

    run_steps(stage, start_step, total_steps, step, f"{STAGE} (SimCLR)",
              checkpoint_state=checkpoint_state)


def standardised(values: torch.Tensor) -> torch.Tensor:
    """Each feature centred and scaled to unit spread over the images: a pretrained network's
    features are non-negative and a few of them large, so that without it a handful decide
    every cosine."""
    return (values - values.mean(0)) / (values.std(0) + 1e-6)


# Above this many images, the pretrained features (2,560 of them for EfficientNet-Lite0) keep
# their PRINCIPAL leading components: a neighbour graph of 60,000 images in 2,560 dimensions
# took over ten minutes on one core, in 256 about what the self-supervised features' takes.
# A rule of time, not chosen on any accuracy.
REDUCE_ABOVE, PRINCIPAL = 10_000, 256


def principal_directions(values: torch.Tensor, dims: int = PRINCIPAL
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of `values` and their `dims` leading principal directions (columns, leading
    first): exact and deterministic, the eigenvectors of their covariance."""
    mean = values.mean(0)
    centred = values - mean
    covariance = centred.T.double() @ centred.double() / max(1, len(values) - 1)
    _, vectors = torch.linalg.eigh(covariance)
    return mean, vectors[:, -dims:].flip(1).float()


def principal(values: torch.Tensor, dims: int = PRINCIPAL) -> torch.Tensor:
    """`values`, centred, projected on their `dims` leading principal directions."""
    mean, vectors = principal_directions(values, dims)
    return (values - mean) @ vectors


def candidates(own: torch.Tensor, pretrained_values: torch.Tensor | None
               ) -> dict[str, torch.Tensor]:
    """The features the labels may spread over: the network's own (self-supervised), the frozen
    pretrained ones where there are any (standardised; on many images, their leading principal
    components), and both side by side (each scaled to unit length first, so that the cosine of
    the pair is the mean of the two cosines)."""
    found = {"self-supervised": own}
    if pretrained_values is not None:
        other = standardised(pretrained_values)
        if len(other) > REDUCE_ABOVE and other.shape[1] > PRINCIPAL:
            other = principal(other, PRINCIPAL)
        found["pretrained"] = other
        found["both"] = torch.cat([F.normalize(own, dim=1), F.normalize(other, dim=1)], 1)
    return found


# Two ways from features to labels: spreading along the neighbour graph (uses the unlabeled
# images' structure) and a logistic regression on the labeled images' features alone (a
# linear probe: where the classes differ in a detail that the neighbours do not share, the
# probe weighs that detail). Listed in the order a tie keeps.
LABELS_BY = ("spread", "linear")
# The probe's inverse regularisation on standardised features: not tuned (the logistic probe
# of the pretrained-features measurement).
LINEAR_C = 0.1


def linear_labels(values: torch.Tensor, fit_rows: np.ndarray, fit_labels: np.ndarray,
                  num_classes: int, rows: np.ndarray | None = None) -> torch.Tensor:
    """Class probabilities for the rows `rows` of `values` (all by default) from a logistic
    regression fitted on the rows `fit_rows` with `fit_labels` (features standardised over
    all rows; a class with no row to fit on gets probability 0)."""
    x = standardised(values).numpy()
    model = LogisticRegression(C=LINEAR_C, max_iter=3000).fit(x[fit_rows], fit_labels)
    wanted = x if rows is None else x[rows]
    found = np.zeros((len(wanted), num_classes))
    found[:, model.classes_] = model.predict_proba(wanted)
    return torch.from_numpy(found).float()


def held_out_linear(values: torch.Tensor, labels: np.ndarray, num_classes: int, folds: int = 5,
                    seed: int = 0, allowed: np.ndarray | None = None) -> HeldOut:
    """`held_out_labels` for `linear_labels`: the same folds of the labeled images (the first
    len(labels) rows of `values`, the unlabeled ones after them), each labeled by a probe
    fitted on the others (the features standardised over every row, as when all the labels
    are used)."""
    fold_of = folds_per_class(labels, num_classes, folds, seed, allowed)
    parts = []
    for f in range(fold_of.max() + 1):
        fit, held = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        if len(np.unique(labels[fit])) < 2:  # nothing to tell apart: the uniform guess
            parts.append((held, torch.full((len(held), num_classes), 1 / num_classes)))
            continue
        parts.append((held, linear_labels(values, fit, labels[fit], num_classes, rows=held)))
    return _held_out(parts, num_classes)


def choose(estimates: dict[str, dict], forced: str = "auto", forced_by: str = "auto"
           ) -> tuple[str, str, str]:
    """The candidate features and the way to labels (`LABELS_BY`) to use, and why: what the user
    named (`forced`: label.features, `forced_by`: label.labels_by), the rest chosen by the
    highest held-out estimate (the first listed on a tie: spreading, the self-supervised
    features)."""
    pairs = [(name, how) for how in LABELS_BY for name in estimates
             if forced in ("auto", name) and forced_by in ("auto", how)]
    named = " and ".join(f"label.{key}" for key, value in
                         (("features", forced), ("labels_by", forced_by)) if value != "auto")
    if len(pairs) == 1:
        return *pairs[0], f"named by {named}"
    scored = {pair: estimates[pair[0]][pair[1]]["estimated_accuracy"] for pair in pairs
              if estimates[pair[0]][pair[1]].get("estimated_accuracy") is not None}
    if not scored:
        return "self-supervised", forced_by if forced_by != "auto" else "spread", (
            "no held-out estimate to choose by (no class has two labels)")
    best = max(scored, key=lambda k: (scored[k], -list(scored).index(k)))
    others = ", ".join(f"{k[0]} {k[1]} {v:.0%}" for k, v in scored.items() if k != best)
    return *best, (f"the best held-out estimate, {scored[best]:.0%} (against {others}; "
                   f"{estimates[best[0]][best[1]]['estimate_held_out']} labeled images held out "
                   "in turn)" + (f"; {named} as named" if named else ""))


def chosen_features(data: Dataset, own: torch.Tensor, pretrained_values: torch.Tensor | None,
                    forced: str = "auto", forced_by: str = "auto"
                    ) -> tuple[sparse.csr_matrix, torch.Tensor, dict, HeldOut, torch.Tensor]:
    """The candidate features and way to labels chosen on held-out labels (`choose`): the
    neighbour graph of those features, the labels they give every training image (labeled
    images first: those keep their own), the figures of each candidate (its held-out estimate
    each way and, where the truth is known, how many of the unlabeled images its labels get
    right: logged, never used to choose), the chosen pair's `HeldOut` labels, and the chosen
    features' values."""
    labeled, n, k = np.arange(len(data.labeled)), len(data.labeled), len(data.classes)
    allowed = data.held_out_allowed()
    values = candidates(own, pretrained_values)
    graphs, estimates, held_out = {}, {}, {}
    for name, each in values.items():
        graphs[name] = neighbour_graph(each)
        held_out[name] = {
            "spread": held_out_labels(graphs[name], labeled, data.labeled.labels, k,
                                      allowed=allowed),
            "linear": held_out_linear(each, data.labeled.labels, k, allowed=allowed)}
        estimates[name] = {how: accuracy_held_out(held_out[name][how].held,
                                                  held_out[name][how].probs, data.labeled.labels)
                           for how in LABELS_BY}
    name, how, why = choose(estimates, forced, forced_by)

    def labels_of(name: str, how: str) -> torch.Tensor:
        if how == "spread":
            return first_labels(data, graphs[name])
        found = linear_labels(values[name], labeled, data.labeled.labels, k)
        found[:n] = F.one_hot(torch.as_tensor(data.labeled.labels), k).float()
        return found

    targets = labels_of(name, how)
    if data.unlabeled_truth is not None:
        for other in estimates:
            for other_how in LABELS_BY:
                guess = (targets if (other, other_how) == (name, how) else
                         labels_of(other, other_how))[n:].argmax(1).numpy()
                estimates[other][other_how]["pseudo_label_accuracy"] = float(
                    (guess == data.unlabeled_truth).mean())
    return graphs[name], targets, {"features_candidates": estimates, "features_chosen": name,
                                   "labels_by": how, "features_chosen_why": why}, \
        held_out[name][how], values[name]


def describe_choice(found: dict) -> str:
    """The log's line on the candidate features: how the labels came from which features, and
    why (every candidate's held-out estimate)."""
    return f"{STAGE}: the labels {way(found)}, {found['features_chosen_why']}"


def way(found: dict) -> str:
    """How the labels came from the features, in words: "spread over the both features"."""
    how = ("spread over" if found.get("labels_by", "spread") == "spread"
           else "read by a linear probe from")
    return f"{how} the {found['features_chosen']} features"


def first_labels(data: Dataset, links: sparse.csr_matrix) -> torch.Tensor:
    """`propagate` over every training image (labeled first, then unlabeled): the labeled
    images keep their labels, the unlabeled ones get the spread distribution."""
    known = np.concatenate([data.labeled.labels, np.full(len(data.unlabeled), -1)])
    return propagate(links, known, len(data.classes))


def fit_head(head: nn.Linear, features: torch.Tensor, targets: torch.Tensor,
             steps: int = 300) -> None:
    """Fit the classifier's linear head, in place, to soft `targets` on fixed features, so
    that fine-tuning starts from the labels the features give instead of a random head."""
    device = head.weight.device
    x, t = features.to(device), targets.to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.sum(-t * F.log_softmax(head(x), dim=1), dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def describe_estimate(found: dict, num_classes: int, subject: str = "labels from the features",
                      key: str = "estimate") -> tuple[str, bool]:
    """A sentence on a held-out estimate (`key`: "estimate" for the features' labels,
    "classifier_estimate" for the classifier) for the log and the report, and whether it is
    near chance: its 95 % interval reaches down to 1.5 x chance, so the labels may be
    guesses."""
    chance = 1 / num_classes
    accuracy = found.get("estimated_accuracy" if key == "estimate" else key)
    if accuracy is None:
        return ("no accuracy estimate: it holds labeled images out, and no class has two",
                False)
    held_out = found["estimate_held_out" if key == "estimate" else "calibration_held_out"]
    low, high = found[f"{key}_low"], found[f"{key}_high"]
    text = (f"{subject} are estimated {accuracy:.0%} right (95 % interval {low:.0%}-{high:.0%}, "
            f"{held_out} labeled images held out in turn; chance {chance:.0%})")
    near = low <= 1.5 * chance
    if near:
        text += (": NEAR CHANCE. The pseudo-labels may be guesses, whatever their confidence; "
                 "label more images, check that the classes differ in what the images show, "
                 "or train the representation longer (--label.pretrain-steps)")
    return text, near


def labels_from_features(net: torch.nn.Module, data: Dataset, device, class_prior: str,
                         pretrained_values: torch.Tensor | None = None, forced: str = "auto",
                         forced_by: str = "auto") -> tuple[dict, torch.Tensor, Features]:
    """After the representation stage: labels from the learned features (or the frozen
    `pretrained_values`, or both; spread along the neighbour graph or read by a linear probe:
    whichever the held-out labels favour, `chosen_features`); estimate how common each class is
    among the unlabeled images and re-weight their labels by the prior `class_prior` (the
    config's label.class_prior) names (`prior.chosen_prior`); fit the classifier's head to
    those labels (fine-tuning starts from them), and return their figures (accuracy held out
    from the labeled images, against known truth, the class prior as ``class_prior``), the unlabeled
    images' label distributions, and the features (labeled images first: the network's own,
    which its head reads) with the graph of the chosen ones."""
    images = np.concatenate([data.labeled.images, data.unlabeled.images])
    recalibrate_batch_norm(net.features, images, device)
    own = embed(net.features, images, device)
    links, targets, choice, _, chosen = chosen_features(data, own, pretrained_values, forced,
                                                     forced_by)
    features = Features(own, links, chosen, choice["labels_by"])
    labeled_share = prior.labeled_prior(data.labeled.labels, len(data.classes))
    # The labeled shares are the split's: labels added after it were chosen by the user (Label
    # next leans on the classes the model confuses) and say nothing about how common a class is.
    allowed = data.held_out_allowed()
    split_share = prior.labeled_prior(data.labeled.labels[allowed], len(data.classes))
    # Always estimated, shown where the user decides (log, report, review), used only where
    # label.class_prior says so (`config.CLASS_PRIORS`).
    estimate = (prior.estimate_prior(targets[len(data.labeled):], labeled_share)
                if len(data.unlabeled) else None)
    shares = prior.chosen_prior(class_prior, split_share, estimate)
    targets[len(data.labeled):] = prior.reweighted(targets[len(data.labeled):], labeled_share,
                                                   shares)
    fit_head(net.head, features.values, targets)
    found = dict(choice["features_candidates"][choice["features_chosen"]][choice["labels_by"]]
                 ) | choice
    unlabeled_probs = targets[len(data.labeled):]
    found["class_prior"] = shares.tolist()
    found["class_prior_setting"] = class_prior
    if estimate is not None:
        found["class_prior_estimate"] = estimate.tolist()
        found["class_prior_shift"] = prior.shift(estimate, split_share)
    found["labeled_prior"] = split_share.tolist()
    found["features_mean_confidence"] = unlabeled_probs.max(1).values.mean().item()
    if data.unlabeled_truth is not None:
        found |= scores(unlabeled_probs, data.unlabeled_truth, "features_pseudo_label")
    if data.test is not None:  # logged, never used to choose anything
        found |= scores(predict(net, data.test.images, device), data.test.labels,
                        "features_test")
    return found, unlabeled_probs, features


def load_representation(run_path: Path, cfg: Config, data: Dataset, device
                        ) -> nn.Module | None:
    """The feature extractor the representation stage of the run in `run_path` learned (for an
    EfficientNet-Lite classifier in semi mode: ImageNet's, which stood for it), its BatchNorm
    measured on the training images, in eval mode; None where the run learned none
    (labels-only, or no representation steps)."""
    lab = cfg.label
    path = Layout(run_path).checkpoint(STAGE)
    lite = (lab.backbone or lab.net) in nets.LITE and lab.mode == "semi"
    if not path.exists() and not lite:
        return None
    net = nets.build(**nets.arguments(lab.backbone or lab.net, data.shape, len(data.classes),
                                      lab.width, lab.net_side))
    if lite:
        nets.load_lite_weights(net, lab.weights)
    else:
        encoder = nn.Sequential(net.features, projector(net.head.in_features))
        with checkpoint.reading(state := checkpoint.load(path), "representation"):
            encoder.load_state_dict(state["model"])
    net.features.to(device)
    recalibrate_batch_norm(net.features, np.concatenate([data.labeled.images,
                                                         data.unlabeled.images]), device)
    return net.features.eval()


def labels_with_generated(features: torch.Tensor, generated: torch.Tensor,
                          data: Dataset, generated_labels: np.ndarray) -> torch.Tensor:
    """The unlabeled images' label distributions, spread from the true labels and from
    generated images placed in the same feature space as labeled points (Dual Pseudo
    Training's place for them: they stand where the real labeled images are too few).
    `features`: every training image's (labeled first); `generated`: the generated images'."""
    links = neighbour_graph(torch.cat([features, generated]))
    known = np.concatenate([data.labeled.labels, np.full(len(data.unlabeled), -1),
                            generated_labels])
    spread = propagate(links, known, len(data.classes))
    return spread[len(data.labeled.labels):len(features)]
