"""The class prior of the unlabeled images: estimated by EM, used by alignment and thresholds."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semigen.labeling import losses, prior
from semigen.run import Layout


def posteriors_under_uniform(labels: np.ndarray, num_classes: int, rng) -> torch.Tensor:
    """Class probabilities of a classifier trained on equal classes: one-dimensional Gaussians
    one unit apart, Bayes' rule with the uniform prior (so calibrated, but for the prior)."""
    x = labels + rng.normal(0, 0.5, len(labels))
    log_likelihood = -0.5 * ((x[:, None] - np.arange(num_classes)[None]) / 0.5) ** 2
    return torch.from_numpy(log_likelihood).softmax(1).float()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.floats(0.02, 1.0), min_size=2, max_size=6), st.integers(0, 2**16))
def test_em_recovers_the_prior_that_drew_the_images(weights, seed):
    rng = np.random.default_rng(seed)
    truth = np.array(weights) / sum(weights)
    labels = rng.choice(len(truth), 20_000, p=truth)
    probs = posteriors_under_uniform(labels, len(truth), rng)
    uniform = torch.full((len(truth),), 1 / len(truth))
    found = prior.estimate_prior(probs, uniform)
    drawn = np.bincount(labels, minlength=len(truth)) / len(labels)
    assert np.abs(found.numpy() - drawn).max() < 0.03
    # the naive estimate (the mean of the probabilities) is pulled towards uniform
    naive = np.abs(probs.mean(0).numpy() - drawn).sum()
    assert np.abs(found.numpy() - drawn).sum() <= naive + 0.02
    assert abs(found.sum().item() - 1) < 1e-5


def test_reweighting_to_the_same_prior_changes_nothing_and_a_rare_class_loses_mass():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    uniform = torch.tensor([0.5, 0.5])
    assert torch.allclose(prior.reweighted(probs, uniform, uniform), probs)
    skewed = prior.reweighted(probs, uniform, torch.tensor([0.9, 0.1]))
    assert torch.allclose(skewed[0], torch.tensor([0.9, 0.1]))
    assert torch.allclose(skewed.sum(1), torch.ones(2))


def test_a_class_estimated_at_nothing_keeps_a_floor():
    probs = torch.tensor([[1.0, 0.0]] * 100)
    found = prior.estimate_prior(probs, torch.tensor([0.5, 0.5]))
    assert found[1] >= prior.SMALLEST_SHARE * 0.99 and abs(found.sum() - 1) < 1e-6


def test_thresholds_measure_each_class_against_its_prior():
    glob = torch.tensor(0.9)
    equal = torch.tensor([0.25, 0.25, 0.25, 0.25])
    levels = torch.tensor([0.4, 0.3, 0.2, 0.1])
    # with equal classes: FreeMatch's rule, the rarest predicted class gets a quarter
    assert torch.allclose(losses.adaptive_thresholds(glob, levels, equal),
                          glob * levels / levels.max())
    # a class predicted exactly as often as it is estimated to occur keeps the full threshold
    skewed = torch.tensor([0.7, 0.1, 0.1, 0.1])
    found = losses.adaptive_thresholds(glob, skewed, skewed)
    assert torch.allclose(found, torch.full((4,), 0.9))


def held_out(rows: list[list[int]]) -> tuple[torch.Tensor, np.ndarray]:
    """Held-out predictions with a given confusion: rows[c][j] images of class c predicted j."""
    k = len(rows)
    labels = np.concatenate([np.full(sum(row), c) for c, row in enumerate(rows)])
    predicted = np.concatenate([np.repeat(np.arange(k), row) for row in rows])
    return torch.nn.functional.one_hot(torch.as_tensor(predicted), k).float(), labels


def pool(shares: list[float]) -> torch.Tensor:
    """The shares of the classes the folds' labels give the unlabeled images."""
    return torch.tensor(shares)


def test_the_estimate_is_used_only_where_the_labels_say_the_classes_differ():
    labeled = torch.tensor([0.25] * 4)
    estimate = torch.tensor([0.55, 0.15, 0.15, 0.15])
    sure = held_out([[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [0, 0, 0, 10]])
    unequal = prior.shift_evidence(pool([0.55, 0.15, 0.15, 0.15]), *sure, labeled)
    equal = prior.shift_evidence(pool([0.27, 0.24, 0.25, 0.24]), *sure, labeled)
    assert unequal[0] == pytest.approx(0.3) and unequal[1] < 0.05
    assert torch.equal(prior.chosen_prior(estimate, labeled, unequal), estimate)
    assert torch.equal(prior.chosen_prior(estimate, labeled, equal), labeled)
    assert torch.equal(prior.chosen_prior(estimate, labeled, None), labeled)
    assert torch.equal(prior.chosen_prior(estimate, labeled, equal, always=True), estimate)
    # Folds that call half of class 1 class 0 give an equal pool these shares: their own
    # leaning, which their held-out images show, is no evidence (the shares lie 0.125 from the
    # labeled ones, as far as a real difference could)
    leaning = held_out([[10, 0, 0, 0], [5, 5, 0, 0], [0, 0, 10, 0], [0, 0, 0, 10]])
    distance, _ = prior.shift_evidence(pool([0.375, 0.125, 0.25, 0.25]), *leaning, labeled)
    assert distance == pytest.approx(0.0, abs=1e-9)
    # the same confusion seen on 2 held-out images per class instead of 20: a wider bar
    rows = [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [0, 0, 0, 2]]
    few = prior.shift_evidence(pool([0.25] * 4), *held_out(rows), labeled)
    many = prior.shift_evidence(pool([0.25] * 4),
                                *held_out([[10 * v for v in row] for row in rows]), labeled)
    assert few[1] > many[1] > 0
    # no held-out image in a class: nothing to check the labels by
    assert prior.shift_evidence(pool([0.25] * 4), *held_out([[2, 0, 0, 0], [0, 2, 0, 0],
                                                             [0, 0, 2, 0], [0, 0, 0, 0]]),
                                labeled) is None


def test_predicted_shares_count_the_likeliest_class():
    probs = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.55, 0.45]])
    assert torch.allclose(prior.predicted_shares(probs), torch.tensor([0.75, 0.25]))


