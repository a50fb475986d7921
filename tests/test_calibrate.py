"""Honest confidence: two-fold cross-fitting, its estimate and the temperature, from the pure
functions to `semigen label` (metrics, checkpoint, pseudo_labels.csv, resume)."""

import csv

import numpy as np
import pytest
import torch

from semigen.api import label_run as train
from semigen.config import resolve
from semigen.labeling import calibrate, nets
from semigen.labeling.predict import predict
from semigen.run import read_metrics, read_stats


def sampled(n: int, classes: int, temperature: float, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): a model whose confidences
    are right once its logits are divided by `temperature`."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, classes, generator=g)
    labels = torch.multinomial((logits / temperature).softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("truth", [0.5, 2.0, 4.0])
def test_fit_temperature_recovers_the_temperature_of_the_labels(truth):
    logits, labels = sampled(20000, 5, truth)
    assert calibrate.fit_temperature(logits, labels) == pytest.approx(truth, rel=0.1)


def test_two_folds_halve_each_class_and_keep_single_labels_in_training():
    labels = np.array([0] * 5 + [1] * 4 + [2])
    fold = calibrate.two_folds(labels, 3)
    assert sorted(fold[:5]) == [0, 0, 0, 1, 1] and sorted(fold[5:9]) == [0, 0, 1, 1]
    assert fold[9] == -1
    assert np.array_equal(fold, calibrate.two_folds(labels, 3))  # seeded


def test_two_folds_never_hold_out_images_labeled_after_the_split():
    labels = np.array([0] * 6 + [1] * 6)
    allowed = np.array([True] * 4 + [False] * 2 + [True] + [False] * 5)
    fold = calibrate.two_folds(labels, 2, allowed=allowed)
    assert sorted(fold[:4]) == [0, 0, 1, 1]
    assert (fold[~allowed] == -1).all()  # trained on in both halves
    assert fold[6] == -1  # the one split label of class 1 has no partner to be held out with


def test_summarise_scales_an_overconfident_model_and_measures_it_on_the_other_fold():
    logits, labels = sampled(4000, 4, 1.0)
    fold = np.arange(4000) % 2
    found = calibrate.summarise(5 * logits, labels.numpy(), fold)  # five times too sure
    assert found["temperature"] == pytest.approx(5, rel=0.1)
    assert found["held_out_ece_after"] < 0.03 < 0.1 < found["held_out_ece_before"]
    right = (logits.argmax(1) == labels).float().mean().item()
    assert found["classifier_estimate"] == pytest.approx(right)
    assert found["classifier_estimate_low"] < right < found["classifier_estimate_high"]
    assert found["calibration_held_out"] == 4000


def test_a_temperature_that_hurts_the_other_half_is_not_applied():
    # One half five times too sure, the other five times too unsure: each half's temperature
    # makes the other half worse, so no temperature is applied, and the log says why.
    logits, labels = sampled(4000, 4, 1.0)
    fold = np.arange(4000) % 2
    skewed = torch.where(torch.from_numpy(fold == 0)[:, None], 5 * logits, logits / 5)
    found = calibrate.summarise(skewed, labels.numpy(), fold)
    assert found["held_out_ece_after"] > found["held_out_ece_before"]
    assert found["temperature"] == 1.0 and found["temperature_fitted"] != 1.0
    assert "left as they are" in calibrate.describe(found, 4)[0]


def test_label_calibrates_what_it_writes_and_keeps_it_on_resume(tmp_path):
    out = tmp_path / "run"
    cfg = resolve(preset="tiny", overrides={"run.out": str(out), "label.pretrain_steps": 0,
                                            "label.calibration_steps": 5})
    metrics = train(cfg)
    found = read_metrics(out)["calibrate"]
    assert found["calibration_held_out"] == 100  # digits: 10 labels per class, all held out
    assert 0 <= found["classifier_estimate_low"] <= found["classifier_estimate"] \
        <= found["classifier_estimate_high"] <= 1
    temperature = found["temperature"]
    assert 0.05 <= temperature <= 20 and temperature != 1.0
    state = torch.load(out / "checkpoints" / "label" / "latest.pt", weights_only=True)
    assert state["temperature"] == temperature
    # pseudo_labels.csv and `predict` see the calibrated classifier: the EMA's logits / T.
    from semigen.data import load_dataset
    data = load_dataset(cfg.data)
    ema = nets.from_checkpoint(state, use_ema=False)
    ema.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items()
                         if k.startswith("module.")})
    expected = (torch.log(predict(ema, data.unlabeled.images, "cpu")) / temperature).softmax(1)
    with open(out / "pseudo_labels.csv") as f:
        written = np.array([float(r["confidence"]) for r in csv.DictReader(f)])
    assert np.allclose(written, expected.max(1).values.numpy(), atol=1e-4)
    shipped = predict(nets.from_checkpoint(state), data.unlabeled.images, "cpu")
    assert torch.allclose(shipped, expected, atol=1e-5)
    assert "test_ece_uncalibrated" in metrics
    # Continuing the run does not fit the halves again; the temperature stays.
    cfg.label.steps = 40
    train(cfg)
    assert [r["stage"] for r in read_stats(out) if r.get("event") == "done"].count(
        "calibrate") == 1
    state = torch.load(out / "checkpoints" / "label" / "latest.pt", weights_only=True)
    assert state["step"] == 40 and state["temperature"] == temperature


