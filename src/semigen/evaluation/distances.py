"""Distances that judge generated images, below every judge: improved precision and recall,
density and coverage in a feature space, and the nearest training image in pixel space. Pure
functions of tensors."""

from __future__ import annotations

import torch


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage
    (Naeem et al. 2020) of `fake` features against `real` ones. Each real point's ball reaches
    its k-th nearest real neighbour; precision: the share of generated points inside some real
    ball (realism); recall: the share of real points inside some generated ball, the same rule
    the other way (diversity: a generator that draws one image per class has recall near 0);
    density: real balls per generated point / k; coverage: the share of real balls holding a
    generated point."""
    real, fake = real.float(), fake.float()
    if len(real) <= k or len(fake) <= k:
        return {}
    real_radius = kth_neighbour_distance(real, k)
    fake_radius = kth_neighbour_distance(fake, k)
    inside = torch.cat([torch.cdist(fake[i:i + 1000], real) <= real_radius[None]
                        for i in range(0, len(fake), 1000)])  # fake x real
    reached = torch.cat([torch.cdist(real[i:i + 1000], fake) <= fake_radius[None]
                         for i in range(0, len(real), 1000)])  # real x fake
    return {"precision": inside.any(1).float().mean().item(),
            "recall": reached.any(1).float().mean().item(),
            "density": (inside.sum(1).float().mean() / k).item(),
            "coverage": inside.any(0).float().mean().item(), "k": k}


def beside_real(real: torch.Tensor, fake: torch.Tensor, k: int = 3, seed: int = 0) -> dict:
    """`precision_recall` of generated features against real ones of one class, beside the same
    figures of a second, disjoint set of real features of that class: what real images reach of
    each other is the scale a generator's recall is read on. Both sides hold the same N (recall
    grows with N) from the same reference set, with the same k; ``*_ratio`` is generated / real
    (1: as varied as new real images; near 0: one image drawn over and over). Empty when there
    are too few real images for two sets of more than k."""
    n = min(len(fake), len(real) // 2)
    if n <= k:
        return {}
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    reference, second = real[order[:n]], real[order[n:2 * n]]
    generated, real_beside = precision_recall(reference, fake[:n], k), \
        precision_recall(reference, second, k)
    found = {"n": n, "k": k}
    for name in ("precision", "recall", "density", "coverage"):
        found[name], found[f"real_{name}"] = generated[name], real_beside[name]
        found[f"{name}_ratio"] = generated[name] / max(real_beside[name], 1e-8)
    return found


def kth_neighbour_distance(points: torch.Tensor, k: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest other point."""
    return torch.cat([torch.cdist(points[i:i + 1000], points).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(points), 1000)])


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Pixel-space L2 distance from each uint8 query image to its nearest reference image."""
    refs = references.flatten(1).float() / 255
    found = []
    for i in range(0, len(queries), 250):
        q = queries[i:i + 250].flatten(1).float() / 255
        found.append(torch.cat([torch.cdist(q, refs[j:j + 20000]).amin(1, keepdim=True)
                                for j in range(0, len(refs), 20000)], 1).amin(1))
    return torch.cat(found)
