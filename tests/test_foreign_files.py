"""Pretrained networks, caches and outputs against a careless or hostile user: weights that
load but do not fit, networks that are not there, caches planted or gone stale, a run's files
copied in from another run, two commands writing one output, settings one command checks and
another did not. Each is refused in one line before anything is written, or recomputed."""

import json
import re
import shutil
import threading
import time
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from conftest import write_image

import semigen
from semigen.cli import main
from semigen.config import ConfigError, make_config
from semigen.data import load_dataset
from semigen.evaluation.report import write_report
from semigen.export import export
from semigen.labeling import pretrained
from semigen.review.state import load
from semigen.run import OutputTaken, filling, read_metrics

SPOOF = "abc\u202egnp.exe"  # reads as "abcexe.png" where shown raw


def run_copy(run, tmp_path, name="run"):
    copy = tmp_path / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("run.lock", "review",
                                                             "added_labels.csv"))
    return copy


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """A second run, of two classes (one whose name hides what it says), with a tiny classifier
    and generator: its files are what a careless user copies into the review run."""
    root = tmp_path_factory.mktemp("other") / "data"
    rng = np.random.default_rng(1)
    for c, (name, value) in enumerate({"plain": 40, SPOOF: 200}.items()):
        for i in range(6):
            write_image(root / "labeled" / name / f"{i}.png",
                        np.clip(rng.normal(value, 12, (12, 12, 3)), 0, 255).astype(np.uint8))
        for i in range(12):
            write_image(root / "unlabeled" / f"{c}-{i}.png",
                        np.clip(rng.normal(value, 12, (12, 12, 3)), 0, 255).astype(np.uint8))
    out = root.parent / "run"
    options = {"preset": "tiny", "label__steps": 20, "label__calibration_steps": 10,
               "generate__steps": 10}
    semigen.label(str(root), out=str(out), **options)
    semigen.generate(str(root), out=str(out), **options)
    return out


def refused_in_one_line(argv, capsys, code=2) -> str:
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("semigen: error:")
    return err


# ---------------------------------------------- networks and their weights, before the run


def resnet18_state(**changed):
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict() | changed


@pytest.mark.parametrize("setting, architecture, make_weights, said", [
    # the right architecture, a tensor of another shape
    ("pretrained", "torchvision:resnet18",
     lambda: resnet18_state(**{"conv1.weight": torch.zeros(64, 1, 7, 7)}),
     "1 of the 120 tensors of resnet18 are missing or of another shape"),
    # another architecture's weights
    ("pretrained", "torchvision:mobilenet_v3_small", resnet18_state,
     "tensors .*missing or of another shape"),
    # weights holding NaN
    ("pretrained", "torchvision:resnet18",
     lambda: resnet18_state(**{"layer1.0.conv1.weight": torch.full((64, 64, 3, 3), np.nan)}),
     "layer1.0.conv1.weight holds inf or NaN"),
    # the fine-tuned classifier: the same three
    ("backbone", "mobilenet_v3_small", resnet18_state, "missing or of another shape"),
    ("backbone", "resnet18",
     lambda: resnet18_state(**{"fc.weight": torch.full((1000, 512), np.inf)}),
     "fc.weight holds inf or NaN"),
    # the fine-tuned EfficientNet-Lite0 given another network's file
    ("net", "efficientnet-lite0", resnet18_state, "tensors are missing or of another shape"),
])
def test_weights_that_load_but_do_not_fit_are_refused_before_the_run_exists(
        tmp_path, capsys, setting, architecture, make_weights, said):
    weights = tmp_path / "weights.pt"
    torch.save(make_weights(), weights)
    out = tmp_path / "run"
    options = (["--label.pretrained", architecture, "--label.pretrained-weights", weights]
               if setting == "pretrained" else
               [f"--label.{setting}", architecture, "--label.weights", weights])
    err = refused_in_one_line(["label", "digits", "--preset", "tiny", "--out", out, *options],
                              capsys)
    assert ("label.pretrained" if setting == "pretrained" else "label.weights") in err
    assert str(weights) in err
    assert len([line for line in err.splitlines() if line.strip()]) == 2  # "bad config:" + it
    assert re.search(said, err), err
    assert not out.exists()


@pytest.mark.parametrize("architecture, said", [
    ("torchvision:squeezenet1_1", "no linear layer to replace"),  # its head is a convolution
    ("torchvision:r3d_18", "no such image classification architecture"),  # video
    ("torchvision:raft_small", "no such image classification architecture"),  # optical flow
])
def test_networks_that_take_no_image_or_have_no_head_are_refused(tmp_path, capsys,
                                                                 architecture, said):
    out = tmp_path / "run"
    err = refused_in_one_line(["label", "digits", "--preset", "tiny", "--out", out,
                               "--label.pretrained", architecture], capsys)
    assert said in err and architecture in err
    assert not out.exists()


