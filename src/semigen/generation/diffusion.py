"""The diffusion backend: a class-conditional UNet (diffusers' `UNet2DModel`, one class
embedding per class plus one for "no class") trained with the DDPM objective in its
v-prediction form on a cosine noise schedule, and sampled with DPM-Solver++ and classifier-free
guidance (Ho & Salimans 2021). One training step reads top to bottom in `trainer`; the loop
around it is `train.py`'s, the same for every backend.

Guidance ``w`` mixes the model's two predictions: ``(1 + w) * conditional - w * unconditional``;
0 is the conditional model alone. The unconditional one is learnt by hiding the class of a
``generate.label_dropout`` share of the training images. Sampling is deterministic: image i
starts from the noise of seed i, and the solver adds none, so it is the same whatever the batch.

With ``generate.diffusion_form edm`` the same UNet is trained and sampled in the EDM
formulation instead (Karras et al. 2022): noise levels drawn log-normally around where images
are learnt, inputs and outputs scaled so that the network always sees and predicts unit-size
signals, and DPM-Solver++ on EDM's noise levels to sample.

Everything random in a training step comes from (seed, rank, step): a resumed run takes the
very steps of an uninterrupted one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint
from ..training import Trainable, ema_weights, make_ema
from .sampling import noise_from_seeds

# The noise schedule the model is trained on and sampled with: cosine ("squaredcos_cap_v2",
# Nichol & Dhariwal 2021) keeps the small images' structure longer than the linear one.
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
PREDICTION = "v_prediction"  # better behaved than epsilon at few solver steps
# generate.diffusion_form -> what the network predicts ("edm": EDM's preconditioned target)
FORMS = {"ddpm-v": PREDICTION, "edm": "edm"}
# EDM's settings (Karras et al. 2022, table 1): the data's scale, and the log-normal
# distribution of training noise levels
SIGMA_DATA, LOG_SIGMA_MEAN, LOG_SIGMA_STD = 0.5, -1.2, 1.2
# EDM's noise input is log(sigma) / 4 (about -1.5 to 1); the UNet's sinusoidal embedding was
# made for timesteps 0-1000, so it gets that times 1000
EDM_NOISE_SCALE = 1000.0
# On a CPU the UNet's activations for many images at once fall out of the caches: 2 cores drew
# 13.8 images per second in batches of 100 and 8.1 in batches of 400 (BENCHMARKS.md, speed),
# so a CPU samples a larger batch 100 images at a time (a GPU, all at once).
CPU_SAMPLE_BATCH = 100
# generate.* fields that decide the network: a run continues only with the same values
MODEL_FIELDS = ("width", "diffusion_form")
# what besides the weights and the seed decides an image (for the manifest of `sample`)
SAMPLING_FIELDS = ("guidance", "sample_steps")
# `Diffusion.sample` noises given images part of the way and denoises them (SDEdit)
VARIES_REAL_IMAGES = True


def describe(settings: dict) -> str:
    """How the report names a generator of this backend, from its `settings()`."""
    return (f"diffusion, guidance {settings['guidance']:g}, {settings['sample_steps']} solver "
            "steps")


def halvings(height: int, width: int) -> int:
    """How many times the UNet halves the image: while both sides stay even and at least 4 px
    after halving, at most 4 (28 px: 28 -> 14 -> 7)."""
    n = 0
    while n < 4 and height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= 4:
        height, width, n = height // 2, width // 2, n + 1
    return n


def unet_config(num_classes: int, image_shape, width: int) -> dict:
    """The UNet's arguments: `width` channels at full resolution, doubling per halving up to 4x
    (the GAN generator's proportions), ResNet blocks with self-attention only in the middle, at
    the smallest map; one class embedding more than there are classes: "no class"."""
    h, w, c = image_shape
    levels = halvings(h, w) + 1
    return {"sample_size": [h, w], "in_channels": c, "out_channels": c,
            "block_out_channels": [width * min(2 ** i, 4) for i in range(levels)],
            "down_block_types": ["DownBlock2D"] * levels, "up_block_types": ["UpBlock2D"] * levels,
            "layers_per_block": 1, "norm_num_groups": _groups(width),
            "attention_head_dim": 8, "num_class_embeds": num_classes + 1}


def _groups(width: int) -> int:
    """GroupNorm's groups: 8, or fewer where `width` is not a multiple of 8."""
    g = 8
    while width % g:
        g //= 2
    return g


class Diffusion(nn.Module):
    """A class-conditional UNet and how it samples (`guidance`, `sample_steps`)."""

    def __init__(self, num_classes: int, unet: dict, prediction: str = PREDICTION,
                 guidance: float = 0.0, sample_steps: int = 20):
        super().__init__()
        from diffusers import UNet2DModel
        self.num_classes, self.prediction = num_classes, prediction
        self.guidance, self.sample_steps = guidance, sample_steps
        self.image_shape = tuple(unet["sample_size"]) + (unet["in_channels"],)
        self.unet = UNet2DModel(**unet)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor
                ) -> torch.Tensor:
        """The model's prediction; label ``num_classes`` means "no class"."""
        if self.prediction == "edm":
            timesteps = timesteps * EDM_NOISE_SCALE
        return self.unet(noisy, timesteps, class_labels=labels).sample

    def settings(self) -> dict:
        """How it samples, for the metrics that judge its images."""
        return {"backend": "diffusion", "guidance": self.guidance,
                "sample_steps": self.sample_steps, "sampler": "DPM-Solver++ (2nd order)"
                + (" on EDM's noise levels" if self.prediction == "edm" else "")}

    def guided(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.guidance == 0:
            return self(x, t, labels)
        no_class = torch.full_like(labels, self.num_classes)
        conditional, unconditional = self(torch.cat([x, x]), t,
                                          torch.cat([labels, no_class])).chunk(2)
        return conditional + self.guidance * (conditional - unconditional)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, seeds: list[int], start: torch.Tensor | None = None,
               strength: float = 1.0) -> torch.Tensor:
        """Images of `labels` in [-1, 1], image i from the noise of seeds[i] alone. With `start`
        (images in [-1, 1]), each is noised to `strength` of the way (0: untouched, 1: pure
        noise) and denoised again towards its label (SDEdit, Meng et al. 2022): a variation of
        a real image whose class is the one it was given."""
        device = next(self.parameters()).device
        if device.type == "cpu" and len(labels) > CPU_SAMPLE_BATCH:
            return torch.cat([self.sample(
                labels[i:i + CPU_SAMPLE_BATCH], seeds[i:i + CPU_SAMPLE_BATCH],
                None if start is None else start[i:i + CPU_SAMPLE_BATCH], strength)
                for i in range(0, len(labels), CPU_SAMPLE_BATCH)])
        solver = sampler(self.prediction)
        solver.set_timesteps(self.sample_steps, device=device)
        h, w, c = self.image_shape
        noise = noise_from_seeds(seeds, c, h, w).to(device)
        timesteps = solver.timesteps
        if start is None:
            x = noise * solver.init_noise_sigma
        else:
            begin = min(len(timesteps) - 1, round(len(timesteps) * (1 - strength)))
            timesteps = timesteps[begin:]
            solver.set_begin_index(begin)
            x = solver.add_noise(start.to(device), noise, timesteps[:1])
        labels = labels.to(device)
        for t in timesteps:  # EDM scales the network's input by the noise level; DDPM does not
            x = solver.step(self.guided(solver.scale_model_input(x, t), t, labels), t,
                            x).prev_sample
        return x.clamp(-1, 1)


