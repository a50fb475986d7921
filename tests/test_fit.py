"""`semigen fit` end to end on tiny digits runs: stages, rounds, resume after a kill, the report
in a real browser, suggest, evaluate --test, and the API."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

import semigen
from semigen import checkpoint
from semigen.api import make_config
from semigen.cli import main
from semigen.config import ConfigError
from semigen.data import load_dataset
from semigen.generation.data import confident
from semigen.joint.images import keep_recognised
from semigen.labeling.suggest import choose
from semigen.run import Layout, read_pseudo_labels, read_stats

STAGES = ["label", "baseline-labels-only", "baseline-all-labels", "generate", "label-r1",
          "generate-r1", "round-0", "round-1", "evaluate", "fit"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One evaluator network for every fit here, outside the user's ~/.cache."""
    return tmp_path_factory.mktemp("cache")


LOADS: list[str] = []  # the data config of each data set the fitted fixture's fit read


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, cache) -> tuple[Path, dict]:
    from semigen.data import sources
    run = tmp_path_factory.mktemp("fit") / "run"
    read = sources._load_source

    def counted(cfg, progress):
        LOADS.append(repr(cfg))
        return read(cfg, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "_load_source", counted)
        summary = semigen.fit("digits", out=str(run), preset="tiny", rounds=1,
                              data__cache_dir=str(cache))
    return run, summary


def test_a_fit_reads_each_data_set_once(fitted):
    """The run is opened once: its stages, baselines, rounds, judge, evaluator and evaluation
    share the data it loaded (an evaluator of another split would read its own, once)."""
    assert LOADS and len(LOADS) == len(set(LOADS))
    assert any("source='digits'" in found for found in LOADS)


def test_the_stages_record_is_apart_from_the_figures(fitted):
    run, summary = fitted
    stages = json.loads((run / "stages.json").read_text())
    assert set(stages) == set(STAGES) - {"fit"}  # the fit's stages, nothing else
    assert all(entry["seconds"] >= 0 for entry in stages.values())
    assert "seconds" not in json.loads((run / "metrics.json").read_text())
    assert summary["seconds"]["label"] == stages["label"]["seconds"]


def test_fit_runs_every_stage_and_records_each_round(fitted):
    run, summary = fitted
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics.pop("run_id") == json.loads((run / "run.json").read_text())["run_id"]
    assert list(metrics)[:2] == ["represent", "label"] and set(STAGES) <= set(metrics)
    assert metrics["fit"] == summary
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    for found in summary["rounds"]:
        assert 0 <= found["test_accuracy"] <= 1 and found["fid"] >= 0
        assert found["n_fake"] == 10 * 10  # evaluate.round_per_class in the tiny preset
    assert set(summary["baselines"]) == {"labels-only", "all-labels"}
    assert set(summary["seconds"]) >= {"label", "generate", "label-r1", "generate-r1"}
    # Round 1's classifier saw generated images of every class beside the real labels,
    # chosen by what they teach (the GAN: one candidate set, its samples).
    assert metrics["label-r1"]["synthetic"] == 5 * 10 and metrics["label"]["synthetic"] == 0
    chosen = metrics["images-r1"]
    assert [c["images"] for c in chosen["candidates"]] == ["samples"]
    assert 0 <= chosen["cas_labeled"] <= 1
    assert summary["rounds"][1]["cas_labeled"] == chosen["cas_labeled"]
    assert "round 1: the classifier is given samples" in (run / "log.txt").read_text()
    teaching = metrics["evaluate"]["teaching"]
    assert 0 <= teaching["cas_test"] <= 1 and 0 <= teaching["labels_probe_test"] <= 1
    # No self-consuming loop: round 1's generator learns from real images alone, the labeled
    # ones and those whose round-1 pseudo-label is confident enough (at the bar, or among the
    # most confident half of their class).
    pseudo = read_pseudo_labels(run / "pseudo_labels.csv", [str(c) for c in range(10)])
    kept = confident([(i, *pseudo[k]) for i, k in enumerate(sorted(pseudo))], 0.9, 0.5)
    assert len(kept) > sum(conf >= 0.9 for _, conf in pseudo.values())  # the floor binds
    assert (metrics["generate-r1"]["training_images"]
            == metrics["label"]["labeled"] + len(kept))
    rounds = [r for r in read_stats(run) if r["stage"] == "fit"]
    assert [r["step"] for r in rounds] == [0, 1]
    assert rounds[1]["test_accuracy"] == summary["rounds"][1]["test_accuracy"]
    # Each round keeps its own checkpoints; evaluate and predict use the last round's.
    for stage in ("label", "label-r1", "generate", "generate-r1"):
        assert (run / "checkpoints" / stage / "latest.pt").exists()
    assert metrics["evaluate"]["classifier"]["checkpoint"].endswith("label-r1/latest.pt")
    assert (metrics["evaluate"]["classifier"]["test_accuracy"]
            == pytest.approx(summary["rounds"][1]["test_accuracy"]))
    assert (run / "baselines" / "labels-only" / "checkpoints" / "label" / "latest.pt").exists()
    assert (run / "report.html").stat().st_size > 10_000


