"""Pieces of the generator module: networks, losses and DiffAugment on known values."""

import pytest
import torch

from semigen.generation import losses
from semigen.generation.nets import Discriminator, Generator, doublings, start_size


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_networks_make_and_score_images_of_the_data_shape(shape):
    g, d = Generator(10, shape, width=8), Discriminator(10, shape, width=8)
    z, y = torch.randn(4, g.z_dim), torch.arange(4)
    images = g(z, y)
    assert images.shape == (4, shape[2], shape[0], shape[1])
    assert images.min() >= -1 and images.max() <= 1
    assert d(images, y).shape == (4,)


def test_the_generator_draws_at_the_image_size_from_a_4_to_7_px_start():
    sides = (8, 16, 28, 32, 64, 100)
    assert [start_size(s) for s in sides] == [4, 4, 7, 4, 4, 7]
    # drawn at the size itself, except 100 px: 7 x 2^4 = 112, then resized
    assert [start_size(s) * 2 ** doublings(s) for s in sides] == [8, 16, 28, 32, 64, 112]


def test_larger_images_get_thinner_layers_on_their_larger_maps():
    """Every doubling of the generator halves its channels (the discriminator mirrors it), so
    each costs about the same and 64 px costs about what 28 px does; 28 px is unchanged."""
    def layers(side):
        g, d = Generator(3, (side, side, 1)), Discriminator(3, (side, side, 1))
        return ([m.out_channels for m in g.ups],
                [m.out_channels for m in d.body if isinstance(m, torch.nn.Conv2d)])
    assert layers(28) == ([128, 64], [64, 128, 256])
    assert layers(64) == ([128, 64, 32, 16], [16, 32, 64, 128, 256])
    g, d = layers(128)
    assert min(g) == 8 and d[-1] == 256 and len(d) == 6


def test_the_generator_resizes_only_what_it_cannot_draw_exactly():
    g = Generator(3, (100, 100, 1), width=4).eval()
    assert g(torch.randn(2, g.z_dim), torch.arange(2)).shape == (2, 1, 100, 100)


def test_discriminator_projection_depends_on_the_class():
    d = Discriminator(3, (8, 8, 1), width=8)
    x = torch.randn(1, 1, 8, 8).repeat(3, 1, 1, 1)
    scores = d(x, torch.arange(3))
    assert len(set(scores.tolist())) == 3  # same image, three classes, three scores


def test_the_discriminator_can_also_classify():
    """The auxiliary logits are the image's, not the class asked for, and the class loss
    trains the discriminator's own features (not a head on detached ones)."""
    torch.manual_seed(0)
    d = Discriminator(3, (8, 8, 1), width=8, classify=True).eval()  # no power iteration
    images = torch.randn(5, 1, 8, 8)
    score, logits = d(images, torch.zeros(5, dtype=torch.long))
    assert score.shape == (5,) and logits.shape == (5, 3)
    _, other = d(images, torch.full((5,), 2))
    torch.testing.assert_close(logits, other)  # the label given to the projection: no leak
    assert not torch.allclose(logits[0], logits[1])  # other images, other logits
    d.zero_grad()
    losses.class_loss(logits, torch.tensor([0, 1, 2, 0, 1])).backward()
    body = [p.grad for p in d.body.parameters() if p.grad is not None]
    assert body and any(g.abs().sum() > 0 for g in body)


def test_hinge_losses_on_known_values():
    real = torch.tensor([2.0, 0.5])  # relu(1 - real) = [0, 0.5]
    fake = torch.tensor([-2.0, 0.0])  # relu(1 + fake) = [0, 1]
    assert losses.discriminator_hinge(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert losses.generator_hinge(fake).item() == pytest.approx(1.0)


def test_step_losses_add_the_weighted_class_term_learnt_from_real_images_only():
    scores = torch.tensor([2.0, 0.5, -2.0, 0.0])  # two real, then two generated
    labels = torch.tensor([0, 1])
    # the generated half's logits are wrong on purpose: they must not count
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-9.0, 9.0], [9.0, -9.0]])
    d_alone, none = losses.discriminator_loss(scores, labels)
    assert none is None and d_alone.item() == pytest.approx(0.75)
    d_total, d_term = losses.discriminator_loss((scores, logits), labels, class_weight=0.5)
    assert d_term.item() == pytest.approx(losses.class_loss(logits[:2], labels).item())
    assert d_total.item() == pytest.approx(0.75 + 0.5 * d_term.item())
    g_total, g_term = losses.generator_loss((scores[2:], logits[2:]), labels, class_weight=2.0)
    assert g_term.item() == pytest.approx(losses.class_loss(logits[2:], labels).item())
    assert g_total.item() == pytest.approx(1.0 + 2.0 * g_term.item())
    assert losses.generator_loss(scores[2:], labels)[1] is None


