"""(2) generate: class-conditional image generation (issue #4; the training loop, `sample` and
the image metrics are still to come)."""