def test_generated_images_are_kept_only_when_the_classifier_recognises_them():
    class Brightness(torch.nn.Module):  # class 0: dark images, class 1: bright; sure of both
        def forward(self, x):
            bright = x.mean(dim=(1, 2, 3))
            return torch.stack([-bright, bright], dim=1) * 20

    # Per class: 4 recognisable images, then 2 that look like the other class.
    values = [10, 20, 30, 40, 250, 240] + [200, 210, 220, 230, 5, 15]
    images = np.array([np.full((4, 4, 1), v, np.uint8) for v in values])
    labels = np.repeat([0, 1], 6)
    kept, kept_labels = keep_recognised(images, labels, Brightness(), 0.9, per_class=3)
    assert kept_labels.tolist() == [0, 0, 0, 1, 1, 1]  # the first 3 recognised of each class
    assert kept[:, 0, 0, 0].tolist() == [10, 20, 30, 200, 210, 220]
    kept, kept_labels = keep_recognised(images, labels, Brightness(), 0.9, per_class=10)
    assert np.bincount(kept_labels).tolist() == [4, 4]  # never the unrecognisable ones


def test_final_stage_picks_the_last_round_with_a_checkpoint(tmp_path):
    for stage in ("label", "label-r1", "label-r2", "label-r10", "generate"):
        (tmp_path / "checkpoints" / stage).mkdir(parents=True)
        if stage != "label-r10":  # r10 began but saved nothing yet
            (tmp_path / "checkpoints" / stage / "latest.pt").write_bytes(b"")
    assert Layout(tmp_path).final_stage("label") == "label-r2"
    assert Layout(tmp_path).final_stage("generate") == "generate"
    assert checkpoint.stage_name("label", 0) == "label"
    assert checkpoint.stage_name("generate", 3) == "generate-r3"


def _fit_argv(run: Path, cache: Path) -> list[str]:
    # A generate stage long enough (200 steps) to be killed in its middle.
    return [sys.executable, "-m", "semigen", "fit", "digits", "--preset", "tiny", "--out",
            str(run), "--data.cache_dir", str(cache), "--generate.steps", "200"]


def test_a_killed_fit_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path, cache, fitted):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    env = os.environ | {"PYTHONPATH": str(Path(semigen.__file__).parents[1])}
    subprocess.run(_fit_argv(straight, cache), check=True, env=env, capture_output=True)

    process = subprocess.Popen(_fit_argv(resumed, cache), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    saved = resumed / "checkpoints" / "generate" / "latest.pt"
    deadline = time.monotonic() + 300
    while not saved.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # no clean-up of any kind
    process.wait()
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert "label" in metrics and "generate" not in metrics, "not killed mid-stage"

    subprocess.run(_fit_argv(resumed, cache), check=True, env=env, capture_output=True)
    log = (resumed / "log.txt").read_text()
    assert re.search(r"resum\w+ .*generate", log, re.IGNORECASE), log[-2000:]
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (straight, resumed))
    for key in ("rounds", "baselines"):
        assert second["fit"][key] == first["fit"][key]
    assert second["evaluate"]["images"]["fid"] == first["evaluate"]["images"]["fid"]
    assert (second["evaluate"]["classifier"]["confusion_matrix"]
            == first["evaluate"]["classifier"]["confusion_matrix"])


def test_more_rounds_continue_a_finished_fit(fitted, tmp_path, cache):
    run = tmp_path / "run"
    shutil.copytree(fitted[0], run)
    summary = semigen.fit("digits", out=str(run), preset="tiny", rounds=2,
                          data__cache_dir=str(cache), fit__synthetic_min_confidence=0.2)
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["rounds"][:2] == fitted[1]["rounds"]  # rounds 0 and 1 were not redone
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluate"]["classifier"]["checkpoint"].endswith("label-r2/latest.pt")
    # round 2 filtered its generated images by the classifier, and the run's log says how many
    kept = re.search(r"round 2: samples: (\d+) images", (run / "log.txt").read_text())
    assert kept and 0 < int(kept.group(1)) == metrics["label-r2"]["synthetic"] <= 5 * 10


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_renders_in_a_browser_with_every_picture(fitted, tmp_path):
    run, _ = fitted
    page = tmp_path / "report.html"
    shutil.copy(run / "report.html", page)  # self-contained: nothing beside it is needed
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" +
         str(tmp_path / "profile"), "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    assert found, dom[:500]
    ok, total = map(int, found.groups())
    assert ok == total >= 10  # grids, curves, confusion matrix, histogram, 2 strips per class
    for heading in ("Results", "Generated images per class", "Learning curves",
                    "Pseudo-labels", "Data"):
        assert f"<h2>{heading}</h2>" in dom