def training_schedule(prediction: str = PREDICTION):
    """The forward (noising) process of training: DDPM's."""
    from diffusers import DDPMScheduler
    return DDPMScheduler(**SCHEDULE, prediction_type=prediction)


def sampler(prediction: str = PREDICTION):
    """A fresh deterministic solver on the training schedule (it keeps state while sampling)."""
    if prediction == "edm":  # diffusers' "epsilon" is EDM's own preconditioning
        from diffusers import EDMDPMSolverMultistepScheduler
        return EDMDPMSolverMultistepScheduler(sigma_data=SIGMA_DATA, prediction_type="epsilon",
                                              algorithm_type="dpmsolver++", solver_order=2)
    from diffusers import DPMSolverMultistepScheduler
    return DPMSolverMultistepScheduler(**SCHEDULE, prediction_type=prediction,
                                       algorithm_type="dpmsolver++", solver_order=2)


def ddpm_example(x: torch.Tensor, noise: torch.Tensor, g: torch.Generator, schedule,
                 prediction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(network input, timesteps, target) for clean images `x`: DDPM's, at a uniform time."""
    t = torch.randint(0, schedule.config.num_train_timesteps, (len(x),), generator=g,
                      device=x.device)
    target = schedule.get_velocity(x, noise, t) if prediction == "v_prediction" else noise
    return schedule.add_noise(x, noise, t), t, target


def edm_example(x: torch.Tensor, noise: torch.Tensor, g: torch.Generator, schedule=None,
                prediction: str = "edm") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(network input, noise input, target) for clean images `x` in EDM's preconditioning: the
    network F sees the noisy image scaled to unit variance and predicts (x - c_skip * noisy) /
    c_out, so that c_skip * noisy + c_out * F is the clean image; its plain squared error is
    EDM's weighted loss."""
    log_sigma = LOG_SIGMA_MEAN + LOG_SIGMA_STD * torch.randn(len(x), generator=g,
                                                             device=x.device)
    sigma = log_sigma.exp()[:, None, None, None]
    noisy = x + sigma * noise
    scale = (sigma ** 2 + SIGMA_DATA ** 2).sqrt()
    c_skip, c_out = SIGMA_DATA ** 2 / scale ** 2, sigma * SIGMA_DATA / scale
    return noisy / scale, log_sigma / 4, (x - c_skip * noisy) / c_out


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction.float(), target.float())


