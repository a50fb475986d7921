"""How common each class is among the unlabeled images, estimated instead of assumed.

A user labels a few images of every class, so the labeled images say nothing about how common
each class is; a real collection is rarely balanced (most solar cells have no defect). A
classifier whose labels and distribution alignment assume equal classes pushes the common
class's images into the rare ones. Saerens, Latinne and Decaestecker (2002) estimate the new
prior by expectation-maximisation on a classifier's outputs: re-weight every image's class
probabilities by (new prior / training prior), take the mean as the next prior, repeat. The
re-weighted probabilities are the labels under that prior."""

from __future__ import annotations

import numpy as np
import torch

# Alignment and thresholds are ratios to the prior: a class estimated at nothing would divide
# by zero, and a handful of labels cannot show that a class is rarer than this.
SMALLEST_SHARE = 0.005
# EM's estimate is a maximum-likelihood one, and where the probabilities say little (a few
# images, or features near chance) the likelihood is flat and its maximum sits at a corner
# (one class 99.5 %, measured on 12 images). So the estimate is a posterior mode: this many
# images per class at the training prior are counted with the real ones (a Dirichlet prior),
# which a pool of thousands outweighs and a dozen images do not.
PRIOR_IMAGES_PER_CLASS = 10


def reweighted(probs: torch.Tensor, train_prior: torch.Tensor, prior: torch.Tensor
               ) -> torch.Tensor:
    """Class probabilities learned under `train_prior` as they are under `prior` (Bayes)."""
    scaled = probs * (prior / train_prior.clamp_min(1e-12))
    return scaled / scaled.sum(dim=1, keepdim=True).clamp_min(1e-12)


def estimate_prior(probs: torch.Tensor, train_prior: torch.Tensor, iterations: int = 1000,
                   tolerance: float = 1e-7) -> torch.Tensor:
    """The class prior of the images behind `probs` (N x K, learned under `train_prior`) by
    EM (Saerens et al. 2002), as a posterior mode (`PRIOR_IMAGES_PER_CLASS`), no class below
    SMALLEST_SHARE."""
    probs, train_prior = probs.double(), train_prior.double()
    prior = train_prior.clone()
    pseudo = PRIOR_IMAGES_PER_CLASS * len(train_prior)
    for _ in range(iterations):
        new = (reweighted(probs, train_prior, prior).sum(0) + pseudo * train_prior) \
            / (len(probs) + pseudo)
        done = (new - prior).abs().max() < tolerance
        prior = new
        if done:
            break
    prior = prior.clamp_min(SMALLEST_SHARE)
    return (prior / prior.sum()).float()


# The evidence (`shift_evidence`) is folds of the labeled images labeling each other and the
# pool: with few labels a class, each fold's labels come from fewer still, and their own
# leanings are large. On pools made balanced from the training pools of digits and
# Fashion-MNIST (split seeds 0-2), the rule used the estimate on 1 of 3 at 3 labels per class
# on each, on none at 4, 5 and 10 (`benchmarks/prior_splits.py`, docs/defaults.md). Below this
# many labeled images in the fewest-labeled class, equal shares.
LABELS_TO_ESTIMATE = 4


# However clear the evidence, a gap smaller than this (total variation) is not taken for a
# difference: on balanced pools the gap passed its bootstrap bar by chance up to 0.106
# (Fashion-MNIST, 10 labels per class, both features), while on unequal ones it was 0.161 or
# more (ELPV's cells; 0.166 on pools made 10:1). Between the two; docs/defaults.md.
SHIFT_TO_USE = 0.15


def shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation distance between two class distributions (0 to 1)."""
    return 0.5 * float((a - b).abs().sum())


def predicted_shares(probs: torch.Tensor) -> torch.Tensor:
    """How often each class is the likeliest among `probs` (N x K): the shares the labels
    themselves give, before EM re-weights them."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
    return counts / counts.sum().clamp_min(1)


# How many resamplings of the held-out labeled images measure how far chance moves the shares
# the labels should give, and which quantile of that is the bar (`shift_evidence`).
DRAWS = 2000
LEVEL = 0.95


def confusion_rows(held_probs: torch.Tensor, held_labels: np.ndarray, k: int) -> np.ndarray:
    """k x k: row c, how often each class is the likeliest among the held-out images of class
    c (a row of zeros for a class with none)."""
    predicted = held_probs.argmax(1).numpy()
    return np.stack([np.bincount(predicted[held_labels == c], minlength=k)
                     / max(1, int((held_labels == c).sum())) for c in range(k)])


