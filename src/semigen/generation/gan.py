"""The conditional GAN backend: its networks and one training step, readable top to bottom in
`trainer`.

The generator and the discriminator (`nets.py`) learn from class-balanced batches of the mode's
training set (`data.py`) with the hinge loss, optionally an auxiliary class loss and a
mode-seeking term, and DiffAugment (`losses.py`). The EMA generator samples. The loop around
the step (resume, logging, grids, checkpoints) is `train.py`'s, the same for every backend."""

from __future__ import annotations

import torch

from .. import checkpoint
from ..training import Trainable, ema_weights, make_ema, sync_buffers
from . import losses
from .nets import Discriminator, Generator

# generate.* fields that decide the networks: a run continues only with the same values
MODEL_FIELDS = ("z_dim", "width", "minibatch_std")
# what besides the weights and the seed decides an image (for the manifest of `sample`)
SAMPLING_FIELDS = ()
# a GAN draws from noise alone: no variations of a given image
VARIES_REAL_IMAGES = False


def describe(settings: dict) -> str:
    """How the report names a generator of this backend, from its `settings()`."""
    return "GAN"


def build_networks(num_classes: int, shape: tuple[int, int, int], z_dim: int, width: int,
                   classify: bool = False, minibatch_std: bool = False):
    """Generator and discriminator (with `classify`, an auxiliary classifier too) in
    channels-last layout, as the classifier (about a quarter faster on a CPU)."""
    nets = (Generator(num_classes, shape, z_dim=z_dim, width=width),
            Discriminator(num_classes, shape, width=width, classify=classify,
                          minibatch_std=minibatch_std))
    return tuple(net.to(memory_format=torch.channels_last) for net in nets)


def build(gen, num_classes: int, shape: tuple[int, int, int]) -> Trainable:
    """The networks, their EMA and their optimizers, before any training."""
    generator, discriminator = build_networks(num_classes, shape, gen.z_dim, gen.width,
                                              classify=gen.class_loss > 0,
                                              minibatch_std=gen.minibatch_std)
    return Trainable(
        {"num_classes": num_classes, "image_shape": shape, "z_dim": gen.z_dim,
         "width": gen.width},
        {"generator": generator, "discriminator": discriminator,
         "ema": make_ema(generator, gen.ema_decay),
         "opt_g": torch.optim.Adam(generator.parameters(), lr=gen.lr, betas=(0.0, 0.999)),
         "opt_d": torch.optim.Adam(discriminator.parameters(), lr=gen.lr, betas=(0.0, 0.999))})


def trainer(model: Trainable, gen, fabric):
    """One training step, ``step(x, y, g) -> losses to log``: the discriminator, then the
    generator, then the EMA; all noise from the generator `g`."""
    generator, discriminator, ema = (model.objects[k] for k in ("generator", "discriminator",
                                                                 "ema"))
    num_classes = model.net_args["num_classes"]
    g_model, opt_g = fabric.setup(generator, model.objects["opt_g"])
    d_model, opt_d = fabric.setup(discriminator, model.objects["opt_d"])

    def augment(x, g):
        return losses.diff_augment(x, g) if gen.diff_augment else x

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> dict:
        z = torch.randn(len(y), gen.z_dim, generator=g, device=x.device)
        with torch.no_grad():
            fake = g_model(z, y)
        # real and generated images in one pass: half the discriminator's calls; a class's
        # real images and its generated ones are two groups (minibatch_std)
        classes = torch.cat([y, y])
        d_loss, d_class = losses.discriminator_loss(
            d_model(augment(torch.cat([x, fake.to(x.dtype)]), g), classes,
                    groups=torch.cat([y, y + num_classes])), y, gen.class_loss)
        opt_d.zero_grad(set_to_none=True)
        fabric.backward(d_loss)
        opt_d.step()

        z = torch.randn(len(y), gen.z_dim, generator=g, device=x.device)
        seeking = {}
        pairs = gen.mode_seeking and len(y) >= 2
        if pairs:  # images i and i + n/2 of one class, for the mode-seeking term
            y = torch.cat([y[:len(y) // 2]] * 2)
            z = z[:len(y)]
        fake = g_model(z, y)
        if pairs and gen.seeking_space == "features":
            # the augmented images for the loss, the plain ones for how far apart they are
            output, features = d_model(torch.cat([augment(fake, g), fake]), torch.cat([y, y]),
                                       groups=torch.cat([y, y + num_classes]),
                                       with_features=True)
            output = tuple(o[:len(y)] for o in output) if isinstance(output, tuple) \
                else output[:len(y)]
            apart = features[len(y):]
            apart = apart / apart.abs().mean().detach()  # a scale the weight can be set in
        else:
            output, apart = d_model(augment(fake, g), y), fake
        g_loss, g_class = losses.generator_loss(output, y, gen.class_loss)
        if pairs:
            seeking["mode_seeking"] = losses.mode_seeking(apart, z)
            g_loss = g_loss + gen.mode_seeking * seeking["mode_seeking"]
        opt_g.zero_grad(set_to_none=True)
        fabric.backward(g_loss)
        opt_g.step()
        ema.update_parameters(generator)
        classes = {} if d_class is None else {"d_class_loss": d_class, "g_class_loss": g_class}
        return {"d_loss": d_loss, "g_loss": g_loss, **classes, **seeking}

    return step


def sync(model: Trainable, fabric) -> None:
    """Average the BatchNorm statistics over DDP ranks before grids and checkpoints."""
    for name in ("generator", "discriminator"):
        sync_buffers(fabric, model.objects[name])
    sync_buffers(fabric, model.objects["ema"].module)


def from_checkpoint(state: dict, use_ema: bool = True, guidance: float | None = None,
                    sample_steps: int | None = None) -> Generator:
    """The generator of a checkpoint, from the checkpoint alone, in eval mode (a GAN has no
    guidance or solver steps: they are ignored)."""
    with checkpoint.reading(state, "generator"):
        net = Generator(**state["net"]).to(memory_format=torch.channels_last)
        net.load_state_dict(ema_weights(state["ema"]) if use_ema else state["generator"])
    return net.eval()
