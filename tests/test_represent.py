"""The representation stage: labels from features, the held-out estimate, SimCLR views, and
the stage inside `semigen label` (resume, metrics)."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semigen.api import label_run as train
from semigen.config import resolve
from semigen.data.transforms import contrastive_views
from semigen.labeling import represent
from semigen.run import read_metrics, read_stats


def clusters(per_class: int, num_classes: int, spread: float, seed: int = 0):
    """Points around `num_classes` random directions in 16 dimensions."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, 16, generator=g)
    labels = np.repeat(np.arange(num_classes), per_class)
    points = centres[labels] + spread * torch.randn(len(labels), 16, generator=g)
    return points, labels


def test_propagate_spreads_labels_along_clusters():
    features, truth = clusters(100, 4, 0.2)
    known = np.full(len(truth), -1)
    for c in range(4):  # one labeled point per cluster
        known[np.flatnonzero(truth == c)[0]] = c
    probs = represent.propagate(represent.neighbour_graph(features), known, 4)
    assert probs.shape == (400, 4)
    assert torch.allclose(probs.sum(1), torch.ones(400), atol=1e-5)
    assert (probs.argmax(1).numpy() == truth).mean() > 0.97


def test_propagate_over_a_built_graph_equals_sklearns_own_knn_spreading():
    # The graph is built once and reused; spreading over it must be what sklearn's knn
    # kernel gives on the features themselves.
    from sklearn.semi_supervised import LabelSpreading
    features, truth = clusters(60, 3, 1.0)  # overlapping: the spread is not trivially one-hot
    known = np.full(len(truth), -1)
    known[[0, 1, 60, 61, 120]] = truth[[0, 1, 60, 61, 120]]
    own = LabelSpreading(kernel="knn", n_neighbors=represent.NEIGHBOURS, alpha=represent.SPREAD,
                         max_iter=100).fit(F.normalize(features, dim=1).numpy(), known)
    ours = represent.propagate(represent.neighbour_graph(features), known, 3)
    assert np.allclose(ours.numpy(), own.label_distributions_, atol=1e-6)
    assert 0.4 < ours.max(1).values.mean() < 0.99


def test_propagate_keeps_classes_absent_from_the_labels_at_zero():
    features, truth = clusters(50, 3, 0.2)
    known = np.full(len(truth), -1)
    known[0], known[50] = 0, 1  # class 2 has no labeled point
    probs = represent.propagate(represent.neighbour_graph(features), known, 3)
    assert probs[:100, 2].abs().max() == 0  # reached from the labels: never class 2
    # the third cluster is not linked to a labeled point: its rows say nothing
    assert torch.allclose(probs[100:], torch.full((50, 3), 1 / 3))


def test_cross_validated_accuracy_tells_structure_from_noise():
    features, truth = clusters(200, 5, 0.3)
    labeled = np.concatenate([np.flatnonzero(truth == c)[:5] for c in range(5)])
    good = represent.cross_validated_accuracy(represent.neighbour_graph(features), labeled,
                                            truth[labeled], 5)
    assert good["estimated_accuracy"] > 0.9 and good["estimate_held_out"] == 25
    assert good["estimate_low"] < good["estimated_accuracy"] <= good["estimate_high"]
    noise = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
    bad = represent.cross_validated_accuracy(represent.neighbour_graph(noise), labeled,
                                           truth[labeled], 5)
    assert bad["estimated_accuracy"] < 0.5  # chance is 0.2
    assert bad["estimate_low"] < 0.2 + 0.15


def test_cross_validated_accuracy_holds_out_only_the_allowed_labels():
    features, truth = clusters(200, 5, 0.3)
    labeled = np.concatenate([np.flatnonzero(truth == c)[:6] for c in range(5)])
    wrong = truth[labeled].copy()
    allowed = np.arange(len(labeled)) % 6 < 5  # per class, five images may be held out
    wrong[~allowed] = (wrong[~allowed] + 1) % 5  # the sixth, a label the graph contradicts
    found = represent.cross_validated_accuracy(represent.neighbour_graph(features), labeled,
                                             wrong, 5, allowed=allowed)
    assert found["estimate_held_out"] == 25
    everyone = represent.cross_validated_accuracy(represent.neighbour_graph(features), labeled,
                                                wrong, 5)
    assert everyone["estimate_held_out"] == 30
    # held out, the contradicted labels count as errors: only the allowed images say how
    # well the graph labels images like the split's
    assert everyone["estimated_accuracy"] < found["estimated_accuracy"] - 0.1


def test_cross_validated_accuracy_needs_two_labels_in_a_class():
    features, truth = clusters(20, 3, 0.3)
    labeled = np.array([0, 20, 40])
    found = represent.cross_validated_accuracy(represent.neighbour_graph(features), labeled,
                                             truth[labeled], 3)
    assert found["estimated_accuracy"] is None and found["estimate_held_out"] == 0


def test_wilson_interval_matches_known_values():
    low, high = represent.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = represent.wilson_interval(0, 5)
    assert low == pytest.approx(0, abs=1e-12) and 0.4 < high < 0.45