def from_checkpoint(state: dict, use_ema: bool = True, guidance: float | None = None,
                              sample_steps: int | None = None) -> Diffusion:
    """The diffusion model of a checkpoint, from the checkpoint alone, in eval mode; it samples
    with `guidance` and `sample_steps` (None: those of the config it was trained with)."""
    with checkpoint.reading(state, "diffusion generator"):
        trained = state["config"]["generate"]
        net = Diffusion(**state["net"],
                        guidance=trained["guidance"] if guidance is None else guidance,
                        sample_steps=trained["sample_steps"] if sample_steps is None
                        else sample_steps)
        net.load_state_dict(ema_weights(state["ema"]) if use_ema else state["generator"])
    return net.eval()


def build(gen, num_classes: int, shape: tuple[int, int, int]) -> Trainable:
    """The model, its EMA and its optimizer, before any training."""
    net_args = {"num_classes": num_classes, "prediction": FORMS[gen.diffusion_form],
                "unet": unet_config(num_classes, shape, gen.width)}
    model = Diffusion(**net_args, guidance=gen.guidance, sample_steps=gen.sample_steps)
    return Trainable(net_args, {"generator": model, "ema": make_ema(model, gen.ema_decay),
                                "optimizer": torch.optim.Adam(model.parameters(), lr=gen.lr)})


def hide_classes(labels: torch.Tensor, share: float, num_classes: int, g: torch.Generator
                 ) -> torch.Tensor:
    """`labels` with a `share` of them replaced by "no class" (index `num_classes`), drawn
    from `g`: what the unconditional prediction of guidance learns from."""
    hidden = torch.rand(len(labels), generator=g, device=labels.device) < share
    return torch.where(hidden, torch.full_like(labels, num_classes), labels)


def trainer(model: Trainable, gen, fabric):
    """One training step, ``step(x, y, g) -> losses to log``: noise a batch at random times,
    predict, step, update the EMA; all noise from the generator `g`."""
    net, ema = model.objects["generator"], model.objects["ema"]
    fabric_model, optimizer = fabric.setup(net, model.objects["optimizer"])
    edm = net.prediction == "edm"
    schedule = None if edm else training_schedule(net.prediction)
    example = edm_example if edm else ddpm_example

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> dict:
        x = x.contiguous()  # the UNet's GroupNorm and attention prefer the plain layout
        noise = torch.randn(x.shape, generator=g, device=x.device)
        noisy, t, target = example(x, noise, g, schedule, net.prediction)
        shown = hide_classes(y, gen.label_dropout, net.num_classes, g)
        loss = denoising_loss(fabric_model(noisy, t, shown), target)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        ema.update_parameters(net)
        return {"denoising_loss": loss}

    return step


def sync(model: Trainable, fabric) -> None:
    """Nothing to average over DDP ranks: a UNet has no running statistics."""
