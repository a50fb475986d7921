"""Runs that cannot be corrupted: one writer per run, divergence stopped with the last good
checkpoint kept, signals handled like Ctrl-C, absurd settings refused before anything is
written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

from semigen import checkpoint
from semigen.cli import main
from semigen.labeling import train as label_train
from semigen.run import read_stats

TINY = ["--preset", "tiny", "--label.mode", "labels-only"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def semigen_process(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "semigen", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process that holds the run as its writer until killed."""
    code = ("import sys, time; from semigen.run import lock_run; lock_run(sys.argv[1]); "
            "print('held', flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", code, str(run)], text=True,
                               env=os.environ | {"PYTHONPATH": SRC}, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "held"
    return process


# ---------------------------------------------------------------- one writer per run


def test_a_second_writer_is_refused_at_once_and_a_dead_ones_lock_is_taken_over(
        tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", "10"]) == 0
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    holder = hold_lock(run)
    try:
        capsys.readouterr()
        for verb in ("label", "generate", "fit"):
            assert main([verb, "digits", "--out", str(run), *TINY, "--label.steps", "20"]) == 2
            err = capsys.readouterr().err
            assert f"is being written by process {holder.pid}" in err, verb
            assert "Wait for it to finish" in err
        # nothing was touched: no .tmp removed, no line added, no checkpoint moved
        assert {p.name: p.read_bytes() for p in run.iterdir()
                if p.is_file() and p.name != "run.lock"} == \
            {k: v for k, v in kept.items() if k != "run.lock"}
        # a reading verb works beside the writer
        assert main(["report", str(run)]) == 0
    finally:
        holder.kill()  # no clean-up: its run.lock still names it
        holder.wait()
    assert json.loads((run / "run.lock").read_text())["pid"] == holder.pid
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", "20"]) == 0
    log = (run / "log.txt").read_text()
    assert f"took over the run from process {holder.pid}" in log
    assert (run / "run.lock").read_text() == ""  # released when the command ended


def test_a_fit_holds_the_run_across_its_stages(tmp_path, monkeypatch):
    """Between a fit's stages no other process may take the run: the lock is the fit's."""
    from semigen.config import make_config
    from semigen.joint import fit
    from semigen.run import lock
    run = tmp_path / "run"
    seen = []
    real_train = label_train.train_classifier

    def train_and_look(open_run, *args, **kwargs):
        result = real_train(open_run, *args, **kwargs)
        seen.append(run.resolve() in lock._held)  # still held after the stage closed
        return result

    monkeypatch.setattr(fit, "train_classifier", train_and_look)
    monkeypatch.setattr(fit, "train_generator", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fit.fit(make_config("digits", str(run), preset="tiny", fit__baselines=False))
    assert seen and all(seen)
    assert run.resolve() not in lock._held and (run / "run.lock").read_text() == ""


# ---------------------------------------------------------------- divergence


def test_a_loss_that_turns_nan_stops_the_stage_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = label_train.step_loss
    calls = []

    def poisoned(*args, **kwargs):
        loss, parts, levels = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 7 else loss), parts, levels

    monkeypatch.setattr(label_train, "step_loss", poisoned)
    args = ["label", "digits", "--out", str(run), *TINY, "--label.steps", "20",
            "--run.checkpoint_every", "5", "--run.log_every", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "label: training diverged at step 8 (loss is nan)" in err
    assert "Lower label.lr (now" in err and "Traceback" not in err
    state = checkpoint.load(run / "checkpoints" / "label" / "latest.pt")
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "pseudo_labels.csv").exists()
    monkeypatch.setattr(label_train, "step_loss", real)
    assert main(args) == 0  # the same command, the cause gone: it resumes from step 5
    assert "resumed from" in (run / "log.txt").read_text()


@pytest.mark.parametrize("setting, value, says", [
    ("--label.lr", "inf", "label.lr must be a finite number"),
    ("--label.lr", "1e6", "label.lr must be at most 10"),
    ("--fit.synthetic-ratio", "inf", "fit.synthetic_ratio must be a finite number"),
    ("--generate.lr", "nan", "generate.lr must be a finite number"),
    ("--seed", "-1", "runtime.seed must be between 0 and 2**32 - 1"),
    ("--seed", str(10**23), "runtime.seed must be between 0 and 2**32 - 1"),
    ("--split-seed", "-1", "data.split_seed must be between 0 and 2**32 - 1"),
    ("--label.steps", str(10**30), "label.steps is too large"),
])
def test_absurd_settings_are_refused_before_anything_is_written(tmp_path, capsys, setting,
                                                                 value, says):
    run = tmp_path / "run"
    assert main(["label", "digits", "--out", str(run), *TINY, setting, value]) == 2
    assert says in capsys.readouterr().err
    assert not run.exists()


# ---------------------------------------------------------------- signals


def test_sigterm_stops_after_a_whole_step_with_a_checkpoint_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    process = semigen_process("label", "digits", "--out", str(run), *TINY,
                              "--label.steps", "100000", "--run.checkpoint_every", "100000",
                              "--run.log_every", "1", "--run.progress", "false")
    wait_for(lambda: (run / "stats.jsonl").exists()
             and len((run / "stats.jsonl").read_text().splitlines()) >= 3, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM (like Ctrl-C); run the same command again to resume" in err
    assert "Traceback" not in err
    step = checkpoint.load(run / "checkpoints" / "label" / "latest.pt")["step"]
    assert 3 <= step < 100000
    assert f"label: stopped by SIGTERM after step {step} of 100000, checkpoint saved" in \
        (run / "log.txt").read_text()
    assert max(r["step"] for r in read_stats(run) if r["stage"] == "label") == step
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", str(step + 2),
                 "--run.log_every", "1"]) == 0
    assert f"at step {step}" in (run / "log.txt").read_text()
    assert checkpoint.load(run / "checkpoints" / "label" / "latest.pt")["step"] == step + 2