def test_no_estimate_without_two_labels_in_a_class(tmp_path):
    out = tmp_path / "run"
    train(resolve(preset="tiny", overrides={"run.out": str(out), "data.labels_per_class": 1,
                                            "label.pretrain_steps": 0, "label.steps": 2,
                                            "label.calibration_steps": 5}))
    assert "calibrate" not in read_metrics(out)
    state = torch.load(out / "checkpoints" / "label" / "latest.pt", weights_only=True)
    assert state["temperature"] == 1.0


def test_the_report_shows_the_estimate_and_the_temperature_and_warns_near_chance():
    from semigen.evaluation.report import calibration_section
    classes = list("abcde")
    good = {"classifier_estimate": 0.9, "classifier_estimate_low": 0.8,
            "classifier_estimate_high": 0.95, "calibration_held_out": 50, "temperature": 1.7,
            "held_out_ece_before": 0.2, "held_out_ece_after": 0.05}
    section = calibration_section({"calibrate": good, "label": {"test_ece_uncalibrated": 0.3,
                                                                "test_ece": 0.04}}, classes)
    assert "temperature 1.70" in section and "0.3000" in section and "0.0400" in section
    assert 'class="warn"' not in section and "estimated 90% right" in section
    poor = good | {"classifier_estimate": 0.24, "classifier_estimate_low": 0.12}
    assert 'class="warn"' in calibration_section({"calibrate": poor}, classes)
    assert calibration_section({}, classes) == ""


def test_held_out_images_all_right_do_not_make_every_confidence_one():
    logits = torch.tensor([[4.0, 0.0, 0.0]] * 25)  # softmax 0.96, and all 25 right
    labels = torch.zeros(25, dtype=torch.long)
    t = calibrate.fit_temperature(logits, labels)
    confidence = (logits / t).softmax(1).max().item()
    assert 0.9 < confidence < 0.99  # about 1 - 1/27, not 1