def test_default_weights_that_cannot_be_had_offline_are_refused_before_the_run(
        tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    out = tmp_path / "run"
    for options in (["--label.pretrained", "torchvision:resnet18"],
                    ["--label.backbone", "resnet18", "--label.weights", "download"]):
        err = refused_in_one_line(["label", "digits", "--preset", "tiny", "--out", out,
                                   *options], capsys)
        assert "could not fetch resnet18's pretrained weights" in err
        assert err.count("\n") == 2  # "bad config:" and one line: no chained tracebacks
        assert not out.exists()


def test_a_relative_weights_path_is_kept_absolute(tmp_path, monkeypatch):
    """A run continued from another folder finds the file it was given relative."""
    (tmp_path / "w").mkdir()
    torch.save(resnet18_state(), tmp_path / "w" / "r.pt")
    monkeypatch.chdir(tmp_path)
    cfg = make_config("digits", out="run", preset="tiny", label__pretrained="torchvision:resnet18",
                      label__pretrained_weights="w/r.pt", data__cache_dir="cache")
    assert cfg.label.pretrained_weights == str(tmp_path / "w" / "r.pt")
    assert cfg.data.cache_dir == str(tmp_path / "cache")


# ---------------------------------------------- the pretrained features' cache


@pytest.fixture
def features_setup(tmp_path):
    import timm
    torch.manual_seed(0)
    weights = tmp_path / "net.pt"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    cfg = make_config("digits", out=str(tmp_path / "run"), preset="tiny",
                      data__cache_dir=str(tmp_path / "cache"))
    data = load_dataset(cfg.data)
    name = "timm:test_efficientnet"
    first, _ = pretrained.cached_features(data, cfg.data, name, str(weights), 32, "cpu")
    (kept,) = (tmp_path / "cache" / "features").glob("*.npy")
    return cfg, data, name, weights, first, kept


@pytest.mark.parametrize("planted", ["nan", "random columns", "another shape"])
def test_a_planted_features_cache_is_computed_again(features_setup, planted):
    cfg, data, name, weights, first, kept = features_setup
    values = np.load(kept)
    if planted == "nan":
        values[3, 5] = np.nan
    elif planted == "random columns":  # the right rows and width, not these images' features
        values = np.random.default_rng(0).normal(size=values.shape).astype(np.float32)
    else:
        values = values[:, :7]
    np.save(kept, values)
    again, line = pretrained.cached_features(data, cfg.data, name, str(weights), 32, "cpu")
    assert "computed for" in line and torch.allclose(again, first, atol=1e-5)


def test_weights_replaced_in_place_with_the_same_size_and_time_are_new_features(
        features_setup):
    cfg, data, name, weights, first, _ = features_setup
    stat = weights.stat()
    state = torch.load(weights, weights_only=True)
    for value in state.values():
        if value.is_floating_point():
            value.mul_(0.5)
    torch.save(state, weights)
    import os
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    again, line = pretrained.cached_features(data, cfg.data, name, str(weights), 32, "cpu")
    assert "computed for" in line and not torch.allclose(again, first)


# ---------------------------------------------- settings every command checks alike


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_sample_refuses_a_guidance_that_is_not_a_finite_number(review_run, tmp_path, capsys,
                                                               value):
    out = tmp_path / "images"
    err = refused_in_one_line(["sample", review_run, "--per-class", 2, "--out", out,
                               "--generate.guidance", value], capsys)
    assert "generate.guidance" in err
    assert not out.exists()


def test_sample_refuses_a_setting_its_generator_does_not_have(review_run, tmp_path, capsys):
    out = tmp_path / "images"
    err = refused_in_one_line(["sample", review_run, "--per-class", 2, "--out", out,
                               "--generate.guidance", "0.5"], capsys)
    assert "is a gan, which has no such setting" in err
    assert not out.exists()


def test_review_keeps_a_limit_on_generated_images(review_run, capsys):
    err = refused_in_one_line(["review", review_run, "--port", 0, "--generated-per-class",
                               2_000_000], capsys)
    assert "--generated-per-class 2000000: give 0-1,000" in err


@pytest.mark.parametrize("count", [-1, 2_000_000])
def test_export_keeps_the_same_limit_as_sample(review_run, tmp_path, capsys, count):
    out = tmp_path / "export"
    err = refused_in_one_line(["export", review_run, "--format", "csv", "--out", out,
                               "--generated-per-class", count], capsys)
    assert "--generated-per-class" in err and not out.exists()


# ---------------------------------------------- a run's files from another run


def test_report_refuses_metrics_another_run_wrote(review_run, other_run, tmp_path, capsys):
    run = run_copy(review_run, tmp_path)
    shutil.copyfile(other_run / "metrics.json", run / "metrics.json")
    err = refused_in_one_line(["report", run], capsys)
    assert "metrics.json: written by another run" in err
    assert not (run / "report.html").exists() or \
        (run / "report.html").read_bytes() == (review_run / "report.html").read_bytes()


def test_report_refuses_metrics_edited_into_another_kind(review_run, tmp_path, capsys):
    run = run_copy(review_run, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["label"]["test_accuracy"] = "ninety per cent"
    (run / "metrics.json").write_text(json.dumps(metrics))
    err = refused_in_one_line(["report", run], capsys)
    assert "metrics.json: label.test_accuracy holds 'ninety per cent' where semigen writes a " \
        "number" in err


def test_commands_refuse_a_generator_checkpoint_of_another_run(review_run, other_run, tmp_path,
                                                               capsys):
    run = run_copy(review_run, tmp_path)
    shutil.copyfile(other_run / "checkpoints" / "generate" / "latest.pt",
                    run / "checkpoints" / "generate" / "latest.pt")
    err = refused_in_one_line(["evaluate", run, "--per-class", 2], capsys)
    assert "written by another run" in err and "latest.pt" in err
    err = refused_in_one_line(["sample", run, "--per-class", 2, "--out", tmp_path / "s"],
                              capsys)
    assert "written by another run" in err and not (tmp_path / "s").exists()


def test_a_checkpoint_of_a_run_with_the_same_classes_is_known_by_its_run_id(review_run,
                                                                           tmp_path, capsys):
    """Two runs on the same data: the same classes, not the same run."""
    run = run_copy(review_run, tmp_path)
    identity = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(identity | {"run_id": "0" * 32}))
    err = refused_in_one_line(["sample", run, "--per-class", 2, "--out", tmp_path / "s"],
                              capsys)
    assert "written by another run" in err
    with pytest.raises(ConfigError, match="written by another run"):
        read_metrics(run)


# ---------------------------------------------- the review page's caches


def test_review_recomputes_a_predictions_cache_copied_from_another_run(review_run, tmp_path):
    run = run_copy(review_run, tmp_path)
    honest = load(run, suggest=4, generated_per_class=0)
    (cache,) = (run / "review").glob("predictions-*.npz")
    with np.load(cache) as found:
        planted = {k: found[k] for k in found.files}
    planted["probs"] = planted["probs"][::-1].copy()  # another run's view of the same images
    planted["key"] = np.array("f" * 64)
    with open(cache, "wb") as f:
        np.savez(f, **planted)
    again = load(run, suggest=4, generated_per_class=0)
    assert np.allclose(again.probs, honest.probs)


def test_review_sees_an_image_whose_pixels_changed(review_run, tmp_path):
    run = run_copy(review_run, tmp_path)
    source = tmp_path / "data"
    shutil.copytree(review_run.parent / "data", source)
    text = (run / "config.yaml").read_text().replace(str(review_run.parent / "data"), str(source))
    (run / "config.yaml").write_text(text)
    before = load(run, suggest=4, generated_per_class=0)
    first = before.data.unlabeled.ids[0]
    write_image(source / first, np.full((12, 12, 3), 255 - int(before.data.unlabeled.images[0]
                                                               .mean()), np.uint8))
    after = load(run, suggest=4, generated_per_class=0)
    assert not np.allclose(after.probs[0], before.probs[0])
    assert np.allclose(after.probs[1:], before.probs[1:], atol=1e-5)


def test_review_samples_again_where_generated_images_were_deleted(review_run, tmp_path):
    run = run_copy(review_run, tmp_path)
    load(run, suggest=4, generated_per_class=2)
    shown = sorted((run / "review" / "generated").rglob("*.png"))
    assert len(shown) == 6
    shown[0].unlink()
    review = load(run, suggest=4, generated_per_class=2)
    listed = [f for c in review.generated for f in c["files"]]
    assert len(listed) == 6 and all(f.is_file() for f in listed)


# ---------------------------------------------- outputs two commands cannot mix


def test_an_export_into_a_folder_another_command_is_writing_is_refused(review_run, tmp_path):
    out = tmp_path / "export"
    with filling(out) as work:  # another export, in the middle of writing
        (work / "theirs.png").write_bytes(b"x")
        with pytest.raises(OutputTaken, match="another command is writing there now"):
            export(review_run, "imagefolder", out)
    assert sorted(p.name for p in out.iterdir()) == ["theirs.png"]


def test_an_export_whose_folder_filled_meanwhile_puts_nothing_there(review_run, tmp_path,
                                                                    monkeypatch):
    """The other writer finished first: this one's images never join its files."""
    import semigen.export as module
    out = tmp_path / "export"
    real = module.WRITERS["imagefolder"]

    def write_while_another_finishes(items, classes, work):
        real(items, classes, work)
        out.mkdir()
        (out / "theirs.png").write_bytes(b"x")

    monkeypatch.setitem(module.WRITERS, "imagefolder", write_while_another_finishes)
    with pytest.raises(OutputTaken, match="appeared there meanwhile"):
        export(review_run, "imagefolder", out)
    assert [p.name for p in out.iterdir()] == ["theirs.png"]
    assert not list(tmp_path.glob(".export*"))  # no partial folder or lock left behind


def test_two_exports_at_once_leave_one_whole_export(review_run, tmp_path):
    out, results = tmp_path / "export", []

    def one():
        try:
            results.append(export(review_run, "imagefolder", out)["images"])
        except ConfigError as e:  # refused: another is writing there, or has written
            results.append(str(e))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    written = [r for r in results if isinstance(r, int)]
    assert len(written) == 1 and len(results) == 2
    rows = (out / "manifest.csv").read_text().splitlines()[1:]
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "manifest.csv"]
    assert len(rows) == len(files) == written[0]