# ---------------------------------------------------------------- data identity


def test_a_config_yaml_inside_the_data_folder_does_not_take_over(clean_folder, tmp_path,
                                                                  caplog):
    (clean_folder / "config.yaml").write_text("")
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), *TINY,
                 "--label.steps", "5"]) == 0
    assert "config.yaml: ignored" in caplog.text
    split = json.loads((run / "split.json").read_text())
    assert split["classes"] == ["dark", "light"]  # the folder's images, not the digits


def test_a_run_records_its_data_by_absolute_path_and_continues_from_anywhere(
        clean_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(clean_folder.parent)
    assert main(["label", clean_folder.name, "--out", "run", *TINY, "--label.steps", "5"]) == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"source: {clean_folder}" in saved
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / clean_folder.name).mkdir(parents=True)  # a look-alike relative path there
    monkeypatch.chdir(elsewhere)
    assert main(["generate", str(tmp_path / "run"), "--preset", "tiny",
                 "--generate.steps", "2", "--generate.mode", "labels-only"]) == 0
    assert json.loads((tmp_path / "run" / "split.json").read_text())["classes"] == \
        ["dark", "light"]


def test_out_inside_the_data_folder_is_refused(clean_folder, capsys):
    out = clean_folder / "unlabeled" / "run"
    assert main(["label", str(clean_folder), "--out", str(out), *TINY]) == 2
    assert "lies inside the data folder" in capsys.readouterr().err
    assert not out.exists()


