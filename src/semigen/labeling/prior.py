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


# EM reads the class shares off the features' labels, and with one labeled image in a class
# those labels cannot be checked (nothing can be held out) and are often far off: on
# Fashion-MNIST at 1 label per class, split seed 1, the estimate put Shirt at 35 % and three
# classes at 0.5 %, and the classifier aligned to it was 38.6 % right on the test images against
# 50.6 % with equal shares (split seed 0: 58.3 against 72.1 %; BENCHMARKS.md, "Side by side with
# the peers"). Below this many labeled images in the fewest-labeled class, equal shares.
LABELS_TO_ESTIMATE = 2


# An estimate this close to the labeled shares (total variation) is kept out: EM on the labels
# of a few features moves that far on balanced data by noise alone (digits: 0.06, and its
# labels 1.5 points worse), while the unequal collections measured lay 0.24 or more away.
SHIFT_TO_USE = 0.1


def shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation distance between two class distributions (0 to 1)."""
    return 0.5 * float((a - b).abs().sum())


def predicted_shares(probs: torch.Tensor) -> torch.Tensor:
    """How often each class is the likeliest among `probs` (N x K): the shares the labels
    themselves give, before EM re-weights them."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
    return counts / counts.sum().clamp_min(1)


def chosen_prior(estimate: torch.Tensor, labeled: torch.Tensor,
                 predicted: torch.Tensor | None = None) -> torch.Tensor:
    """The estimate where it lies SHIFT_TO_USE or more (total variation) from the labeled
    shares and so do the `predicted_shares` it was read from, else the labeled shares. EM
    amplifies a classifier's leanings: on the demo's balanced digits the features' labels lay
    3 % from equal shares and EM's estimate 11 % (digit 3 at 16.7 %), and aiming at it cost
    1.6 points; on the unequal collections measured the labels themselves lay 12-23 % away."""
    far = shift(estimate, labeled) >= SHIFT_TO_USE
    if predicted is not None:
        far = far and shift(predicted, labeled) >= SHIFT_TO_USE
    return estimate if far else labeled


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


def describe_use(moved: float, predicted: float, used: bool) -> str:
    """The end of `describe`'s line: whether the estimate is used, and the shifts that
    decided it."""
    why = (f"{moved:.0%} from the labeled shares (total variation), the labels' own shares "
           f"{predicted:.0%}; both must reach {SHIFT_TO_USE:.0%}")
    return f"; {why}: " + ("used" if used else "the labeled shares are kept")