def test_report_shows_baselines_rounds_and_pseudo_label_examples(fitted):
    run, summary = fitted
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert 'src="http' not in page and "<link" not in page  # opens offline
    for row in ("labels-only baseline", "semi-supervised (module 1)", "joint round 1",
                "all-labels baseline"):
        assert row in page
    assert f"{summary['baselines']['labels-only']:.4f}" in page
    assert "generate-r1" in page and re.search(r'alt="\d examples"', page)
    assert "Copying of the generator's" in page and "held-out real images" in page
    # variety per class beside real against real, in both judges' features, and per round
    assert page.count("real against real</th>") == 2 and "variety (x real)" in page


def test_report_of_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_suggest_writes_uncertain_unlabeled_images(fitted, tmp_path):
    run, _ = fitted
    out = tmp_path / "next.csv"
    assert main(["suggest", str(run), "--n", "7", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["rank"]) for r in rows] == list(range(1, 8))
    data = load_dataset(make_config("digits").data)
    assert len({r["path"] for r in rows}) == 7 and {r["path"] for r in rows} <= set(
        data.unlabeled.ids)
    margins = [float(r["margin"]) for r in rows]
    assert margins == sorted(margins)
    predictions = {r["path"]: r for r in csv.DictReader((run / "pseudo_labels.csv").open())}
    median = np.median([float(r["confidence"]) for r in predictions.values()])
    # chosen among the least certain (by margin, spread over the data): less sure than most
    assert np.mean([float(r["confidence"]) for r in rows]) < median


