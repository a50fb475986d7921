"""(3) What a joint round gives its classifier: generated images of every class, chosen among
candidate sets (samples at each guidance, or variations of the labeled images) by what they
teach (`evaluation.teaching`), less the classes the labeled images contradict."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import checkpoint
from .. import generation as generate_stage
from ..config import Config
from ..evaluation.teaching import classification_accuracy_score, contradicted_classes, ranking
from ..labeling import nets as label_nets
from ..labeling import represent
from ..labeling.predict import predict
from ..run import Run
from ..runtime import mix_seed, pick_accelerator

log = logging.getLogger("semigen")
OVERSAMPLE = 4  # candidates generated per kept image when generated images are filtered


# The candidate sets of generated images a round scores by what they teach, and chooses
# among (``fit.choose_images``): the backend's samples at each classifier-free guidance (a
# GAN has none; DPT found mild guidance best for this use). Variations of the labeled images
# (``fit.variation_strength``) are not among them: a probe scored on the images the variations
# were made from would favour near-copies.
GUIDANCES = (0.0, 0.4, 1.0, 2.0)


def candidates(cfg: Config, backend: str) -> list[tuple[str, float | None]]:
    """("sample", guidance or None) for `backend`, or the one ("vary", strength) set."""
    if cfg.fit.variation_strength > 0:  # validate() allows it for a backend that varies
        return [("vary", cfg.fit.variation_strength)]
    guided = "guidance" in generate_stage.BACKENDS[backend].SAMPLING_FIELDS
    if not cfg.fit.choose_images or not guided:
        return [("sample", None)]
    return [("sample", g) for g in GUIDANCES]


def describe_candidate(how: str, value: float | None) -> str:
    if how == "vary":
        return f"variations of the labeled images at strength {value:g}"
    return "samples" + ("" if value is None else f" at guidance {value:g}")


def make_images(state: dict, data, how: str, value: float | None, per_class: int, seed: int,
                device: str) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` images of every class (uint8 N x H x W x C) from the generator checkpoint
    `state`, as candidate (`how`, `value`) asks, and their classes; image i from its own seed,
    so a resumed round sees the very same images."""
    generator = generate_stage.from_checkpoint(
        state, guidance=value if how == "sample" else None).to(device)
    num_classes = len(state["classes"])
    if how == "vary":
        images, labels = generate_stage.variations_per_class(
            generator, torch.from_numpy(data.labeled.images).permute(0, 3, 1, 2),
            torch.from_numpy(data.labeled.labels), num_classes, per_class, value, seed)
    else:
        images, labels = generate_stage.generate_per_class(generator, num_classes, per_class,
                                                           seed)
    return np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()), labels.numpy()


def round_images(run: Run, r: int):
    """Round r's generated training images, from round r-1's generator, and what they teach;
    none with ``fit.synthetic_ratio`` 0, the control that tells what the rounds' extra training
    steps give without them. With ``fit.choose_images`` each candidate set (`candidates`) is
    scored by its classification accuracy score on the labeled images, in the features of the
    run's representation (else round r-1's classifier), and the best one is kept. With
    ``fit.synthetic_min_confidence`` > 0 only images that round r-1's classifier recognises as
    their class are kept."""
    cfg, data = run.cfg, run.data
    if cfg.fit.synthetic_ratio == 0:
        return None
    device = pick_accelerator(cfg.runtime.device)
    per_class, gate = cfg.fit.synthetic_per_class, cfg.fit.synthetic_min_confidence
    state = checkpoint.load(run.layout.checkpoint(checkpoint.stage_name("generate", r - 1)))
    classifier = label_nets.from_checkpoint(checkpoint.load(
        run.layout.checkpoint(checkpoint.stage_name("label", r - 1))))
    features = (represent.load_representation(run.path, cfg, data, device)
                or classifier.features.to(device))
    labeled = label_nets.embed(features, data.labeled.images, device)
    options = candidates(cfg, generate_stage.backend_of(state))
    scored, best = [], None
    for how, value in options:
        images, labels = make_images(state, data, how, value,
                                     per_class * (OVERSAMPLE if gate > 0 else 1),
                                     mix_seed(cfg.runtime.seed, 100 + r), device)
        if gate > 0:
            images, labels = keep_recognised(images, labels, classifier, gate, per_class)
        made = label_nets.embed(features, images, device)
        found = classification_accuracy_score(made, labels, labeled, data.labeled.labels)
        if how == "vary":  # scored on their own sources: not a measure of what they teach
            found = {"cas": None, "cas_nll": None}
        scored.append({"images": describe_candidate(how, value), "how": how, "value": value,
                       "kept": len(labels), **found})
        if best is None or ranking(found) > ranking(best[2]):
            best = images, labels, scored[-1], made
    images, labels, chosen, made = best
    judged = chosen["how"] != "vary" and cfg.fit.drop_contradicted
    dropped = contradicted_classes(made, labels, labeled, data.labeled.labels) if judged else []
    if dropped:  # classes the generator learned confused: their images would teach the confusion
        keep = ~np.isin(labels, dropped)
        images, labels = images[keep], labels[keep]
    counts = np.bincount(labels, minlength=len(data.classes))
    report_choice(run, r, scored, chosen, dropped, counts, len(labels))
    if not len(labels):
        log.warning(f"round {r}: no generated image passed; the round trains without them")
        return None
    return images, labels


def report_choice(run: Run, r: int, scored: list[dict], chosen: dict, dropped: list[int],
                  counts: np.ndarray, kept: int) -> None:
    """Round r's candidates, its choice and the classes left out: into the log and
    metrics.json (``images-r<r>``)."""
    records, classes = run.records, run.data.classes
    for row in scored:
        records.info(f"round {r}: {row['images']}: {row['kept']} images, classification "
                     f"accuracy score {_percent(row['cas'])} on the labeled images")
    if dropped:
        records.info(f"round {r}: no generated images of "
                     f"{', '.join(classes[c] for c in dropped)}: the labeled images contradict "
                     "them (a probe trained on the generated images gives a labeled image of "
                     "one of these classes another of them)")
    records.info(f"round {r}: the classifier is given {chosen['images']} "
                 f"({kept} images, per class {counts.tolist()})")
    records.update_metrics(f"images-r{r}", {
        "candidates": scored, "chosen": chosen["images"], "cas_labeled": chosen["cas"],
        "dropped_classes": [classes[c] for c in dropped]})


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@torch.no_grad()
def keep_recognised(images: np.ndarray, labels: np.ndarray, classifier: torch.nn.Module,
                    min_confidence: float, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The generated images (uint8 N x H x W x C) that `classifier` gives their own class with
    at least `min_confidence`: the first `per_class` of each class, in seed order."""
    confidence, predicted = predict(classifier, images, "cpu").max(1)
    ok = ((predicted.numpy() == labels) & (confidence.numpy() >= min_confidence))
    keep = np.concatenate([np.flatnonzero(ok & (labels == c))[:per_class]
                           for c in np.unique(labels)])
    return images[keep], labels[keep]