def shift_evidence(pool_shares: torch.Tensor | None, held_probs: torch.Tensor,
                   held_labels: np.ndarray, shares: torch.Tensor, seed: int = 0
                   ) -> tuple[float, float] | None:
    """Whether the labels say the unlabeled images' classes are less equal than `shares`.
    Like with like: the labels that folds of the labeled images give, each fold's labels from
    the others (`represent.HeldOut`), on the pool (`pool_shares`: how often each class is the
    likeliest there) and on the fold's own held-out images, whose classes are known. Were the
    pool's classes as common as `shares`, its shares would be those of the held-out images'
    predicted classes per true class (rows of a confusion matrix) weighted by `shares`. Returns
    how far the pool's lie from that (total variation) and the bar that distance must pass:
    the LEVEL quantile of how far it moves when each class's held-out images are resampled (a
    bootstrap: a few held-out images per class make a wide bar, many a narrow one). None where
    a class has no held-out image."""
    k = len(shares)
    counts = np.bincount(held_labels, minlength=k)
    if pool_shares is None or len(held_labels) == 0 or (counts == 0).any():
        return None
    rows = confusion_rows(held_probs, held_labels, k)
    expected = shares.double().numpy() @ rows
    rng = np.random.default_rng(seed)
    resampled = sum(shares[c].item() * rng.multinomial(counts[c], rows[c], size=DRAWS)
                    / counts[c] for c in range(k))
    moved = 0.5 * np.abs(resampled - expected).sum(1)
    found = pool_shares.double().numpy()
    return 0.5 * float(np.abs(found - expected).sum()), float(np.quantile(moved, LEVEL))


def chosen_prior(estimate: torch.Tensor, labeled: torch.Tensor,
                 evidence: tuple[float, float] | None, always: bool = False) -> torch.Tensor:
    """The estimate where the labels on the pool say the classes are less equal than the
    labeled shares (`shift_evidence`: the gap past its bootstrap bar and past SHIFT_TO_USE),
    else the labeled shares. EM alone is no evidence: it amplifies a classifier's leanings (on
    a held-back set of 10 equal classes at 5 labels each it put one at 3.8 %, another at
    18.3 %), and a few labels per class make those leanings large. `always`: the estimate,
    whatever the evidence (label.class_prior estimate-always: the user knows)."""
    if always:
        return estimate
    if evidence is None:
        return labeled
    distance, bar = evidence
    return estimate if distance > max(bar, SHIFT_TO_USE) else labeled


def labeled_prior(labels, num_classes: int) -> torch.Tensor:
    """The labeled images' class shares: the prior a classifier trained on them learned."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).double()
    return (counts / counts.sum()).float()


# Mean confidence this far above the accuracy is said plainly (log and report).
OVERCONFIDENT_BY = 0.1


def overconfidence(metrics: dict) -> str | None:
    """A plain sentence where the pseudo-labels' mean confidence is far above their accuracy:
    against known truth where there is some, else the classifier's held-out estimate (whose
    labeled images are as balanced as the user labeled them, not as the pool is)."""
    confidence = metrics.get("mean_confidence")
    for key, how in (("pseudo_label_accuracy", "against the known truth"),
                     ("classifier_estimate", "estimated on held-out labeled images"),
                     ("estimated_accuracy", "the features' labels, estimated on held-out "
                                            "labeled images")):
        accuracy = metrics.get(key)
        if confidence is not None and accuracy is not None:
            if confidence - accuracy < OVERCONFIDENT_BY:
                return None
            return (f"the pseudo-labels' mean confidence ({confidence:.0%}) is far above their "
                    f"accuracy ({accuracy:.0%}, {how}): read the confidences as optimistic, and "
                    "check the low-confidence images and the classes the model confuses")
    return None


def describe(prior: torch.Tensor, labeled: torch.Tensor, classes: list[str]) -> str:
    """One log line: the estimated share of each class, the labeled share beside it."""
    shares = ", ".join(f"{c} {p:.1%} ({q:.0%})" for c, p, q in
                       zip(classes, prior.tolist(), labeled.tolist(), strict=True))
    return f"class shares estimated among the unlabeled images (labeled shares): {shares}"


def describe_use(evidence: tuple[float, float] | None, used: bool, always: bool = False
                 ) -> str:
    """The end of `describe`'s line: whether the estimate is used, and the evidence that
    decided it (or that the user asked for it: label.class_prior estimate-always)."""
    if always:
        return "; used, as label.class_prior estimate-always asks"
    if evidence is None:
        return "; no held-out labeled image in some class to check it by: the labeled shares " \
            "are kept"
    distance, bar = evidence
    why = (f"the pool's shares under the folds' labels lie {distance:.0%} (total variation) "
           "from those the folds' held-out labeled images predict for the labeled shares; "
           f"chance moves that up to {bar:.0%} (95 %), and it must also reach "
           f"{SHIFT_TO_USE:.0%}")
    return f"; {why}: " + ("used" if used else "the labeled shares are kept")