def test_a_changed_unlabeled_pool_is_matched_by_path_on_continue(clean_folder, tmp_path,
                                                                 capsys):
    run = tmp_path / "run"
    args = ["label", str(clean_folder), "--out", str(run), "--preset", "tiny",
            "--label.steps", "6", "--run.checkpoint_every", "3"]
    assert main(args) == 0
    state = checkpoint.load(run / "checkpoints" / "label" / "latest.pt")
    before = dict(zip(state["feature_label_ids"], state["feature_labels"], strict=True))
    gone = ["dark0.png", "light3.png"]
    for name in gone:
        (clean_folder / "unlabeled" / name).unlink()
    new = clean_folder / "unlabeled" / "zz-new.png"
    new.write_bytes((clean_folder / "labeled" / "dark" / "1.png").read_bytes())

    assert main([*args[:-4], "--label.steps", "9", "--run.checkpoint_every", "3"]) == 0
    log = (run / "log.txt").read_text()
    assert "the unlabeled images changed since this run read them (12 then, 11 now)" in log
    assert "unlabeled images: 1 new, 2 gone, 10 kept" in log
    state = checkpoint.load(run / "checkpoints" / "label" / "latest.pt")
    after = dict(zip(state["feature_label_ids"], state["feature_labels"], strict=True))
    new_id, gone_ids = "unlabeled/zz-new.png", {f"unlabeled/{name}" for name in gone}
    assert set(after) == set(before) - gone_ids | {new_id}
    for image_id in set(after) - {new_id}:  # the same image keeps its own row
        assert torch.equal(after[image_id], before[image_id])
    assert torch.allclose(after[new_id], torch.full((2,), 0.5))
    rows = (run / "pseudo_labels.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == sorted(after)


@pytest.mark.parametrize("name, content", [
    ("split.json", ""), ("split.json", "[1, 2]"), ("metrics.json", "{not json"),
    ("split.json", '{"classes": [], "labeled": ["a"], "labeled_labels": []}'),
    ("pseudo_labels.csv", "path,label\nx,1\n"), ("pseudo_labels.csv", "\x80\x81")])
def test_a_damaged_run_record_is_named_not_a_traceback(tmp_path, capsys, name, content):
    run = tmp_path / "run"
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", "5"]) == 0
    (run / name).write_text(content)
    capsys.readouterr()
    for command in (["report", str(run)],
                    ["generate", str(run), "--preset", "tiny", "--generate.steps", "1"],
                    ["label", "digits", "--out", str(run), *TINY, "--label.steps", "6"]):
        code = main(command)
        err = capsys.readouterr().err
        if code != 0:
            assert code == 2 and f"{run / name}: damaged" in err, command
        assert "Traceback" not in err


# ---------------------------------------------------------------- outputs never overwrite


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny label + generate run on a folder of images (its data folder matters here)."""
    root = tmp_path_factory.mktemp("outputs")
    data = root / "data"
    rng = np.random.default_rng(0)
    for k, name in enumerate(("a", "b")):
        for i in range(4):
            image = np.clip(rng.normal(40 + 170 * k, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            write_image(data / "labeled" / name / f"{i}.png", image)
            write_image(data / "unlabeled" / f"{name}{i}.png", image[::-1])
    run = root / "run"
    assert main(["label", str(data), "--out", str(run), *TINY, "--label.steps", "5"]) == 0
    assert main(["generate", str(run), "--preset", "tiny", "--generate.steps", "2",
                 "--generate.mode", "labels-only"]) == 0
    return run


def test_predict_never_overwrites_an_input_a_record_or_an_existing_file(trained_run, capsys):
    data = trained_run.parent / "data"
    image = data / "labeled" / "a" / "0.png"
    before = image.read_bytes()
    pseudo = (trained_run / "pseudo_labels.csv").read_bytes()
    cases = [(["--out", str(image)], "already exists"),
             (["--out", str(image), "--overwrite"], "is one of the images to label"),
             (["--out", str(trained_run / "pseudo_labels.csv"), "--overwrite"],
              "one of the run's own records")]
    for extra, says in cases:
        assert main(["predict", str(trained_run), str(data / "labeled"), *extra]) == 2
        assert says in capsys.readouterr().err, extra
    assert image.read_bytes() == before and (trained_run / "pseudo_labels.csv").read_bytes() \
        == pseudo
    out = trained_run.parent / "labels.csv"
    assert main(["predict", str(trained_run), str(data / "labeled"), "--out", str(out)]) == 0
    assert main(["predict", str(trained_run), str(data / "labeled"), "--out", str(out)]) == 2
    assert main(["predict", str(trained_run), str(data / "labeled"), "--out", str(out),
                 "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 9 and not out.with_suffix(".csv.tmp").exists()


def test_sample_refuses_a_folder_of_files_the_data_folder_and_absurd_counts(
        trained_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.csv").write_text("my own file\n")
    assert main(["sample", str(trained_run), "--per-class", "2", "--out", str(mine)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (mine / "manifest.csv").read_text() == "my own file\n"
    data = trained_run.parent / "data"
    assert main(["sample", str(trained_run), "--per-class", "2", "--out",
                 str(data / "unlabeled" / "more"), "--overwrite"]) == 2
    assert "inside the run's data folder" in capsys.readouterr().err
    assert main(["sample", str(trained_run), "--per-class", "1000000000", "--out",
                 str(tmp_path / "huge")]) == 2
    assert "give 1-1,000,000 images per class" in capsys.readouterr().err
    assert main(["sample", str(trained_run), "--per-class", "2", "--out", str(mine),
                 "--overwrite"]) == 0
    assert (mine / "manifest.csv").read_text().startswith("path,class,seed")
    assert not (tmp_path / "huge").exists()


def test_sample_refuses_what_the_disk_cannot_hold(trained_run, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    assert main(["sample", str(trained_run), "--per-class", "50", "--out",
                 str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "sample would write 100 images" in err and "GB free" in err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- nothing dropped silently


def test_every_path_found_and_not_read_is_listed_with_its_reason(clean_folder, capsys):
    unlabeled = clean_folder / "unlabeled"
    (unlabeled / "dangling.png").symlink_to(clean_folder / "nowhere.png")
    (unlabeled / "loop.png").symlink_to(unlabeled / "loop.png")
    os.mkfifo(unlabeled / "pipe.png")
    (unlabeled / "zero.png").symlink_to("/dev/zero")
    (unlabeled / "folder.png").mkdir()
    (unlabeled / ".hidden.png").write_bytes((unlabeled / "dark1.png").read_bytes())
    (clean_folder / "labeled" / ".NET").mkdir()
    (unlabeled / "again").symlink_to(unlabeled)  # a folder that links back: read once
    assert main(["data", "check", str(clean_folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    assert "dangling" in reasons["unlabeled/dangling.png"]
    assert "loop" in reasons["unlabeled/loop.png"]
    assert "not a regular file" in reasons["unlabeled/pipe.png"]
    assert "not a regular file" in reasons["unlabeled/zero.png"]
    assert "folder named like an image" in reasons["unlabeled/folder.png"]
    assert "hidden" in reasons["unlabeled/.hidden.png"] and "hidden" in reasons["labeled/.NET"]
    assert "already read" in reasons["unlabeled/again"]
    assert report["unlabeled"] == 12


def test_class_names_are_one_unicode_form_and_look_alikes_are_refused(tmp_path, capsys):
    import unicodedata
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name in (nfd, "tea"):
        for i in range(2):
            write_image(root / "labeled" / name / f"{i}.png", rng.integers(0, 255, (8, 8, 3),
                                                                            dtype=np.uint8))
    (root / "labels.csv").write_text(f"path,label\nlabeled/tea/0.png,tea\nx.png,   \n"
                                     f"labeled/{nfd}/1.png,{nfc}\n", encoding="utf-8")
    (root / "x.png").write_bytes((root / "labeled" / "tea" / "1.png").read_bytes())
    assert main(["data", "check", str(root), "--labels", str(root / "labels.csv"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == [nfc, "tea"]  # the NFD folder is the NFC class; the CSV agrees
    assert any("only spaces" in w for w in report["warnings"])
    (root / "labeled" / nfc).mkdir()  # the same name in the other form: two folders
    write_image(root / "labeled" / nfc / "2.png", rng.integers(0, 255, (8, 8, 3),
                                                                dtype=np.uint8))
    assert main(["data", "check", str(root)]) == 1
    assert "one class name written in two Unicode forms" in capsys.readouterr().out


def test_a_class_named_test_is_a_class_for_evaluate_test(tmp_path):
    from semigen.data import read_class_folders
    rng = np.random.default_rng(0)
    for name in ("test", "other"):
        write_image(tmp_path / "held" / name / "0.png", rng.integers(0, 255, (8, 8, 1),
                                                                      dtype=np.uint8))
    images, _ = read_class_folders(tmp_path / "held", ["other", "test"], (8, 8, 1))
    assert sorted(images.ids) == ["other/0.png", "test/0.png"]


def test_a_very_long_class_name_gets_a_folder_name_that_fits(tmp_path):
    from semigen.data import class_folders
    long = "é" * 127 + "x"  # 255 bytes in UTF-8
    names = class_folders([long, long + "y"])
    assert all(len((n + "-00000.png").encode()) <= 255 for n in names)
    assert len(set(names)) == 2
    (tmp_path / names[0]).mkdir()
    (tmp_path / names[0] / f"{names[0]}-00000.png").write_bytes(b"")


def test_an_empty_run_config_is_named_as_damaged(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", "3"]) == 0
    (run / "config.yaml").write_text("")
    capsys.readouterr()
    for command in (["label", str(run)], ["report", str(run)],
                    ["label", "digits", "--out", str(run), *TINY]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "config.yaml: empty or damaged" in err and "another split" not in err, command


def test_a_corrupt_image_prints_no_raw_opencv_line(tmp_path, capfd):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_image(tmp_path / "d" / "labeled" / name / "0.png",
                    rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    (tmp_path / "d" / "labeled" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50)
    assert main(["data", "check", str(tmp_path / "d")]) == 0
    out, err = capfd.readouterr()
    assert "labeled/a/bad.png" in out and "[ERROR" not in err and "imdecode" not in err