def test_diff_augment_is_seeded_differentiable_and_keeps_shape():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    a = losses.diff_augment(x, torch.Generator().manual_seed(0))
    b = losses.diff_augment(x, torch.Generator().manual_seed(0))
    c = losses.diff_augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutout_zeroes_a_square_of_half_the_side():
    x = torch.ones(8, 1, 16, 16)
    out = losses.cutout(x, 0.5, torch.Generator().manual_seed(0))
    assert ((out == 0).sum(dim=(1, 2, 3)) == 64).all()  # 8 x 8 pixels in each image


def test_translation_moves_content_by_whole_pixels():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1
    out = losses.translation(x, 0.125, torch.Generator().manual_seed(0))
    assert (out.sum(dim=(1, 2, 3)) <= 1).all()  # moved (or shifted out), never smeared
    rows, cols = torch.nonzero(out[:, 0], as_tuple=True)[1:]
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2  # 1/8 of 16 px
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 1


def test_color_is_a_per_image_brightness_and_contrast_change():
    x = torch.rand(3, 1, 8, 8)
    out = losses.color(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)
    # out = a * x + b with one (a, b) per image: centred values scale by one factor
    ratio = (out - out.mean(dim=(1, 2, 3), keepdim=True)) / (x - x.mean(dim=(1, 2, 3),
                                                                       keepdim=True))
    spread = ratio.flatten(1).max(dim=1).values - ratio.flatten(1).min(dim=1).values
    assert (spread < 1e-3).all()
    assert len({round(v, 4) for v in ratio[:, 0, 0, 0].tolist()}) == 3  # differs per image


def test_group_std_is_each_groups_own_spread():
    from semigen.generation.nets import group_std
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(6, 4, 3, 3, generator=g)
    maps[3:] = maps[3]  # the second group: three copies of one image
    spread = group_std(maps, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert spread.shape == (6, 1, 3, 3)
    expected = maps[:3].std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(spread[0, 0, 0, 0], expected, atol=1e-4, rtol=1e-4)
    assert torch.all(spread[3:] < 1e-3) and torch.all(spread[:3] > 0.5)
    # groups are labels, not positions: the same two groups interleaved
    order = torch.tensor([0, 3, 1, 4, 2, 5])
    torch.testing.assert_close(group_std(maps[order], torch.tensor([0, 1, 0, 1, 0, 1])),
                               spread[order])


def test_minibatch_std_lets_the_discriminator_see_a_collapsed_class():
    """With `minibatch_std`, the same image scores differently when its class's other images
    in the batch are copies of it than when they differ; without it, it cannot."""
    torch.manual_seed(0)
    varied = torch.randn(4, 1, 8, 8)
    collapsed = varied[:1].repeat(4, 1, 1, 1)
    y = torch.zeros(4, dtype=torch.long)
    for minibatch_std in (True, False):
        d = Discriminator(3, (8, 8, 1), width=8, minibatch_std=minibatch_std).eval()
        apart = d(varied, y)[0] - d(collapsed, y)[0]
        assert (apart.abs() > 1e-4) == minibatch_std
    # real and generated images in one pass are compared within their own group only
    d = Discriminator(3, (8, 8, 1), width=8, minibatch_std=True).eval()
    both = d(torch.cat([varied, collapsed]), torch.cat([y, y]),
             groups=torch.cat([y, y + 3]))
    torch.testing.assert_close(both[:4], d(varied, y))
    torch.testing.assert_close(both[4:], d(collapsed, y))


@pytest.mark.parametrize("space", ["pixels", "features"])
def test_a_gan_step_trains_with_either_mode_seeking_space(space):
    from types import SimpleNamespace

    from semigen.config import resolve
    from semigen.generation import gan
    gen = resolve(preset="tiny", overrides={"generate.seeking_space": space,
                                            "generate.minibatch_std": "true"}).generate
    model = gan.build(gen, 3, (8, 8, 1))
    fabric = SimpleNamespace(setup=lambda *objects: objects, backward=lambda loss: loss.backward())
    step = gan.trainer(model, gen, fabric)
    before = [p.detach().clone() for p in model.objects["generator"].parameters()]
    logged = step(torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8) % 3,
                  torch.Generator().manual_seed(0))
    assert torch.isfinite(logged["mode_seeking"]) and logged["mode_seeking"] > 0
    after = list(model.objects["generator"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
