"""The semi-supervised losses and masks on hand-computed values."""

import math

import pytest
import torch

from semigen.labeling import losses


def test_supervised_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert losses.supervised_loss(logits, labels).item() == pytest.approx(expected)


def test_fixed_threshold_mask():
    probs = torch.tensor([[0.96, 0.04], [0.60, 0.40], [0.02, 0.98]])
    labels, mask = losses.pseudo_label_mask(probs, torch.tensor(0.95))
    assert labels.tolist() == [0, 0, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0]


def test_per_class_threshold_mask_uses_the_predicted_class_level():
    probs = torch.tensor([[0.7, 0.3], [0.3, 0.7]])
    _, mask = losses.pseudo_label_mask(probs, torch.tensor([0.8, 0.6]))
    assert mask.tolist() == [0.0, 1.0]  # class 0 needs 0.8, class 1 only 0.6


def test_consistency_loss_averages_over_the_whole_batch():
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    pseudo = torch.tensor([0, 1])
    mask = torch.tensor([1.0, 0.0])
    # one sample of two counts: log(2) / 2
    assert losses.consistency_loss(logits, pseudo, mask).item() == pytest.approx(math.log(2) / 2)
    assert losses.consistency_loss(logits, pseudo, torch.zeros(2)).item() == 0.0


def test_adaptive_thresholds_scale_by_class_level():
    levels = losses.adaptive_thresholds(torch.tensor(0.9), torch.tensor([0.5, 0.25, 0.25]),
                                        torch.full((3,), 1 / 3))
    assert levels.tolist() == pytest.approx([0.9, 0.45, 0.45])


def test_ema_update():
    assert losses.ema(torch.tensor(1.0), torch.tensor(0.0), 0.9).item() == pytest.approx(0.9)


def test_distribution_alignment_damps_an_over_predicted_class():
    probs = torch.tensor([[0.6, 0.4]])
    aligned = losses.align_distribution(probs, model_prior=torch.tensor([0.75, 0.25]),
                                        target_prior=torch.tensor([0.5, 0.5]))
    # 0.6/0.75 = 0.8 and 0.4/0.25 = 1.6, renormalised: 1/3 and 2/3
    assert aligned.tolist()[0] == pytest.approx([1 / 3, 2 / 3])
    assert aligned.sum().item() == pytest.approx(1.0)


def test_calibration_error_of_perfectly_calibrated_and_overconfident_predictions():
    labels = torch.tensor([0, 0, 1, 1])
    sure_and_right = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert losses.expected_calibration_error(sure_and_right, labels) == pytest.approx(0.0)
    sure_and_half_wrong = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert losses.expected_calibration_error(sure_and_half_wrong, labels) == pytest.approx(0.5)


def test_ema_warm_up():
    from semigen.training import ema_decay_at
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(10**6, 0.999) == 0.999


def test_contrastive_loss_on_hand_computed_values():
    # Two images, orthogonal embeddings, each view equal to its partner: at temperature 1 each
    # row sees its partner at similarity 1 and the two others at 0.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.e / (math.e + 2))
    assert losses.contrastive_loss(z, z, temperature=1.0).item() == pytest.approx(expected)
    # lengths do not matter (cosine); a sharp temperature makes right partners cost ~nothing
    assert losses.contrastive_loss(3 * z, z, temperature=0.01).item() < 1e-6
    # partners swapped: each embedding is nearest a negative, the loss is large
    assert losses.contrastive_loss(z, z.flip(0), temperature=0.1).item() > 5


def test_contrastive_loss_has_gradients_for_both_views():
    z1, z2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    losses.contrastive_loss(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_decoupled_contrastive_loss_leaves_the_partner_out_of_the_denominator():
    # As above, partner at similarity 1, the two negatives at 0: -1 + log(2) at temperature 1.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert losses.contrastive_loss(z, z, 1.0, decoupled=True).item() == \
        pytest.approx(-1 + math.log(2))
    # always below NT-Xent (its denominator holds one term fewer), and still rewards the
    # right partner over a swapped one
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    assert losses.contrastive_loss(z1, z2, decoupled=True) < losses.contrastive_loss(z1, z2)
    assert losses.contrastive_loss(z, z, 0.1, decoupled=True) < \
        losses.contrastive_loss(z, z.flip(0), 0.1, decoupled=True)