def test_a_run_stopped_in_or_after_calibration_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    """Calibration has no checkpoints of its own. Stopped between its halves, and again after
    it recorded its estimate but before the label stage's first checkpoint, the reruns fit the
    halves again and end with the figures and records of an uninterrupted run."""
    def cfg(out):
        return resolve(preset="tiny", overrides={"run.out": str(out), "label.pretrain_steps": 0,
                                                 "label.calibration_steps": 5})

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(cfg(straight))
    real_fold, real_record = calibrate.fine_tune_fold, calibrate.record_estimate
    calls = []

    def second_half_stops(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fold(*args, **kwargs)

    def record_then_stop(stage, name, *args):
        real_record(stage, name, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate, "fine_tune_fold", second_half_stops)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(stopped))
    monkeypatch.setattr(calibrate, "fine_tune_fold", real_fold)
    monkeypatch.setattr(calibrate, "record_estimate", record_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(stopped))
    assert "calibrate" in read_metrics(stopped) and "label" not in read_metrics(stopped)
    monkeypatch.setattr(calibrate, "record_estimate", real_record)
    train(cfg(stopped))

    def records(out):
        return [{k: v for k, v in r.items() if k != "time"} for r in read_stats(out)]

    assert read_metrics(stopped)["calibrate"] == read_metrics(straight)["calibrate"]
    assert read_metrics(stopped)["label"] == read_metrics(straight)["label"]
    assert records(stopped) == records(straight)


def test_final_labels_go_to_the_candidate_more_often_right_on_the_same_held_out_labels():
    both = {"classifier_estimate": 0.6, "feature_labels_estimate": 0.7,
            "calibration_held_out": 40}
    source, why = calibrate.final_labels(both)
    assert source == "features" and "70%" in why and "60%" in why and "same 40" in why
    assert calibrate.final_labels(both | {"classifier_estimate": 0.7})[0] == "classifier"  # tie
    assert calibrate.final_labels(both | {"classifier_estimate": 0.8})[0] == "classifier"
    assert calibrate.final_labels({"classifier_estimate": 0.5, "calibration_held_out": 4}
                                  )[0] == "classifier"  # no features: nothing to compare
    assert calibrate.final_labels(None)[0] == "classifier"


def test_the_features_labels_are_judged_on_the_same_halves_and_handed_out_where_they_win(
        tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    cfg = resolve(preset="tiny", overrides={"run.out": str(tmp_path / "run"),
                                            "label.calibration_steps": 5, "label.steps": 4,
                                            "label.pretrained": "none"})
    chosen = {}
    real = calibrate.final_labels

    def forced(calibration):
        chosen["calibration"] = calibration
        source, why = real(calibration)
        return "features", why
    monkeypatch.setattr(calibrate, "final_labels", forced)
    metrics = train(cfg)
    found = read_metrics(cfg.run.out)["calibrate"]
    # the features' labels judged on the very halves the classifier was, each made without it
    assert found["calibration_held_out"] == 100
    assert 0 <= found["feature_labels_estimate_low"] <= found["feature_labels_estimate"] \
        <= found["feature_labels_estimate_high"] <= 1
    assert chosen["calibration"]["feature_labels_estimate"] == found["feature_labels_estimate"]
    # handed out: pseudo_labels.csv holds the features' labels (tempered), not the classifier's
    state = torch.load(tmp_path / "run" / "checkpoints" / "label" / "latest.pt",
                       weights_only=True)
    expected = (state["feature_labels"].clamp_min(1e-6).log()
                / found["feature_labels_temperature"]).softmax(1)
    with open(tmp_path / "run" / "pseudo_labels.csv") as f:
        rows = list(csv.DictReader(f))
    from semigen.data import load_dataset
    classes = load_dataset(cfg.data).classes
    assert [r["label"] for r in rows] == [classes[i] for i in expected.argmax(1).tolist()]
    assert np.allclose([float(r["confidence"]) for r in rows],
                       expected.max(1).values.numpy(), atol=1e-4)
    assert metrics["final_labels"] == "features" and "classifier_pseudo_label_accuracy" in metrics
    assert "the unlabeled images' labels come from the features' labels" in caplog.text
    assert "new images (semigen predict) are labeled by the classifier" in caplog.text
    # the report shows both estimates and says where the labels came from, and why
    from semigen.evaluation.report import write_report
    html = write_report(tmp_path / "run").read_text()
    assert "the features&#x27; labels on the same held-out halves" in html
    assert "come from the features&#x27; labels" in html
