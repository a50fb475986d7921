"""(3) A joint round's feature step: the generated images join the true labeled ones as
labeled points among the representation's features, and the unlabeled images' labels (the
classifier's second teacher) are spread again from both."""

from __future__ import annotations

import numpy as np
import torch

from ..labeling import nets, pretrained, represent
from ..labeling.predict import scores
from ..stage import Stage


def feature_step(stage: Stage, synthetic: tuple) -> torch.Tensor | None:
    """A joint round's feature step: the unlabeled images' labels spread again over the
    representation's features, from the true labels and the round's generated images as
    labeled points; None (the previous round's labels stay) where the run has no
    representation."""
    rt, run_dir, data = stage.rt, stage.records, stage.run.data
    features = represent.load_representation(stage.run.path, stage.cfg, data, rt.device)
    if features is None:
        return None
    real = np.concatenate([data.labeled.images, data.unlabeled.images])
    own = nets.embed(features, np.concatenate([real, synthetic[0]]), rt.device)
    # the features the label stage chose to spread over (`represent.chosen_features`)
    chosen = stage.run.metrics().get("represent", {}).get("features_chosen", "self-supervised")
    others = pretrained_with_generated(stage, synthetic[0]) if chosen != "self-supervised" \
        else None
    values = represent.candidates(own, others)[chosen]
    spread = represent.labels_with_generated(values[:len(real)], values[len(real):], data,
                                             synthetic[1])
    found = {"feature_step_generated": len(synthetic[1]),
             "features_mean_confidence": spread.max(1).values.mean().item()}
    if data.unlabeled_truth is not None:  # logged, never used to choose anything
        found |= scores(spread, data.unlabeled_truth, "features_pseudo_label")
    run_dir.stats(stage.name, 0, event="feature_step", **found)
    run_dir.info(f"{stage.name}: the features' labels spread again over the {chosen} features, "
                 f"with {len(synthetic[1])} generated images as labeled points")
    return spread


def pretrained_with_generated(stage: Stage, generated: np.ndarray) -> torch.Tensor:
    """The frozen pretrained features of every training image (from the cache the label stage
    filled), then of the `generated` images, read at the same size."""
    lab, rt = stage.cfg.label, stage.rt
    name = pretrained.resolved(lab.pretrained)
    real, _ = pretrained.cached_features(stage.run.data, stage.cfg.data, name,
                                         lab.pretrained_weights, lab.pretrained_size, rt.device)
    side = pretrained.input_side(stage.run.data, lab.pretrained_size)
    made = pretrained.features(pretrained.feature_network(name, lab.pretrained_weights),
                               generated, side, rt.device)
    return torch.cat([real, made])
