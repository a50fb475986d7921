"""The conditional GAN backend: its training loop, readable top to bottom in `train`.

The generator and the discriminator (`nets.py`) learn from class-balanced batches of the mode's
training set (`data.py`) with the hinge loss, an auxiliary class loss and DiffAugment
(`losses.py`). The EMA generator samples: per-class grids with fixed seeds go to
``RUN/samples/`` at every checkpoint.

A joint round (``round_index`` >= 1) refines the previous round's networks (``init``) on the
re-estimated pseudo-labels for ``fit.generate_steps`` steps, as its own stage ``generate-r<N>``."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint, runtime
from ..config import Config, validate
from ..rundir import RunDir, check_continuation
from ..training import ema_weights, make_ema, payload, sync_buffers
from . import STAGE, losses, save_grid
from .data import finish_training, image_batches, open_training_set, resume_or_start
from .nets import Discriminator, Generator


def build_networks(num_classes: int, shape: tuple[int, int, int], z_dim: int, width: int,
                   classify: bool = False):
    """Generator and discriminator (with `classify`, an auxiliary classifier too) in
    channels-last layout, as the classifier (about a quarter faster on a CPU)."""
    nets = (Generator(num_classes, shape, z_dim=z_dim, width=width),
            Discriminator(num_classes, shape, width=width, classify=classify))
    return tuple(net.to(memory_format=torch.channels_last) for net in nets)


def generator_from_checkpoint(state: dict, use_ema: bool = True) -> Generator:
    """The generator of a checkpoint, from the checkpoint alone, in eval mode."""
    with checkpoint.reading(state, "generator"):
        net = Generator(**state["net"]).to(memory_format=torch.channels_last)
        net.load_state_dict(ema_weights(state["ema"]) if use_ema else state["generator"])
    return net.eval()


def train(cfg: Config, round_index: int = 0, init: Path | None = None) -> dict:
    """Train the conditional GAN of ``cfg.generate.mode`` into ``cfg.run.out``; a joint round
    continues from the generator checkpoint `init`."""
    validate(cfg)
    gen = cfg.generate
    stage = checkpoint.stage_name(STAGE, round_index)
    total_steps = gen.steps if round_index == 0 else cfg.fit.generate_steps
    changed = check_continuation(cfg)  # refuse another data set's run before writing
    rt = runtime.start(cfg.runtime)
    with RunDir(cfg.run.out, writer=rt.is_writer) as run:
        ckpts = checkpoint.Checkpointer(run.checkpoints / stage, cfg.run.keep_last)
        resume_from = ckpts.resume_path(cfg.run.resume)

        data, images, labels, weights = open_training_set(cfg, run, rt, stage, round_index,
                                                          changed)
        num_classes = len(data.classes)
        net_args = {"num_classes": num_classes, "image_shape": data.shape,
                    "z_dim": gen.z_dim, "width": gen.width}
        classify = gen.class_loss > 0
        generator, discriminator = build_networks(num_classes, data.shape, gen.z_dim, gen.width,
                                                  classify)
        ema = make_ema(generator, gen.ema_decay)
        opt_g = torch.optim.Adam(generator.parameters(), lr=gen.lr, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=gen.lr, betas=(0.0, 0.999))
        start_step = resume_or_start(cfg, run, rt, ckpts, stage, "gan", resume_from, init,
                                     {"generator": generator, "discriminator": discriminator,
                                      "ema": ema, "opt_g": opt_g, "opt_d": opt_d})
        g_model, opt_g = rt.fabric.setup(generator, opt_g)
        d_model, opt_d = rt.fabric.setup(discriminator, opt_d)
        ema.to(rt.device)
        streams = 4 * round_index  # each round draws batches and noise of its own
        batches = image_batches(images, labels, weights, gen.batch_size,
                                rt.data_seed(streams + 2), start_step, rt.device)

        def augment(x, g):
            return losses.diff_augment(x, g) if gen.diff_augment else x

        for step in runtime.progress(range(start_step, total_steps), initial=start_step,
                                     total=total_steps, desc=f"{stage} ({gen.mode})",
                                     unit="step",
                                     disable=not (rt.is_writer and cfg.run.progress)):
            x, y = next(batches)
            # All of this step's noise comes from (seed, rank, step): resumable exactly.
            g = torch.Generator(rt.device).manual_seed(runtime.mix_seed(rt.data_seed(streams + 3),
                                                                   step))
            z = torch.randn(len(y), gen.z_dim, generator=g, device=rt.device)
            with torch.no_grad():
                fake = g_model(z, y)
            # real and generated images in one pass: half the discriminator's calls
            d_loss, d_class = losses.discriminator_loss(
                d_model(augment(torch.cat([x, fake.to(x.dtype)]), g), torch.cat([y, y])), y,
                gen.class_loss)
            opt_d.zero_grad(set_to_none=True)
            rt.fabric.backward(d_loss)
            opt_d.step()

            z = torch.randn(len(y), gen.z_dim, generator=g, device=rt.device)
            g_loss, g_class = losses.generator_loss(d_model(augment(g_model(z, y), g), y), y,
                                                    gen.class_loss)
            opt_g.zero_grad(set_to_none=True)
            rt.fabric.backward(g_loss)
            opt_g.step()
            ema.update_parameters(generator)

            done = step + 1
            if done % cfg.run.log_every == 0 or done == total_steps:
                classes = {} if d_class is None else {"d_class_loss": d_class.item(),
                                                      "g_class_loss": g_class.item()}
                run.stats(stage, done, d_loss=d_loss.item(), g_loss=g_loss.item(), **classes)
            if done % gen.sample_every == 0 or done % cfg.run.checkpoint_every == 0 \
                    or done == total_steps:
                sync_buffers(rt.fabric, generator)
                sync_buffers(rt.fabric, discriminator)
                sync_buffers(rt.fabric, ema.module)
                if rt.is_writer:
                    save_grid(ema.module, num_classes, gen.grid_per_class,
                              run.path / "samples" / f"{stage}-step-{done:08d}.png")
            if done % cfg.run.checkpoint_every == 0 or done == total_steps:
                if rt.is_writer:
                    ckpts.save(payload(
                        "generator", stage, gen.mode, net_args, data.classes, data.shape,
                        cfg.to_dict(), backend="gan", generator=generator.state_dict(),
                        discriminator=discriminator.state_dict(), ema=ema.state_dict(),
                        opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict()), done)
                rt.fabric.barrier()

        return finish_training(cfg, run, rt, stage, generator, labels, num_classes,
                               total_steps)
