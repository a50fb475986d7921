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


def test_the_setting_names_the_prior_and_the_labeled_shares_are_the_default():
    labeled = torch.tensor([0.4, 0.4, 0.2])
    estimate = torch.tensor([0.7, 0.2, 0.1])
    assert torch.equal(prior.chosen_prior("labeled", labeled, estimate), labeled)
    assert torch.equal(prior.chosen_prior("estimate", labeled, estimate), estimate)
    assert torch.allclose(prior.chosen_prior("uniform", labeled, estimate),
                          torch.full((3,), 1 / 3))
    # no unlabeled image, nothing estimated: the labeled shares, whatever was asked
    assert torch.equal(prior.chosen_prior("estimate", labeled, None), labeled)
    from semigen.config import CLASS_PRIORS, Config
    assert Config().label.class_prior == "labeled" and set(CLASS_PRIORS) == {
        "labeled", "estimate", "uniform"}


def test_the_log_line_names_the_classes_the_estimate_would_move_and_how_to_use_it():
    labeled = torch.tensor([0.25] * 4)
    estimate = torch.tensor([0.40, 0.24, 0.26, 0.10])
    classes = ["coat", "shirt", "bag", "sandal"]
    assert [name for name, _, _ in prior.largest_moves(estimate, labeled, classes, 2)] == [
        "coat", "sandal"]
    kept = prior.describe(estimate, labeled, classes, "labeled")
    assert "16% (total variation)" in kept and "coat 25.0% -> 40.0%, sandal 25.0% -> 10.0%" \
        in kept and "not used (label.class_prior labeled" in kept
    assert "--label.class-prior estimate uses it" in kept
    assert prior.describe(estimate, labeled, classes, "estimate").endswith(
        "used, as label.class_prior estimate asks")


def test_predicted_shares_count_the_likeliest_class():
    probs = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.55, 0.45]])
    assert torch.allclose(prior.predicted_shares(probs), torch.tensor([0.75, 0.25]))


def test_alignment_aims_at_the_prior():
    probs = torch.tensor([[0.5, 0.5]] * 10)
    aligned = losses.align_distribution(probs, probs.mean(0), torch.tensor([0.8, 0.2]))
    assert torch.allclose(aligned.mean(0), torch.tensor([0.8, 0.2]))


def test_an_unequal_pool_is_estimated_and_shown_but_used_only_when_asked(clean_folder,
                                                                          tmp_path):
    """6 dark and 2 light unlabeled images: EM sees that dark is the commoner class; the
    default aims at the labeled shares and says how to use the estimate; `estimate` uses it."""
    import json

    from semigen import checkpoint
    from semigen.cli import main
    run, asked = tmp_path / "run", tmp_path / "asked"
    for i in range(2, 6):
        (clean_folder / "unlabeled" / f"light{i}.png").unlink()
    assert main(["label", str(clean_folder), "--out", str(run), "--preset", "tiny"]) == 0
    found = json.loads((run / "metrics.json").read_text())["represent"]
    shares = dict(zip(["dark", "light"], found["class_prior_estimate"], strict=True))
    assert shares["dark"] > 0.5 and abs(sum(shares.values()) - 1) < 1e-5
    assert found["class_prior"] == found["labeled_prior"] == [0.5, 0.5]
    assert found["class_prior_setting"] == "labeled"
    assert found["class_prior_shift"] == pytest.approx(
        prior.shift(torch.tensor(found["class_prior_estimate"]), torch.tensor([0.5, 0.5])))
    log = (run / "log.txt").read_text()
    assert "class shares estimated among the unlabeled images" in log
    assert "not used (label.class_prior labeled" in log
    state = checkpoint.load(Layout(run).checkpoint("label"))
    assert torch.allclose(state["levels"]["prior"], torch.tensor([0.5, 0.5]))
    # the report shows the estimate beside what was aimed at, and how to use it
    assert main(["report", str(run)]) == 0
    page = Layout(run).report.read_text()
    assert "How common each class is" in page and "--label.class-prior estimate" in page
    # asked for: the estimate is what fine-tuning aims at
    assert main(["label", str(clean_folder), "--out", str(asked), "--preset", "tiny",
                 "--label.class_prior", "estimate"]) == 0
    found = json.loads((asked / "metrics.json").read_text())["represent"]
    assert found["class_prior"] == pytest.approx(found["class_prior_estimate"])
    assert found["class_prior"][0] > 0.5
    state = checkpoint.load(Layout(asked).checkpoint("label"))
    assert torch.allclose(state["levels"]["prior"], torch.tensor(found["class_prior"]))
    assert "used, as label.class_prior estimate asks" in (asked / "log.txt").read_text()


def test_the_default_on_a_balanced_split_is_uniform_to_the_last_bit(tmp_path):
    """Every class labeled as often: the default aims at exactly what `uniform` does, so the
    two give the same pseudo-labels, whatever EM's estimate says."""
    import json

    from semigen.cli import main
    runs = {}
    for setting in ("labeled", "uniform"):
        runs[setting] = tmp_path / setting
        assert main(["label", "digits", "--labels-per-class", "5", "--out",
                     str(runs[setting]), "--preset", "tiny",
                     "--label.class_prior", setting]) == 0
    found = json.loads((runs["labeled"] / "metrics.json").read_text())["represent"]
    assert found["class_prior"] == pytest.approx([0.1] * 10, abs=1e-7)
    assert prior.shift(torch.tensor(found["class_prior_estimate"]), torch.full((10,), 0.1)) > 0
    assert (Layout(runs["labeled"]).pseudo_labels.read_text()
            == Layout(runs["uniform"]).pseudo_labels.read_text())


def test_confidence_far_above_accuracy_is_said_plainly():
    assert prior.overconfidence({"mean_confidence": 0.915, "pseudo_label_accuracy": 0.683}
                                ).startswith("the pseudo-labels' mean confidence (92%) is far "
                                             "above their accuracy (68%, against the known")
    # without truth: the held-out estimate
    found = prior.overconfidence({"mean_confidence": 0.9, "classifier_estimate": 0.6})
    assert "(60%, estimated on held-out labeled images)" in found
    assert prior.overconfidence({"mean_confidence": 0.75, "pseudo_label_accuracy": 0.7}) is None
    assert prior.overconfidence({"mean_confidence": 0.9}) is None  # nothing to compare with
