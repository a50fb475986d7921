"""Semi-supervised losses and masks as small pure functions of tensors.

FixMatch: the weak view's prediction, where confident enough, is the target for the strong view.
FreeMatch's self-adaptive thresholds make "confident enough" a per-class level that follows the
model (low while it is unsure, rising as it learns), and distribution alignment (ReMixMatch)
rescales the weak predictions so that, on average, they match the class prior."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def consistency_loss(logits_strong: torch.Tensor, pseudo_labels: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the strong view against the pseudo-labels, where the mask is 1; averaged
    over the whole batch (as FixMatch does), so few confident samples make a small loss."""
    per_sample = F.cross_entropy(logits_strong, pseudo_labels, reduction="none")
    return (per_sample * mask).mean()


def align_distribution(probs: torch.Tensor, model_prior: torch.Tensor,
                       target_prior: torch.Tensor) -> torch.Tensor:
    """Scale each row by target/model prior and renormalise (ReMixMatch's distribution
    alignment): a model that over-predicts a class has that class damped."""
    aligned = probs * (target_prior / model_prior.clamp_min(1e-6))
    return aligned / aligned.sum(dim=1, keepdim=True)


def ema(old: torch.Tensor, new: torch.Tensor, momentum: float) -> torch.Tensor:
    return old * momentum + new * (1 - momentum)


def adaptive_thresholds(global_level: torch.Tensor, class_levels: torch.Tensor,
                        class_prior: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive thresholds: the global confidence level, scaled per class by
    that class's mean predicted probability relative to the largest one; both measured
    against the class prior, so that a class that is rare among the images (predicted as
    rarely as it occurs) keeps the full threshold instead of a low one that lets the common
    class's images in. With equal classes this is FreeMatch's own rule."""
    learned = class_levels / class_prior.clamp_min(1e-6)
    return global_level * learned / learned.max()


def pseudo_label_mask(probs: torch.Tensor, thresholds: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard pseudo-labels, 0/1 float mask): a sample counts where its top probability reaches
    the threshold of its predicted class. `thresholds` is a scalar or one per class."""
    confidence, labels = probs.max(dim=1)
    level = thresholds.expand(probs.shape[1])[labels] if thresholds.dim() else thresholds
    return labels, (confidence >= level).float()


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15
                               ) -> float:
    from torchmetrics.functional.classification import multiclass_calibration_error
    return multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=bins,
                                        norm="l1").item()


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2,
                     decoupled: bool = False) -> torch.Tensor:
    """SimCLR's NT-Xent: row i of `z1` and row i of `z2` embed two views of one image; each
    embedding must pick its partner, by cosine similarity / temperature, out of the other
    2N - 1 embeddings of the batch (the views of the other images are its negatives).
    `decoupled`: DCL (Yeh et al. 2022), the partner left out of the denominator, so that a
    pair already close stops damping the push away from the negatives (small batches learn
    faster)."""
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    similarity = (z @ z.T / temperature).masked_fill(self_pairs, float("-inf"))
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    if not decoupled:
        return F.cross_entropy(similarity, partners)
    positive = similarity[torch.arange(2 * n, device=z.device), partners]
    negatives = similarity.masked_fill(self_pairs.roll(n, dims=1), float("-inf"))
    return (torch.logsumexp(negatives, dim=1) - positive).mean()