def test_suggestions_spread_over_the_data_instead_of_one_confused_region():
    rng = np.random.default_rng(0)
    features = np.concatenate([c + rng.normal(0, 0.1, (40, 3)) for c in np.eye(3) * 10])
    # Margins: group 0 holds the 10 least certain images, groups 1 and 2 the next 10 each.
    margin = rng.uniform(0.5, 0.9, 120)
    margin[:10] = rng.uniform(0.0, 0.05, 10)
    margin[40:50], margin[80:90] = rng.uniform(0.06, 0.1, 10), rng.uniform(0.06, 0.1, 10)
    probs = np.stack([(1 + margin) / 2, (1 - margin) / 2], axis=1)
    picks = choose(features, probs, k=3)
    # Uncertainty alone would take three images of group 0; the clusters take one of each.
    assert sorted(p // 40 for p in picks) == [0, 1, 2]
    assert picks[0] == int(np.argmin(margin))


def test_evaluate_on_a_separate_test_folder(fitted, tmp_path, cache, capsys):
    run = tmp_path / "run"
    shutil.copytree(fitted[0], run)
    data = load_dataset(make_config("digits").data)
    folder = tmp_path / "held-out"
    for i in range(30):
        name = data.classes[data.test.labels[i]]
        write_image(folder / "test" / name / f"{i}.png", data.test.images[i][..., 0])
    (folder / "test" / name / "bad.png").write_bytes(b"not a png")
    assert main(["evaluate", str(run), "--test", str(folder), "--per-class", "10",
                 "--data.cache_dir", str(cache)]) == 0
    found = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert found["classifier"]["n_test"] == 30
    assert found["test_data"]["images"] == 30 and len(found["test_data"]["skipped"]) == 1
    capsys.readouterr()
    (folder / "test" / "horse").mkdir()
    write_image(folder / "test" / "horse" / "h.png", data.test.images[0][..., 0])
    assert main(["evaluate", str(run), "--test", str(folder)]) == 2
    assert "horse" in capsys.readouterr().err


def test_api_verbs_stay_functions_after_the_stages_are_imported():
    import semigen.evaluation.run
    import semigen.generation.diffusion
    import semigen.generation.gan
    import semigen.labeling.train  # noqa: F401  (a package named `label` would shadow the verb)
    for verb in ("fit", "label", "generate", "evaluate", "report", "suggest", "sample",
                 "predict", "demo"):
        assert callable(getattr(semigen, verb)), verb


def test_api_options_map_to_config_fields():
    cfg = make_config("digits", out="runs/x", preset="tiny", rounds=3, label__lr=0.1,
                      **{"generate.steps": 7})
    assert (cfg.fit.rounds, cfg.label.lr, cfg.generate.steps) == (3, 0.1, 7)
    assert cfg.run.out == "runs/x" and cfg.label.steps == 30  # the preset under the options
    with pytest.raises(ConfigError, match="colour"):
        make_config("digits", colour="red")
    with pytest.raises(ConfigError, match="fit.rounds"):
        make_config("digits", rounds=-2)


def test_a_fit_stopped_in_every_later_stage_ends_as_an_uninterrupted_one(fitted, tmp_path,
                                                                          cache, monkeypatch):
    """Stopped (as Ctrl-C stops it) in the labels-only baseline, in round 1's classifier with
    its generated images, in round 1's generator, while recording round 1's metrics, and in
    evaluate, and run again after each stop: the fit ends with the figures and the records of
    the uninterrupted one."""
    from semigen.checkpoint import Checkpointer
    from semigen.run import Records

    run = tmp_path / "run"
    to_stop = {"baselines/labels-only/checkpoints/label", "checkpoints/label-r1",
               "checkpoints/generate-r1", "round-1", "evaluate"}
    stopped = []
    real_save, real_update = Checkpointer.save, Records.update_metrics

    def save_then_stop(self, payload, at):
        path = real_save(self, payload, at)
        where = self.folder.relative_to(run).as_posix() if self.folder.is_relative_to(run) \
            else None
        if where in to_stop:
            to_stop.discard(where)
            stopped.append(where)
            raise KeyboardInterrupt
        return path

    def stop_before_recording(self, stage, metrics):
        if stage in to_stop:  # the round's stats line is written, its metrics not yet
            to_stop.discard(stage)
            stopped.append(stage)
            raise KeyboardInterrupt
        return real_update(self, stage, metrics)

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    monkeypatch.setattr(Records, "update_metrics", stop_before_recording)
    for _ in range(10):
        try:
            summary = semigen.fit("digits", out=str(run), preset="tiny", rounds=1,
                                  data__cache_dir=str(cache))
            break
        except KeyboardInterrupt:
            continue
    assert not to_stop and len(stopped) == 5
    uninterrupted_run, uninterrupted = fitted
    for key in ("rounds", "baselines"):
        assert summary[key] == uninterrupted[key]

    def records(out):
        return [{k: v for k, v in r.items() if k != "time"} for r in read_stats(out)]

    assert records(run) == records(uninterrupted_run)
    assert records(run / "baselines" / "labels-only") == records(
        uninterrupted_run / "baselines" / "labels-only")
    first, second = (json.loads((r / "metrics.json").read_text())
                     for r in (uninterrupted_run, run))
    for part in ("images", "classifier", "pseudo_labels"):
        assert ({k: v for k, v in second["evaluate"][part].items() if k != "checkpoint"}
                == {k: v for k, v in first["evaluate"][part].items() if k != "checkpoint"})


def test_a_round_s_generated_images_reach_its_semi_loss_and_its_feature_step(fitted, cache):
    """Round 1 trains in semi mode with the generated images as a term of their own (its log
    has loss_g beside loss_u), spreads the features' labels again with them, and its
    classifier is not the one a round whose images are all black would give: the images, not
    only their count, reach the loss. Round 0 (no images) is the same in both."""
    from semigen.labeling import nets, train

    run, _ = fitted
    rows = [r for r in read_stats(run) if r["stage"] == "label-r1" and "loss" in r]
    assert rows and all("loss_u" in r and np.isfinite(r["loss_g"]) for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["label-r1"]["mode"] == "semi"
    (spread,) = [r for r in read_stats(run)
                 if r["stage"] == "label-r1" and r.get("event") == "feature_step"]
    assert spread["feature_step_generated"] == metrics["label-r1"]["synthetic"] > 0

    black = run.parent / "black"
    original = train.fine_tuning_batches

    def with_black_images(stage, data, labeled, generated, *args):
        if generated is not None:
            generated = (np.zeros_like(generated[0]), generated[1])
        return original(stage, data, labeled, generated, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "fine_tuning_batches", with_black_images)
        semigen.fit("digits", out=str(black), preset="tiny", rounds=1,
                    data__cache_dir=str(cache))

    def weights(where: Path, stage: str) -> dict:
        state = checkpoint.load(where / "checkpoints" / stage / "latest.pt")
        return nets.from_checkpoint(state).state_dict()

    for name, value in weights(run, "label").items():
        assert torch.equal(value, weights(black, "label")[name]), name
    moved = [name for name, value in weights(run, "label-r1").items()
             if not torch.equal(value, weights(black, "label-r1")[name])]
    assert moved
