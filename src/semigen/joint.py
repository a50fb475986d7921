"""(3) joint: `semigen fit`, the whole loop as a sequence of resumable stages.

    label -> generate -> for r in 1..R: label-r<r> -> generate-r<r> -> evaluate -> report

Round r's classifier starts from round r-1's and sees, beside the real labeled images,
``fit.synthetic_per_class`` images of each class from round r-1's generator; it then labels the
unlabeled images again (``pseudo_labels.csv``, round r), and the generator is refined on those.
Each stage is the ordinary training loop with its own checkpoints (``checkpoints/<stage>/``);
a stage whose entry is in metrics.json is done and skipped, an unfinished one resumes from its
latest checkpoint, so running the same `fit` again continues where it stopped, and a larger
``--rounds`` adds rounds to a finished fit. The baselines (labels-only and, for built-ins,
all-labels classifiers on the same budget) are runs of their own under ``RUN/baselines/``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from . import generation as generate_stage
from .config import BUILTINS, Config, make_config, validate
from .data import load_dataset
from .labeling import nets as label_nets
from .labeling import represent
from .labeling import train as label_stage
from .labeling.predict import predict
from .rundir import RunDir, check_continuation, writing
from .rundir import read_metrics as finished
from .runtime import is_main_process, leave_process_group, mix_seed, pick_accelerator

log = logging.getLogger("semigen")
OVERSAMPLE = 4  # candidates generated per kept image when generated images are filtered
# Labels per class up to which a joint round measurably raised the classifier over round 0 and
# the control without generated images (Fashion-MNIST, BENCHMARKS.md "Joint rounds": +2.3
# points at 1; at 2 the round fell 0.4 below round 0, at 10 it added nothing the control did
# not).
ROUNDS_PAY_UP_TO = 1


def planned_rounds(cfg: Config, fewest_labels: int) -> tuple[int, str | None]:
    """How many rounds a fit runs (``fit.rounds``, or for -1 one where the class with the
    fewest labeled images has at most ROUNDS_PAY_UP_TO), and a sentence for the log where the
    rounds are not expected to pay."""
    pays = fewest_labels <= ROUNDS_PAY_UP_TO
    rounds = cfg.fit.rounds if cfg.fit.rounds >= 0 else int(pays)
    if pays:
        return rounds, None
    why = (f"the class with the fewest labels has {fewest_labels} labeled images; joint rounds "
           f"were measured to raise the classifier only up to {ROUNDS_PAY_UP_TO} per class "
           "(BENCHMARKS.md, \"Joint rounds\")")
    return rounds, (f"{why}: no round is run (--rounds N runs them anyway)" if rounds == 0
                    else f"{why}: the {rounds} round(s) asked for may not pay")


def baseline_config(cfg: Config, mode: str) -> Config:
    """The run's config for its `mode` baseline classifier, a run of its own under
    ``RUN/baselines/<mode>``."""
    return make_config(base=cfg, label__mode=mode,
                       run__out=str(Path(cfg.run.out) / "baselines" / mode))


def fit(cfg: Config) -> dict | None:
    """Run (or continue) the whole loop into ``cfg.run.out``; return metrics.json's ``fit``
    (None on the ranks other than 0 of a DDP fit: they only train)."""
    validate(cfg)
    label_stage.check_backbone(cfg)
    labels = load_dataset(cfg.data).labeled.labels
    rounds, caution = planned_rounds(cfg, int(np.bincount(labels).min()) if len(labels) else 0)
    cfg = make_config(base=cfg, fit__rounds=rounds)
    # refuse another data set's run, or another model's, before writing
    changed = check_continuation(cfg, label_stage.MODEL_FIELDS
                                 | generate_stage.model_fields(cfg.generate.backend))
    run_path = Path(cfg.run.out)
    label_stage.take_added_labels(cfg)  # labels added since the split: the stages train again
    with writing(run_path, is_main_process()):  # one writer across the fit's stages
        if changed and is_main_process():
            with RunDir(run_path) as run_dir:
                run_dir.note_continuation(changed)

        def stage(name: str, work, done: bool | None = None) -> None:
            """Run `work` unless the stage is done (by default: its entry is in metrics.json)."""
            if done is None:
                done = name in finished(run_path)
            if done:
                return
            if not is_main_process():  # a DDP rank other than 0 trains; rank 0 keeps the records
                return work()
            log.info(f"fit: stage {name}")
            start = time.perf_counter()
            work()
            with RunDir(run_path) as run_dir:  # wall time per stage, kept across resumes
                run_dir.update_metrics("seconds", finished(run_path).get("seconds", {}) | {
                    name: round(time.perf_counter() - start, 1)})

        stage("label", lambda: label_stage.train(cfg))
        if caution and is_main_process():
            with RunDir(run_path) as run_dir:
                run_dir.info(f"fit: {caution}")
        if cfg.fit.baselines:
            modes = ["labels-only"] + (["all-labels"] if cfg.data.source in BUILTINS else [])
            for mode in modes:
                stage(f"baseline-{mode}", lambda m=mode: _baseline(cfg, run_path, m))
        stage("generate", lambda: generate_stage.train(cfg))
        device = pick_accelerator(cfg.runtime.device)
        for r in range(1, cfg.fit.rounds + 1):
            previous = (checkpoint.stage_name("label", r - 1),
                        checkpoint.stage_name("generate", r - 1))
            stage(f"label-r{r}", lambda r=r, p=previous: label_stage.train(
                cfg, r, init=checkpoint.stage_path(run_path, p[0]),
                synthetic=_round_images(cfg, run_path, r, device)))
            stage(f"generate-r{r}", lambda r=r, p=previous: generate_stage.train(
                cfg, r, init=checkpoint.stage_path(run_path, p[1])))
        if not is_main_process():  # DDP: the other ranks trained beside rank 0, which evaluates
            leave_process_group()
            return None
        for r in range(cfg.fit.rounds + 1):
            stage(f"round-{r}", lambda r=r: _round_metrics(cfg, run_path, r))
        from .evaluation.run import evaluate_run
        # A fit continued with more rounds evaluates its new last round again.
        evaluated = len(finished(run_path).get("fit", {}).get("rounds", [])) == cfg.fit.rounds + 1
        stage("evaluate", lambda: evaluate_run(cfg),
              done=evaluated and "evaluate" in finished(run_path))
        summary = _summary(cfg, run_path) | ({"rounds_note": caution} if caution else {})
        with RunDir(run_path) as run_dir:
            run_dir.update_metrics("fit", summary)
            from .evaluation.report import write_report
            path = write_report(run_path)
            run_dir.info(f"fit done: report in {path}")
        return summary


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


def _round_images(cfg: Config, run_path: Path, r: int, device: str):
    """Round r's generated training images, from round r-1's generator, and what they teach;
    none with ``fit.synthetic_ratio`` 0, the control that tells what the rounds' extra training
    steps give without them. With ``fit.choose_images`` each candidate set (`candidates`) is
    scored by its classification accuracy score on the labeled images, in the features of the
    run's representation (else round r-1's classifier), and the best one is kept. With
    ``fit.synthetic_min_confidence`` > 0 only images that round r-1's classifier recognises as
    their class are kept."""
    if cfg.fit.synthetic_ratio == 0:
        return None
    from .evaluation.teaching import classification_accuracy_score, contradicted_classes, ranking
    per_class, gate = cfg.fit.synthetic_per_class, cfg.fit.synthetic_min_confidence
    state = checkpoint.load(checkpoint.stage_path(run_path,
                                                  checkpoint.stage_name("generate", r - 1)))
    classifier = label_nets.from_checkpoint(checkpoint.load(
        checkpoint.stage_path(run_path, checkpoint.stage_name("label", r - 1))))
    data = load_dataset(cfg.data)
    features = (represent.load_representation(run_path, cfg, data, device)
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
        if best is None or ranking(found) > ranking(best[3]):
            best = images, labels, found["cas"], scored[-1], made
    images, labels, cas, chosen, made = best
    judged = chosen["how"] != "vary" and cfg.fit.drop_contradicted
    dropped = contradicted_classes(made, labels, labeled, data.labeled.labels) if judged else []
    if dropped:  # classes the generator learned confused: their images would teach the confusion
        keep = ~np.isin(labels, dropped)
        images, labels = images[keep], labels[keep]
    counts = np.bincount(labels, minlength=len(data.classes))
    with RunDir(run_path, writer=is_main_process()) as run_dir:  # into log.txt as well
        for row in scored:
            run_dir.info(f"round {r}: {row['images']}: {row['kept']} images, classification "
                         f"accuracy score {_percent(row['cas'])} on the labeled images")
        if dropped:
            run_dir.info(f"round {r}: no generated images of "
                         f"{', '.join(data.classes[c] for c in dropped)}: the labeled images "
                         "contradict them (a probe trained on the generated images gives a "
                         "labeled image of one of these classes another of them)")
        run_dir.info(f"round {r}: the classifier is given {chosen['images']} "
                     f"({len(labels)} images, per class {counts.tolist()})")
        run_dir.update_metrics(f"images-r{r}", {
            "candidates": scored, "chosen": chosen["images"], "cas_labeled": cas,
            "dropped_classes": [data.classes[c] for c in dropped]})
    if not len(labels):
        log.warning(f"round {r}: no generated image passed; the round trains without them")
        return None
    return images, labels


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


def _baseline(cfg: Config, run_path: Path, mode: str) -> None:
    metrics = label_stage.train(baseline_config(cfg, mode))
    with RunDir(run_path, writer=is_main_process()) as run_dir:
        run_dir.update_metrics(f"baseline-{mode}", {k: v for k, v in metrics.items()
                                                   if not isinstance(v, list)})


def _round_metrics(cfg: Config, run_path: Path, r: int) -> None:
    """Round r's figures: its classifier's and pseudo-labels' (from its label stage) and its
    generator's image metrics at ``evaluate.round_per_class`` (where there are test images)."""
    done = finished(run_path)
    label_metrics = done[checkpoint.stage_name("label", r)]
    found = {"round": r, **{k: label_metrics.get(k) for k in (
        "test_accuracy", "test_ece", "pseudo_label_accuracy", "pseudo_label_ece",
        "mean_confidence")}}
    found["cas_labeled"] = done.get(f"images-r{r}", {}).get("cas_labeled")
    data = load_dataset(cfg.data)
    if data.test is not None:
        from .evaluation.run import generator_metrics
        # No copying figure per round: later rounds overwrite the pseudo-labels that this
        # round's generator learned from, and the round table does not show it; `evaluate`
        # measures it for the final generator.
        images = generator_metrics(cfg, data, checkpoint.stage_path(
            run_path, checkpoint.stage_name("generate", r)), cfg.evaluate.round_per_class,
            copying=False, beside=False)  # the round table shows the main judge only
        found |= {k: images.get(k) for k in ("fid", "kid", "precision", "recall",
                                             "class_consistency", "worst_class_consistency",
                                             "n_fake")}
    with RunDir(run_path) as run_dir:
        run_dir.rewind("fit", r - 1)  # a line of this round that a crash left unrecorded
        run_dir.stats("fit", r, **{k: v for k, v in found.items() if v is not None})
        run_dir.update_metrics(f"round-{r}", found)


def _summary(cfg: Config, run_path: Path) -> dict:
    done = finished(run_path)
    return {"rounds": [done[f"round-{r}"] for r in range(cfg.fit.rounds + 1)],
            "baselines": {k.removeprefix("baseline-"): v.get("test_accuracy")
                          for k, v in done.items() if k.startswith("baseline-")},
            "seconds": done.get("seconds", {}),
            "total_seconds": round(sum(done.get("seconds", {}).values()), 1)}