def test_contrastive_views_vary_colour_position_and_keep_the_shape():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    augment = contrastive_views((32, 32, 3), hflip=True, rotate=True)
    a, b = augment(images), augment(images)
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)  # each call draws new parameters
    grey = contrastive_views((28, 28, 1), hflip=False, rotate=False)
    assert grey(torch.rand(4, 1, 28, 28)).shape == (4, 1, 28, 28)


def tiny(out, **overrides):
    return resolve(preset="tiny", overrides={"run.out": str(out), **overrides})


def test_label_stage_learns_features_first_and_reports_them(tmp_path):
    out = tmp_path / "run"
    metrics = train(tiny(out))
    found = read_metrics(out)["represent"]
    assert 0 <= found["estimated_accuracy"] <= 1
    assert found["estimate_low"] <= found["estimated_accuracy"] <= found["estimate_high"]
    assert found["estimate_held_out"] == 100  # digits: 10 labeled images per class
    assert found["features_pseudo_label_accuracy"] > 0.3  # chance is 0.1
    losses = [r["loss"] for r in read_stats(out) if r["stage"] == "represent" and "loss" in r]
    assert len(losses) == 2  # logged every 10 of 20 steps
    assert (out / "checkpoints" / "represent" / "latest.pt").is_file()
    assert metrics["unlabeled"] == 1247 and 0 <= metrics["pseudo_label_accuracy"] <= 1


def test_representation_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny(whole, **{"label.steps": 1}))
    train(tiny(parts, **{"label.steps": 1, "label.pretrain_steps": 10}))
    shutil.rmtree(parts / "checkpoints" / "label")  # as if stopped halfway through represent
    train(tiny(parts, **{"label.steps": 1}))
    a, b = (torch.load(p / "checkpoints" / "represent" / "latest.pt", weights_only=True)["model"]
            for p in (whole, parts))
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [r for r in read_stats(parts) if r["stage"] == "represent"]
    assert [r for r in read_stats(whole) if r["stage"] == "represent"] != []
    assert [r["step"] for r in lines if "loss" in r] == [10, 20]
    assert sum(r.get("event") == "done" for r in lines) == 1


def test_an_estimate_near_chance_is_flagged_in_the_log_and_the_report():
    from semigen.evaluation.report import representation_section
    classes = list("abcde")
    poor = {"estimated_accuracy": 0.24, "estimate_low": 0.11, "estimate_high": 0.43,
            "estimate_held_out": 25}
    good = {"estimated_accuracy": 0.92, "estimate_low": 0.75, "estimate_high": 0.98,
            "estimate_held_out": 25}
    text, near = represent.describe_estimate(poor, 5)
    assert near and "NEAR CHANCE" in text and "24%" in text
    assert 'class="warn"' in representation_section({"represent": poor}, classes)
    text, near = represent.describe_estimate(good, 5)
    assert not near and "92%" in text and "75%-98%" in text
    section = representation_section({"represent": good}, classes)
    assert 'class="warn"' not in section and "0.9200" in section
    text, near = represent.describe_estimate({"estimated_accuracy": None}, 5)
    assert not near and text.startswith("no accuracy estimate")
    assert representation_section({}, classes) == ""


def test_colour_stays_in_the_views_only_where_it_tells_the_classes_apart():
    rng = np.random.default_rng(0)
    # dark against light: colour is the class
    dark_light = np.concatenate([rng.normal(v, 15, (6, 8, 8, 3)) for v in (50, 200)])
    labels = np.repeat([0, 1], 6)
    assert represent.colour_tells_classes_apart(dark_light.clip(0, 255).astype(np.uint8),
                                                labels)
    # colour drawn at random for every image, whatever its class: a nuisance
    random_colour = rng.integers(0, 256, (25, 1, 1, 3)) + rng.normal(0, 5, (25, 8, 8, 3))
    assert not represent.colour_tells_classes_apart(
        random_colour.clip(0, 255).astype(np.uint8), np.repeat(np.arange(5), 5))


@pytest.mark.parametrize("second_teacher", [True, False])
def test_the_features_labels_teach_fine_tuning_only_when_asked(tmp_path, monkeypatch,
                                                                second_teacher):
    """label.second_teacher: each step's targets see the features' label distribution of the
    unlabeled images (one row per image), or nothing."""
    from semigen.labeling import train as label_train
    real_step_loss = label_train.step_loss
    teachers = []

    def recording(model, lab, rt, batches, teacher, *args):
        teachers.append(teacher)
        return real_step_loss(model, lab, rt, batches, teacher, *args)

    monkeypatch.setattr(label_train, "step_loss", recording)
    metrics = train(resolve(preset="tiny", overrides={
        "run.out": str(tmp_path / "run"), "label.steps": "3",
        "label.second_teacher": str(second_teacher)}))
    assert len(teachers) == 3
    if second_teacher:
        assert all(t is not None and t.shape == (metrics["unlabeled"], 10) for t in teachers)
        torch.testing.assert_close(teachers[0].sum(1), torch.ones(metrics["unlabeled"]))
    else:
        assert all(t is None for t in teachers)
