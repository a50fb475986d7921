"""Variety of generated images: measured beside real against real, logged while training, and
a generator that draws one image per class is caught."""

import numpy as np
import pytest
import torch

from semigen import api
from semigen.config import resolve
from semigen.evaluation.distances import beside_real
from semigen.evaluation.images import variety_summary
from semigen.evaluation.report import variety_paragraphs
from semigen.generation import losses
from semigen.generation.data import confident
from semigen.generation.variety import real_by_class, real_spreads, spread, spread_ratios
from semigen.run import read_stats


def test_real_against_real_is_the_scale_and_one_image_drawn_over_and_over_falls_off_it():
    g = torch.Generator().manual_seed(0)
    real, new_real = torch.randn(400, 16, generator=g), torch.randn(200, 16, generator=g)
    one_image = real[0] + 0.05 * torch.randn(200, 16, generator=g)
    varied, collapsed = beside_real(real, new_real), beside_real(real, one_image)
    assert varied["n"] == collapsed["n"] == 200 and varied["k"] == 3
    # the real reference recall is measured at the same N on both sides
    assert varied["real_recall"] == collapsed["real_recall"] > 0.5
    assert 0.8 < varied["recall_ratio"] < 1.25
    assert collapsed["recall_ratio"] < 0.1 and collapsed["coverage_ratio"] < 0.1
    assert beside_real(real[:6], new_real) == {}  # too few real images for two sets beyond k


def test_variety_summary_names_the_least_varied_class():
    per_class = {"a": {"variety": {"n": 50, "k": 3, "recall": 0.6, "real_recall": 0.8,
                                   "recall_ratio": 0.75, "coverage": 0.5, "real_coverage": 0.8,
                                   "coverage_ratio": 0.625}},
                 "b": {"variety": {"n": 40, "k": 3, "recall": 0.08, "real_recall": 0.8,
                                   "recall_ratio": 0.1, "coverage": 0.1, "real_coverage": 0.8,
                                   "coverage_ratio": 0.125}},
                 "c": {"n_real": 1}}
    found = variety_summary(per_class)["variety"]
    assert found["worst_class"] == "b" and found["worst_recall_ratio"] == 0.1
    assert found["recall_ratio"] == pytest.approx(0.425) and found["n_per_class"] == 40
    text = "".join(variety_paragraphs({"variety": found, "per_class": per_class}, "its"))
    # a plain sentence for the class below half, none for the other
    assert "class b: the generated images cover 10 % of what real images of b cover" in text
    assert "class a:" not in text


def test_spread_is_zero_for_one_image_and_about_one_for_new_real_images():
    g = torch.Generator().manual_seed(1)
    real = [torch.rand(64, 1, 8, 8, generator=g) * 2 - 1 for _ in range(2)]
    labels = torch.tensor([0] * 8 + [1] * 8)
    new_real = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    copies = torch.cat([real[0][:1].repeat(8, 1, 1, 1), new_real])
    ratios = spread_ratios(copies, labels, [spread(r) for r in real])
    assert ratios[0] == 0 and 0.8 < ratios[1] < 1.2
    assert spread(real[0][:1]) == 0.0  # fewer than two images: no spread


def test_mode_seeking_grows_as_the_images_of_a_class_collapse():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(8, 4, generator=g)
    varied = torch.randn(8, 1, 4, 4, generator=g)
    collapsed = varied[:1].repeat(8, 1, 1, 1) + 0.01 * varied
    assert losses.mode_seeking(collapsed, z) > 10 * losses.mode_seeking(varied, z)


def test_every_class_keeps_its_most_confident_share_below_the_bar():
    rows = [(i, 0, 0.95) for i in range(10)] + [(10 + i, 1, 0.5 + i / 100) for i in range(10)]
    assert [r[0] for r in confident(rows, 0.9, 0.0)] == list(range(10))  # the bar alone
    kept = confident(rows, 0.9, 0.5)
    # class 0 keeps all ten above the bar; class 1 its five most confident, none above the bar
    assert [r[0] for r in kept] == list(range(10)) + [15, 16, 17, 18, 19]
    assert len(confident(rows, 0.9, 1.0)) == 20


def test_a_trained_gan_draws_different_images_of_each_class(tmp_path):
    """Fails when the generator draws one image per class whatever its noise: the spread of its
    grid's images over that of real images of the class, logged while it trains."""
    out = tmp_path / "run"
    api.generate_run(resolve(preset="tiny", overrides={
        "run.out": str(out), "generate.mode": "labels-only", "generate.steps": "150",
        "generate.sample_every": "150", "generate.grid_per_class": "8"}))
    logged = [r for r in read_stats(out) if "spread_ratio" in r]
    assert logged[-1]["step"] == 150  # a grid, and its spread, at every checkpoint
    per_class = logged[-1]["spread_ratio_per_class"]
    assert len(per_class) == 10 and min(per_class.values()) > 0.4, per_class


def test_the_spread_catches_a_generator_that_ignores_its_noise():
    """The check above, against a generator that draws one image per class."""
    from semigen.data import load_dataset
    data = load_dataset(resolve(preset="tiny").data)
    real = real_by_class(data.labeled.images, data.labeled.labels, len(data.classes))
    real_spread = real_spreads(data.labeled.images, data.labeled.labels, len(data.classes))
    one_per_class = torch.stack([r[0] for r in real])
    labels = torch.arange(len(data.classes)).repeat_interleave(8)
    ratios = spread_ratios(one_per_class[labels], labels, real_spread)
    assert max(ratios) == 0
    real_again = torch.cat([r[:8] for r in real])
    assert np.mean(spread_ratios(real_again, labels, real_spread)) > 0.8
