"""How common each class is among the unlabeled images, estimated instead of assumed.

A user labels a few images of every class, so the labeled images say nothing about how common
each class is; a real collection is rarely balanced (most solar cells have no defect). A
classifier whose labels and distribution alignment assume equal classes pushes the common
class's images into the rare ones. Saerens, Latinne and Decaestecker (2002) estimate the new
prior by expectation-maximisation on a classifier's outputs: re-weight every image's class
probabilities by (new prior / training prior), take the mean as the next prior, repeat. The
re-weighted probabilities are the labels under that prior."""

from __future__ import annotations

import torch

from ..config import CLASS_PRIORS

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


def shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation distance between two class distributions (0 to 1)."""
    return 0.5 * float((a - b).abs().sum())


def predicted_shares(probs: torch.Tensor) -> torch.Tensor:
    """How often each class is the likeliest among `probs` (N x K): the shares the labels
    themselves give, before EM re-weights them."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
    return counts / counts.sum().clamp_min(1)


def chosen_prior(setting: str, labeled: torch.Tensor, estimate: torch.Tensor | None
                 ) -> torch.Tensor:
    """The class prior label.class_prior `setting` names (`config.CLASS_PRIORS`: the labeled
    shares unless the user asks, since a few labels per class cannot tell a real difference in
    how common the classes are from the features' leanings); `estimate` must be there for
    "estimate" (None only where there is no unlabeled image: then the labeled shares)."""
    if setting == "estimate" and estimate is not None:
        return estimate
    if setting == "uniform":
        return torch.full_like(labeled, 1 / len(labeled))
    return labeled


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


def largest_moves(estimate: torch.Tensor, labeled: torch.Tensor, classes: list[str],
                  top: int = 5) -> list[tuple[str, float, float]]:
    """(class, labeled share, estimated share) of the `top` classes the estimate moves most."""
    order = (estimate - labeled).abs().argsort(descending=True)[:top].tolist()
    return [(classes[c], float(labeled[c]), float(estimate[c])) for c in order]


def describe(estimate: torch.Tensor, labeled: torch.Tensor, classes: list[str], setting: str
             ) -> str:
    """One log line: how far the estimate lies from the labeled shares, the classes it would
    move most, and whether it is used (label.class_prior `setting`)."""
    moves = ", ".join(f"{name} {before:.1%} -> {after:.1%}"
                      for name, before, after in largest_moves(estimate, labeled, classes))
    head = (f"class shares estimated among the unlabeled images (EM on the features' labels): "
            f"{shift(estimate, labeled):.0%} (total variation) from the labeled shares; most "
            f"moved: {moves}")
    if setting == "estimate":
        return head + "; used, as label.class_prior estimate asks"
    return (head + f"; not used (label.class_prior {setting}: {CLASS_PRIORS[setting]}): a few "
            "labels per class cannot tell a real difference from the features' leanings; "
            "where you know the classes are unequal, --label.class-prior estimate uses it")
