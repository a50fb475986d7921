"""The generation backends, one module each, as a table: name -> module.

Every backend module offers the same few names:

- ``MODEL_FIELDS``: the ``generate.*`` fields that decide its networks (a run continues only
  with the same values);
- ``SAMPLING_FIELDS``: the entries of its generator's ``settings()`` that, besides the weights
  and the seed, decide an image (the manifest of ``semigen sample`` records them);
- ``build(gen, num_classes, shape) -> Trainable``: its networks, EMA and optimizers;
- ``trainer(model, gen, fabric) -> step``: one training step, ``step(x, y, g) -> losses``;
- ``sync(model, fabric)``: what DDP ranks average before grids and checkpoints;
- ``from_checkpoint(state, use_ema, guidance, sample_steps)``: its generator rebuilt from a
  checkpoint alone, an ``nn.Module`` with ``sample(labels, seeds)`` and ``settings()``;
- ``describe(settings) -> str``: how the report names it;
- ``VARIES_REAL_IMAGES``: whether its generator's ``sample`` also takes ``start`` images and a
  ``strength`` and makes variations of them (a joint round can then start from the true
  labeled images).

Adding a backend is one module with these names and one entry here (and its quick budget in
``config.BACKEND_BUDGET``, the home of defaults)."""

from __future__ import annotations

from . import diffusion, gan

BACKENDS = {"gan": gan, "diffusion": diffusion}