def test_alignment_aims_at_the_prior():
    probs = torch.tensor([[0.5, 0.5]] * 10)
    aligned = losses.align_distribution(probs, probs.mean(0), torch.tensor([0.8, 0.2]))
    assert torch.allclose(aligned.mean(0), torch.tensor([0.8, 0.2]))


def test_the_label_stage_estimates_the_prior_logs_it_and_keeps_it(clean_folder, tmp_path):
    import json

    from semigen import checkpoint
    from semigen.cli import main
    run, uniform = tmp_path / "run", tmp_path / "uniform"
    # 6 dark and 2 light unlabeled images
    for i in range(2, 6):
        (clean_folder / "unlabeled" / f"light{i}.png").unlink()
    assert main(["label", str(clean_folder), "--out", str(run), "--preset", "tiny"]) == 0
    found = json.loads((run / "metrics.json").read_text())["represent"]
    shares = dict(zip(["dark", "light"], found["class_prior_estimate"], strict=True))
    assert found["class_prior_estimated"] and found["labeled_prior"] == [0.5, 0.5]
    assert shares["dark"] > 0.5 and abs(sum(shares.values()) - 1) < 1e-5
    # the pool is 75 % dark: the labels' shares lie 25 % from those the held-out labeled
    # images predict for equal classes, past chance and past the 10 % bar, so the estimate is
    # what fine-tuning aims at
    distance, bar = found["class_prior_evidence"]
    assert distance == pytest.approx(0.25) and distance > max(bar, prior.SHIFT_TO_USE)
    assert found["class_prior"] == pytest.approx(found["class_prior_estimate"])
    assert found["class_prior_shift"] == pytest.approx(
        prior.shift(torch.tensor(found["class_prior_estimate"]), torch.tensor([0.5, 0.5])))
    assert "class shares estimated among the unlabeled images" in (run / "log.txt").read_text()
    state = checkpoint.load(Layout(run).checkpoint("label"))
    assert torch.allclose(state["levels"]["prior"], torch.tensor(found["class_prior"]))
    # uniform: FreeMatch's assumption, nothing estimated
    assert main(["label", str(clean_folder), "--out", str(uniform), "--preset", "tiny",
                 "--label.class_prior", "uniform"]) == 0
    found = json.loads((uniform / "metrics.json").read_text())["represent"]
    assert found["class_prior"] == [0.5, 0.5] and not found["class_prior_estimated"]


def test_a_balanced_pool_keeps_the_labeled_shares_end_to_end(clean_folder, tmp_path):
    """6 dark and 6 light unlabeled images: EM's estimate moves by noise, the labels' shares
    match those the held-out images predict, and the labeled shares are what fine-tuning aims
    at."""
    import json

    from semigen import checkpoint
    from semigen.cli import main
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), "--preset", "tiny"]) == 0
    found = json.loads((run / "metrics.json").read_text())["represent"]
    assert found["class_prior_estimated"]
    distance, bar = found["class_prior_evidence"]
    assert distance <= max(bar, prior.SHIFT_TO_USE)
    assert found["class_prior"] == found["labeled_prior"] == [0.5, 0.5]
    state = checkpoint.load(Layout(run).checkpoint("label"))
    assert torch.allclose(state["levels"]["prior"], torch.tensor([0.5, 0.5]))
    assert "the labeled shares are kept" in (run / "log.txt").read_text()
    # a user who knows the classes differ asks for the estimate whatever the evidence
    always = tmp_path / "always"
    assert main(["label", str(clean_folder), "--out", str(always), "--preset", "tiny",
                 "--label.class_prior", "estimate-always"]) == 0
    found = json.loads((always / "metrics.json").read_text())["represent"]
    assert found["class_prior"] == pytest.approx(found["class_prior_estimate"])
    assert "as label.class_prior estimate-always asks" in (always / "log.txt").read_text()


def test_confidence_far_above_accuracy_is_said_plainly():
    assert prior.overconfidence({"mean_confidence": 0.915, "pseudo_label_accuracy": 0.683}
                                ).startswith("the pseudo-labels' mean confidence (92%) is far "
                                             "above their accuracy (68%, against the known")
    # without truth: the held-out estimate
    found = prior.overconfidence({"mean_confidence": 0.9, "classifier_estimate": 0.6})
    assert "(60%, estimated on held-out labeled images)" in found
    assert prior.overconfidence({"mean_confidence": 0.75, "pseudo_label_accuracy": 0.7}) is None
    assert prior.overconfidence({"mean_confidence": 0.9}) is None  # nothing to compare with


def test_one_label_in_a_class_keeps_equal_shares(tmp_path):
    import json

    from semigen.cli import main
    run = tmp_path / "run"
    assert main(["label", "digits", "--labels-per-class", "1", "--out", str(run), "--preset",
                 "tiny"]) == 0
    found = json.loads((run / "metrics.json").read_text())["represent"]
    assert not found["class_prior_estimated"] and found["class_prior_too_few_labels"]
    assert found["class_prior"] == pytest.approx([0.1] * 10)
    assert "class shares not estimated: a class has fewer than 4" in (run / "log.txt").read_text()
