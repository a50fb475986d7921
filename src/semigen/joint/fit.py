"""`semigen fit`: the whole loop as a declared list of resumable stages (`fit_stages`).

    label -> baselines -> generate -> for r in 1..R: label-r<r> -> generate-r<r>
          -> round-0 .. round-R -> evaluate -> report

Round r's classifier starts from round r-1's and sees, beside the real labeled images,
``fit.synthetic_per_class`` images of each class from round r-1's generator (`images`); it then
labels the unlabeled images again (round r's pseudo-labels), and the generator is refined on
those. Each stage is the ordinary training loop with its own checkpoints; a stage that the
run's stages record lists as finished is skipped, an unfinished one resumes from its latest
checkpoint, so running the same `fit` again continues where it stopped, and a larger
``--rounds`` adds rounds to a finished fit. The baselines (labels-only and, for built-ins,
all-labels classifiers on the same budget) are runs of their own inside the run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from .. import checkpoint
from ..config import BUILTINS, Config, make_config
from ..evaluation.report import write_report
from ..evaluation.run import evaluate_run, generator_metrics
from ..generation import model_fields as generator_fields
from ..generation import train_generator
from ..labeling.train import MODEL_FIELDS as CLASSIFIER_FIELDS
from ..labeling.train import check_networks, train_classifier
from ..run import Run, open_run
from ..runtime import is_main_process, leave_process_group
from .feature_step import feature_step
from .images import round_images

log = logging.getLogger("semigen")
# Labels per class up to which a joint round measurably raised the classifier over round 0 and
# the control without generated images: Fashion-MNIST's test accuracy (BENCHMARKS.md "Joint
# rounds": +2.00 points at 1 over three seeds; at 2 the round fell 0.36 below round 0, one
# seed; at 10 it added nothing the control did not). Chosen again on digits' kept-apart split
# seeds 3-5: no number of labels moved a round beyond its error either way, so it stayed
# (docs/defaults.md, "The joint round's settings").
ROUNDS_PAY_UP_TO = 1


class FitStage(NamedTuple):
    name: str
    work: Callable[[], object]
    every_rank: bool = True  # trains on every DDP rank; False: rank 0 alone (figures)
    done: Callable[[], bool] | None = None  # default: the run lists it as finished


def fit_stages(run: Run) -> list[FitStage]:
    """The fit, stage by stage, in the order it runs."""
    rounds = range(1, run.cfg.fit.rounds + 1)
    return [
        FitStage("label", partial(train_classifier, run)),
        *[FitStage(f"baseline-{mode}", partial(baseline, run, mode))
          for mode in baseline_modes(run.cfg)],
        FitStage("generate", partial(train_generator, run)),
        *[stage for r in rounds for stage in (
            FitStage(f"label-r{r}", partial(classifier_round, run, r)),
            FitStage(f"generate-r{r}", partial(generator_round, run, r)))],
        *[FitStage(f"round-{r}", partial(round_metrics, run, r), every_rank=False)
          for r in range(run.cfg.fit.rounds + 1)],
        FitStage("evaluate", partial(evaluate_run, run), every_rank=False,
                 done=partial(evaluated, run)),
    ]


def fit(cfg: Config) -> dict | None:
    """Run (or continue) the whole loop into ``cfg.run.out``; return metrics.json's ``fit``
    (None on the ranks other than 0 of a DDP fit: they only train)."""
    check_networks(cfg)
    fields = CLASSIFIER_FIELDS | generator_fields(cfg.generate.backend)
    with open_run(cfg, fields, take_added_labels=True) as run:
        labels = run.data.labeled.labels
        rounds, caution = planned_rounds(cfg, int(np.bincount(labels).min()) if len(labels)
                                         else 0)
        run.cfg.fit.rounds = rounds  # -1 (auto) resolved, before config.yaml is written
        run.note_changes()
        if caution:
            run.records.info(f"fit: {caution}")
        for stage in fit_stages(run):
            if is_main_process() or stage.every_rank:
                run_stage(run, stage)
        if not is_main_process():  # DDP: the other ranks trained beside rank 0, which evaluates
            leave_process_group()
            return None
        summary = fit_summary(run) | ({"rounds_note": caution} if caution else {})
        run.records.update_metrics("fit", summary)
        run.records.info(f"fit done: report in {write_report(run.path, run)}")
        return summary


def run_stage(run: Run, stage: FitStage) -> None:
    """Run `stage` unless it is done; record it as finished with its wall time."""
    if stage.done() if stage.done else run.finished(stage.name):
        return
    if not is_main_process():  # a DDP rank other than 0 trains; rank 0 keeps the records
        stage.work()
        return
    log.info(f"fit: stage {stage.name}")
    start = time.perf_counter()
    stage.work()
    run.mark_finished(stage.name, time.perf_counter() - start)


def planned_rounds(cfg: Config, fewest_labels: int) -> tuple[int, str | None]:
    """How many rounds a fit runs (``fit.rounds``, or for -1 one where the class with the
    fewest labeled images has at most ROUNDS_PAY_UP_TO), and a sentence for the log where the
    rounds are not expected to pay."""
    pays = fewest_labels <= ROUNDS_PAY_UP_TO
    rounds = cfg.fit.rounds if cfg.fit.rounds >= 0 else int(pays)
    if pays:
        return rounds, None
    why = (f"the class with the fewest labels has {fewest_labels} labeled images; a joint round "
           f"runs by default only up to {ROUNDS_PAY_UP_TO} per class, where labels are fewest "
           "and a round has the most to give (what rounds gained, measured: BENCHMARKS.md, "
           "\"Joint rounds\")")
    return rounds, (f"{why}: no round is run (--rounds N runs them anyway)" if rounds == 0
                    else f"{why}: the {rounds} round(s) asked for may not pay")


def baseline_modes(cfg: Config) -> list[str]:
    if not cfg.fit.baselines:
        return []
    return ["labels-only"] + (["all-labels"] if cfg.data.source in BUILTINS else [])


def baseline_config(cfg: Config, mode: str) -> Config:
    """The run's config for its `mode` baseline classifier, a run of its own inside it."""
    from ..run import Layout
    return make_config(base=cfg, label__mode=mode,
                       run__out=str(Layout(cfg.run.out).baseline(mode)))