# ---------------------------------------------- what pages show


def test_the_report_shows_hidden_characters_as_review_does(other_run, tmp_path):
    page = write_report(other_run).read_text(encoding="utf-8")
    assert "\u202e" not in page
    assert "abc[U+202E]gnp.exe" in page


def test_evaluate_keeps_the_same_limit_as_sample(review_run, capsys):
    err = refused_in_one_line(["evaluate", review_run, "--per-class", 2_000_000], capsys)
    assert "evaluate.per_class must be <= 1,000,000" in err


def test_a_file_output_written_meanwhile_by_another_command_is_not_replaced(tmp_path):
    from semigen.run import replacing
    out = tmp_path / "labels.csv"
    with pytest.raises(OutputTaken, match="written meanwhile by another command"):
        with replacing(out, new=True) as f:
            f.write("mine")
            out.write_text("theirs")
    assert out.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_larger_architecture_s_weights_are_not_taken_for_a_smaller_one(tmp_path, capsys):
    """resnet34's file holds every tensor of resnet18 with its shape, and more."""
    weights = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), weights)
    out = tmp_path / "run"
    err = refused_in_one_line(["label", "digits", "--preset", "tiny", "--out", out,
                               "--label.backbone", "resnet18", "--label.weights", weights],
                              capsys)
    assert "tensors resnet18 does not have (first: layer1.2" in err and not out.exists()


