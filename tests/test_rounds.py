"""The joint round's parts: what generated images teach (CAS), where they enter (the feature
step), which sets a round chooses among, and variations of real images (SDEdit)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semigen.config import ConfigError, make_config
from semigen.evaluation.teaching import classification_accuracy_score, contradicted_classes, ranking
from semigen.joint.fit import ROUNDS_PAY_UP_TO, planned_rounds
from semigen.joint.images import candidates
from semigen.labeling.represent import labels_with_generated


def clusters(n_per_class: int, centres: list, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.normal(c, 0.3, (n_per_class, 2)) for c in centres])
    return torch.tensor(points, dtype=torch.float32), np.repeat(np.arange(len(centres)),
                                                                n_per_class)


CENTRES = [(1, 0), (0, 1), (-1, 0)]


def test_cas_is_high_for_images_that_teach_and_at_chance_for_mislabeled_ones():
    real, real_labels = clusters(30, CENTRES, seed=0)
    generated, generated_labels = clusters(20, CENTRES, seed=1)
    right = classification_accuracy_score(generated, generated_labels, real, real_labels)
    assert right["cas"] > 0.9
    wrong = classification_accuracy_score(generated, (generated_labels + 1) % 3, real,
                                          real_labels)  # every class drawn as the next one
    assert wrong["cas"] < 0.1 and wrong["cas_nll"] > right["cas_nll"]
    assert ranking(right) > ranking(wrong)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 5))
def test_cas_is_a_share_of_the_real_images(seed, n_real):
    """Whatever the images, CAS is k / n for the n real images, and its NLL is not negative."""
    real, real_labels = clusters(n_real, CENTRES, seed)
    generated, generated_labels = clusters(4, CENTRES, seed + 1)
    found = classification_accuracy_score(generated, generated_labels, real, real_labels)
    assert round(found["cas"] * len(real_labels), 6) % 1 == 0 and found["cas_nll"] >= 0


def test_cas_needs_two_generated_classes():
    real, real_labels = clusters(5, CENTRES, seed=0)
    generated, _ = clusters(5, CENTRES[:1], seed=1)
    found = classification_accuracy_score(generated, np.zeros(5, int), real, real_labels)
    assert found == {"cas": None, "cas_nll": None}
    assert ranking(found) < ranking({"cas": 0.0, "cas_nll": 9.0})


def _points_as_data(labeled_classes: np.ndarray, unlabeled: int):
    """What the feature step reads of a data set: the labels, the unlabeled count, classes."""
    return SimpleNamespace(labeled=SimpleNamespace(labels=labeled_classes),
                           unlabeled=np.zeros(unlabeled), classes=["a", "b"])


def test_the_feature_step_spreads_from_generated_points_where_labels_are_missing():
    """Two clusters of unlabeled points, one true label in the first: spread alone, the second
    cluster has no label of its own; generated points of class b placed in it give it b."""
    first, _ = clusters(15, [(5, 0)], seed=0)  # the graph links by cosine: directions
    second, _ = clusters(15, [(0, 5)], seed=1)
    labeled, unlabeled = first[:1], torch.cat([first[1:], second])
    data = _points_as_data(np.array([0]), len(unlabeled))
    features = torch.cat([labeled, unlabeled])
    generated, _ = clusters(5, [(0, 5)], seed=2)
    spread = labels_with_generated(features, generated, data, np.ones(5, int))
    guess = spread.argmax(1).numpy()
    assert (guess[:14] == 0).all() and (guess[14:] == 1).all()
    # the generated points are labeled points, not images to be labeled: one row per unlabeled
    assert spread.shape == (len(unlabeled), 2)


def test_a_round_chooses_among_guidances_only_where_the_backend_has_them():
    gan = make_config(data="digits", preset="tiny")
    assert candidates(gan, "gan") == [("sample", None)]
    diffusion = make_config(data="digits", preset="tiny", generate__backend="diffusion")
    assert candidates(diffusion, "diffusion") == [("sample", g) for g in (0.0, 0.4, 1.0, 2.0)]
    fixed = make_config(base=diffusion, fit__choose_images=False)
    assert candidates(fixed, "diffusion") == [("sample", None)]
    varied = make_config(base=diffusion, fit__variation_strength=0.5)
    assert candidates(varied, "diffusion") == [("vary", 0.5)]
    with pytest.raises(ConfigError, match="variation_strength needs generate.backend diffusion"):
        make_config(data="digits", preset="tiny", fit__variation_strength=0.5)
    with pytest.raises(ConfigError, match="fit.synthetic_weight must be >= 0"):
        make_config(data="digits", preset="tiny", fit__synthetic_weight=-1)


@pytest.fixture(scope="module")
def diffusion_model():
    from semigen.generation.diffusion import Diffusion, unet_config
    torch.manual_seed(0)
    return Diffusion(3, unet_config(3, (8, 8, 1), 8), sample_steps=10).eval()


def test_a_variation_keeps_its_start_at_low_strength_and_leaves_it_at_high(diffusion_model):
    start = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).repeat(2, 1, 1, 1)
    labels = torch.tensor([0, 1])
    near = diffusion_model.sample(labels, [1, 2], start=start, strength=0.1)
    far = diffusion_model.sample(labels, [1, 2], start=start, strength=0.9)
    assert (near - start).abs().mean() < (far - start).abs().mean()
    # image i from its own seed, whatever the batch
    alone = diffusion_model.sample(labels[1:], [2], start=start[1:], strength=0.5)
    together = diffusion_model.sample(labels, [1, 2], start=start, strength=0.5)
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=0)


def test_variations_per_class_take_each_class_labeled_images_in_turn(diffusion_model):
    from semigen.generation import variations_per_class
    images = torch.stack([torch.full((1, 8, 8), v, dtype=torch.uint8) for v in (0, 255, 128)])
    labels = torch.tensor([0, 0, 2])  # class 1 has no labeled image
    made, classes = variations_per_class(diffusion_model, images, labels, 3, 3, 0.05, seed=0)
    assert classes.tolist() == [0, 0, 0, 2, 2, 2] and made.dtype == torch.uint8
    means = made.float().mean(dim=(1, 2, 3))
    assert means[0] < 60 and means[1] > 200 and means[2] < 60  # 0, 255, 0: in turn
    assert ((means[3:] - 128).abs() < 40).all()


def test_fit_runs_rounds_by_default_only_where_labels_are_few_and_says_so_elsewhere():
    auto = make_config(data="digits", fit__rounds=-1)
    assert planned_rounds(auto, 1) == (1, None)
    assert planned_rounds(auto, ROUNDS_PAY_UP_TO) == (1, None)
    assert planned_rounds(auto, ROUNDS_PAY_UP_TO + 1)[0] == 0
    rounds, why = planned_rounds(auto, 10)
    assert rounds == 0 and "10 labeled images" in why and "--rounds N" in why
    asked = make_config(data="digits", fit__rounds=2)
    rounds, why = planned_rounds(asked, 10)
    assert rounds == 2 and "may not pay" in why
    assert planned_rounds(asked, 1) == (2, None)


def test_classes_the_labeled_images_contradict_are_found_both_ways():
    """A generator that learned classes 1 and 2 swapped: the labeled images of each are taken
    for the other, so neither class's images teach; class 0's do."""
    real, real_labels = clusters(3, CENTRES, seed=0)
    generated, generated_labels = clusters(20, [CENTRES[0], CENTRES[2], CENTRES[1]], seed=1)
    assert contradicted_classes(generated, generated_labels, real, real_labels) == [1, 2]
    honest, honest_labels = clusters(20, CENTRES, seed=2)
    assert contradicted_classes(honest, honest_labels, real, real_labels) == []
    # one mistake among three labeled images of a class leaves every class
    one_wrong = real_labels.copy()
    one_wrong[0] = 1
    assert contradicted_classes(honest, honest_labels, real, one_wrong) == []