def baseline(run: Run, mode: str) -> None:
    """The `mode` classifier on the same data and budget, as a run of its own inside `run`."""
    with run.part(baseline_config(run.cfg, mode), CLASSIFIER_FIELDS) as part:
        metrics = train_classifier(part)
    run.records.update_metrics(f"baseline-{mode}", {k: v for k, v in metrics.items()
                                                    if not isinstance(v, list)})


def classifier_round(run: Run, r: int) -> dict:
    """Round r's classifier: round r-1's, trained on with round r-1's generated images, which
    also join the labeled points of its feature step (``fit.feature_step``)."""
    previous = run.layout.checkpoint(checkpoint.stage_name("label", r - 1))
    synthetic = round_images(run, r)
    step = (partial(feature_step, synthetic=synthetic)
            if synthetic is not None and run.cfg.fit.feature_step else None)
    return train_classifier(run, r, init=previous, synthetic=synthetic, feature_step=step)


def generator_round(run: Run, r: int) -> dict:
    """Round r's generator: round r-1's, refined on round r's pseudo-labels."""
    previous = run.layout.checkpoint(checkpoint.stage_name("generate", r - 1))
    return train_generator(run, r, init=previous)


def round_metrics(run: Run, r: int) -> None:
    """Round r's figures: its classifier's and pseudo-labels' (from its label stage) and its
    generator's image metrics at ``evaluate.round_per_class`` (where there are test images)."""
    done = run.metrics()
    label_metrics = done[checkpoint.stage_name("label", r)]
    found = {"round": r, **{k: label_metrics.get(k) for k in (
        "test_accuracy", "test_ece", "pseudo_label_accuracy", "pseudo_label_ece",
        "mean_confidence")}}
    found["cas_labeled"] = done.get(f"images-r{r}", {}).get("cas_labeled")
    if run.data.test is not None:
        # No copying figure per round: later rounds overwrite the pseudo-labels that this
        # round's generator learned from, and the round table does not show it; `evaluate`
        # measures it for the final generator.
        images = generator_metrics(run, run.layout.checkpoint(
            checkpoint.stage_name("generate", r)), run.cfg.evaluate.round_per_class,
            copying=False, beside=False)  # the round table shows the main judge only
        found |= {k: images.get(k) for k in ("fid", "kid", "precision", "recall",
                                             "class_consistency", "worst_class_consistency",
                                             "n_fake")}
        found["variety_recall_ratio"] = images.get("variety", {}).get("recall_ratio")
    run.records.rewind("fit", r - 1)  # a line of this round that a crash left unrecorded
    run.records.stats("fit", r, **{k: v for k, v in found.items() if v is not None})
    run.records.update_metrics(f"round-{r}", found)


def evaluated(run: Run) -> bool:
    """Whether the final evaluation is done: a fit continued with more rounds evaluates its
    new last round again."""
    rounds = run.metrics().get("fit", {}).get("rounds", [])
    return len(rounds) == run.cfg.fit.rounds + 1 and run.finished("evaluate")


def fit_summary(run: Run) -> dict:
    done, seconds = run.metrics(), {name: entry.get("seconds") for name, entry
                                    in run.finished_stages().items()}
    return {"rounds": [done[f"round-{r}"] for r in range(run.cfg.fit.rounds + 1)],
            "baselines": {k.removeprefix("baseline-"): v.get("test_accuracy")
                          for k, v in done.items() if k.startswith("baseline-")},
            "seconds": seconds,
            "total_seconds": round(sum(s or 0 for s in seconds.values()), 1)}