def test_a_checkpoint_holding_nan_is_refused_by_the_commands_that_read_it(review_run, tmp_path,
                                                                        capsys):
    run = run_copy(review_run, tmp_path)
    path = run / "checkpoints" / "label" / "latest.pt"
    state = torch.load(path, weights_only=True)
    next(v for v in state["ema"].values() if v.is_floating_point()).fill_(np.nan)
    torch.save(state, path)
    images = review_run.parent / "data" / "unlabeled"
    err = refused_in_one_line(["predict", run, images, "--out", tmp_path / "p.csv"], capsys)
    assert "holds inf or NaN" in err and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("option, make_weights, said", [
    ("--evaluate.features", lambda: torchvision.models.resnet18().state_dict(),
     "evaluate.features .*tensors of resnet50 are missing"),
    ("--evaluate.features",
     lambda: torchvision.models.resnet50().state_dict() | {"fc.bias": torch.full((1000,), np.nan)},
     "evaluate.features .*fc.bias holds inf or NaN"),
    ("--inception-weights", lambda: torchvision.models.resnet18().state_dict(),
     "--inception-weights .*not a torchvision Inception-v3 state dict"),
])
def test_evaluate_refuses_weights_that_do_not_fit_before_computing_anything(
        review_run, tmp_path, capsys, option, make_weights, said):
    run = run_copy(review_run, tmp_path)
    weights = tmp_path / "weights.pt"
    torch.save(make_weights(), weights)
    before = (run / "metrics.json").read_bytes()
    err = refused_in_one_line(["evaluate", run, "--per-class", 2, option, weights], capsys)
    assert re.search(said, err), err
    assert (run / "metrics.json").read_bytes() == before
