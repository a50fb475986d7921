"""Hostile and unlucky inputs: each case is numbered by the kind of trouble. None may
break a run or end a command in a traceback; after any crash and rerun, a run's records equal
an uninterrupted run's."""

import csv
import errno
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blob, write_image

from semigen import api, checkpoint
from semigen.checkpoint import Checkpointer, CheckpointError
from semigen.cli import main
from semigen.config import ConfigError, resolve, validate
from semigen.data import images as image_io
from semigen.data import load_dataset
from semigen.run import Records, read_metrics, read_stats

TINY = ["--preset", "tiny", "--label.mode", "labels-only"]


def records(run: Path, stage: str | None = None) -> list[dict]:
    """stats.jsonl without its wall-clock times: what must equal an uninterrupted run's."""
    return [{k: v for k, v in r.items() if k != "time"} for r in read_stats(run)
            if stage is None or r["stage"] == stage]


def tiny_cfg(out, **overrides):
    values = {"run.out": str(out), "label.mode": "labels-only", "label.steps": "20",
              "run.log_every": "1", "run.checkpoint_every": "5", "label.eval_every": "5"}
    return resolve(preset="tiny", overrides=values | overrides)


def two_class_folder(root: Path, classes=("a", "b"), per_class=4, unlabeled=4) -> Path:
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        for i in range(per_class):
            image = np.clip(rng.normal(40 + 170 * k, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            write_image(root / "labeled" / name / f"{i}.png", image)
            write_image(root / "test" / name / f"{i}.png", image[::-1])
    for i in range(unlabeled):
        write_image(root / "unlabeled" / f"u{i}.png", blob(rng, 12))
    return root


# ---------------------------------------------------------------- 1. --out of another run


def test_out_pointing_at_another_data_sets_run_is_refused_before_writing(
        tmp_path, clean_folder, capsys):
    run = tmp_path / "W"
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", "10"]) == 0
    kept = ("config.yaml", "split.json", "data_report.json", "metrics.json", "stats.jsonl",
            "pseudo_labels.csv")
    before = {name: (run / name).read_bytes() for name in kept}
    capsys.readouterr()

    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "data.source: 'digits' ->" in err and "another --out" in err
    assert main(["label", "digits", "--labels-per-class", "5", "--out", str(run), *TINY]) == 2
    assert "data.labels_per_class: 10 -> 5" in capsys.readouterr().err
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.net", "wrn28_2"]) == 2
    assert "label.net: 'cnn' -> 'wrn28_2'" in capsys.readouterr().err
    assert main(["fit", str(clean_folder), "--out", str(run), "--preset", "tiny"]) == 2
    assert {name: (run / name).read_bytes() for name in kept} == before

    # the run still reports and continues; a longer budget is a safe change, and logged
    assert main(["report", str(run)]) == 0
    assert main(["label", "digits", "--out", str(run), *TINY, "--label.steps", "20"]) == 0
    log = (run / "log.txt").read_text()
    assert "changed since its config.yaml: label.steps: 10 -> 20" in log
    assert checkpoint.load(run / "checkpoints" / "label" / "latest.pt")["step"] == 20


def test_a_folder_whose_labeled_images_changed_is_not_continued(tmp_path, clean_folder, capsys):
    run = tmp_path / "W"
    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 0
    split = (run / "split.json").read_bytes()
    write_image(clean_folder / "labeled" / "dark" / "new.png", blob(np.random.default_rng(5), 12))
    capsys.readouterr()
    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 2
    assert "labeled images: 1 added, 0 removed, 0 relabeled" in capsys.readouterr().err
    assert (run / "split.json").read_bytes() == split


def test_out_pointing_at_a_folder_of_other_files_is_refused(tmp_path, clean_folder, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "holiday.png", blob(np.random.default_rng(0)))
    assert main(["label", str(clean_folder), "--out", str(photos), *TINY]) == 2
    assert "holds other files (holiday.png)" in capsys.readouterr().err
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.png"]


# ---------------------------------------------------------------- 2. files beyond bounded memory


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_huge_declared_sizes_and_huge_files_are_skipped_by_every_command(
        tmp_path, clean_folder, capsys):
    unlabeled = clean_folder / "unlabeled"
    (unlabeled / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    for name in ("huge.png", "huge.dat"):  # sparse: 3 GiB that cost no disk
        with open(unlabeled / name, "wb") as f:
            f.truncate(3 << 30)
    assert main(["data", "check", str(clean_folder)]) == 0
    out = capsys.readouterr().out
    assert "unlabeled/bomb.png: too large to decode" in out
    assert "unlabeled/huge.png: unreadable (its header gives no size" in out
    assert "unlabeled/huge.dat: not an image" in out
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), "--preset", "tiny",
                 "--label.steps", "5"]) == 0
    report = (run / "data_report.json").read_text()
    assert "bomb.png" in report and "huge.dat" in report
    assert main(["predict", str(run), str(unlabeled), "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12  # the readable ones


def test_large_jpegs_decode_reduced_and_other_large_images_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "MAX_PIXELS", 20_000)  # 300x300 is then "large"
    image = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    jpeg = write_image(tmp_path / "big.jpg", image)
    png = write_image(tmp_path / "big.png", image)
    flags = []
    real_decode = image_io.cv2.imdecode

    def decode(buffer, flag):
        flags.append(flag)
        return real_decode(buffer, flag)

    monkeypatch.setattr(image_io.cv2, "imdecode", decode)
    decoded, why = image_io.read_image(jpeg, 64)
    assert why == "300x300" and decoded.shape == (64, 64, 3)  # the size found in the file
    assert flags == [image_io._REDUCED_COLOR[4]]  # 75x75 from libjpeg, never 300x300
    decoded, why = image_io.read_image(png, 64)
    assert decoded is None and why.startswith("too large to decode (300x300 pixels")
    assert len(flags) == 1  # the PNG was never decoded


# ---------------------------------------------------------------- 3. distinct class folders


def csv_folder(root: Path, labels: list[str], per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for k, label in enumerate(labels):
        for i in range(per_class):
            write_image(root / "images" / f"{k}-{i}.png", blob(rng, 12))
            rows.append(f"images/{k}-{i}.png,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_sample_gives_each_class_its_own_folder(tmp_path):
    data = csv_folder(tmp_path / "data", ["x/y", "x-y", "x:y"])
    run, out = tmp_path / "run", tmp_path / "samples"
    assert main(["generate", str(data), "--labels", str(data / "labels.csv"), "--out", str(run),
                 "--preset", "tiny", "--generate.mode", "labels-only",
                 "--generate.steps", "2"]) == 0
    assert main(["sample", str(run), "--per-class", "2", "--out", str(out)]) == 0
    with open(out / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(manifest) == len(files) == 6
    assert sorted(r["path"] for r in manifest) == files
    folders = {r["class"]: r["path"].split("/")[0] for r in manifest}
    assert sorted(folders) == ["x-y", "x/y", "x:y"]
    assert sorted(folders.values()) == ["x-y", "x-y~1", "x-y~2"]  # class order: x-y, x/y, x:y


# ---------------------------------------------------------------- 4. class names are plain text


def test_report_draws_class_names_as_plain_text(tmp_path):
    data = two_class_folder(tmp_path / "data", classes=("$\\frac$", "b$x^2$"))
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--out", str(run)]
    assert main(["label", str(data), *common, "--label.steps", "5"]) == 0
    assert main(["generate", str(run), *common, "--generate.steps", "2"]) == 0
    assert main(["evaluate", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "$\\frac$" in page and "b$x^2$" in page


# ---------------------------------------------------------------- 5. one class


def test_a_single_class_is_refused_up_front(tmp_path, capsys):
    data = two_class_folder(tmp_path / "data", classes=("only",))
    assert main(["data", "check", str(data)]) == 1
    assert "only one class ('only')" in capsys.readouterr().out
    assert main(["label", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny"]) == 2
    assert "only one class" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------- 6. CSV paths outside DATA


def test_csv_rows_outside_the_data_folder_are_refused_unless_allowed(tmp_path, capsys):
    data = csv_folder(tmp_path / "data", ["a", "b"])
    write_image(tmp_path / "secret.png", blob(np.random.default_rng(1), 12))
    outside = write_image(tmp_path / "elsewhere" / "x.png", blob(np.random.default_rng(2), 12))
    with open(data / "labels.csv", "a") as f:
        f.write("../secret.png,a\n")
        f.write(f"{outside},\n")
    args = ["data", "check", str(data), "--labels", str(data / "labels.csv")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2 path(s) outside the data folder" in out
    assert "line 8: ../secret.png" in out and f"line 9: {outside}" in out
    assert main([*args, "--data.allow-outside-paths", "true"]) == 0
    assert "labeled: 7   unlabeled: 1" in capsys.readouterr().out


# ---------------------------------------------------------------- 7. messages, not tracebacks


def test_output_paths_that_cannot_be_written_give_messages(tmp_path, clean_folder, capsys):
    a_file = tmp_path / "a file"
    a_file.write_text("mine")
    assert main(["label", str(clean_folder), "--out", str(a_file), *TINY]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    assert a_file.read_text() == "mine"

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "checkpoints").write_text("in the way")
    assert main(["label", str(clean_folder), "--out", str(blocked), *TINY]) == 1
    assert "a file stands where semigen needs a folder" in capsys.readouterr().err

    if os.geteuid() == 0:  # root writes through permissions; /sys refuses even root
        read_only = Path("/sys/semigen-test/run")
        if not Path("/sys").is_dir():
            pytest.skip("no /sys to stand for a read-only folder")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        read_only = tmp_path / "ro" / "run"
    assert main(["label", str(clean_folder), "--out", str(read_only), *TINY]) == 1
    assert "semigen cannot write there" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_gives_a_message_and_the_run_resumes(tmp_path, clean_folder, monkeypatch,
                                                         capsys):
    real_save = torch.save

    def save_to_full_disk(obj, f):
        with open("/dev/full", "wb") as full:  # the kernel's ENOSPC, for real
            real_save(obj, full)
            full.flush()

    monkeypatch.setattr(torch, "save", save_to_full_disk)
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "run the same command again" in err
    assert "Traceback" not in err
    assert not list(run.rglob("*.tmp"))
    monkeypatch.undo()
    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 0


def test_malformed_checkpoints_are_refused_with_the_files_name(tmp_path, clean_folder, capsys):
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 0
    state = checkpoint.load(run / "checkpoints" / "label" / "latest.pt")
    state.pop("loaded_from", None)
    no_ema = tmp_path / "no_ema.pt"
    checkpoint.save({k: v for k, v in state.items() if k != "ema"}, no_ema)
    odd_net = tmp_path / "odd_net.pt"
    checkpoint.save(state | {"net": state["net"] | {"depth": 99}}, odd_net)
    capsys.readouterr()
    no_classes = tmp_path / "no_classes.pt"
    checkpoint.save({k: v for k, v in state.items() if k != "classes"}, no_classes)
    for path, expected in ((no_ema, "no entry 'ema'"), (odd_net, "unexpected keyword"),
                           (no_classes, "no entry 'classes'")):
        assert main(["predict", str(run), str(clean_folder / "test"), "--out",
                     str(tmp_path / "p.csv"), "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"semigen: error: {path}: not a usable classifier checkpoint" in err, err
        assert expected in err

    # a latest.pt that lost its adaptive levels: the resume says so instead of a KeyError
    checkpoint.save({k: v for k, v in state.items() if k != "levels"},
                    run / "checkpoints" / "label" / "latest.pt")
    assert main(["label", str(clean_folder), "--out", str(run), *TINY,
                 "--label.steps", "40"]) == 2
    assert "no entry 'levels'" in capsys.readouterr().err

    empty = tmp_path / "inception.pth"
    empty.write_bytes(b"")
    from semigen.evaluation.images import InceptionFeatures
    with pytest.raises(CheckpointError,
                       match="not a (readable )?torchvision Inception-v3 state dict"):
        InceptionFeatures(str(empty))


# ---------------------------------------------------------------- 8. crash leftovers


class Crash(Exception):
    """Stands for kill -9 at a chosen point: nothing after it runs."""


def test_a_run_killed_before_its_first_checkpoint_leaves_no_duplicate_lines(
        tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    api.label_run(tiny_cfg(straight))

    killed = tmp_path / "killed"

    def crash(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(Checkpointer, "save", crash)  # steps 1-5 logged, no checkpoint yet
    with pytest.raises(Crash):
        api.label_run(tiny_cfg(killed))
    monkeypatch.undo()
    assert records(killed)  # the dead attempt's lines are there
    api.label_run(tiny_cfg(killed))
    assert records(killed) == records(straight)


def test_a_kill_between_the_done_line_and_metrics_leaves_one_done_line(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    api.label_run(tiny_cfg(straight))
    killed = tmp_path / "killed"
    monkeypatch.setattr(Records, "update_metrics", lambda *a: (_ for _ in ()).throw(Crash))
    with pytest.raises(Crash):
        api.label_run(tiny_cfg(killed))
    monkeypatch.undo()
    api.label_run(tiny_cfg(killed))
    assert [r["event"] for r in records(killed) if "event" in r] == ["done"]
    assert records(killed) == records(straight)
    assert read_metrics(killed) == read_metrics(straight)  # each with its own run id


def scalar_events(run: Path, stage: str = "label") -> list[tuple[str, int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard" / stage), purge_orphaned_data=False)
    events.Reload()
    return sorted((tag, e.step, e.value) for tag in events.Tags()["scalars"]
                  for e in events.Scalars(tag))


def test_a_crash_mid_line_after_the_checkpoint_resumes_to_equal_records(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    api.label_run(tiny_cfg(straight))
    killed = tmp_path / "killed"
    real_stats = Records.stats

    def stats_then_crash(self, stage, step, **values):
        real_stats(self, stage, step, **values)
        if step == 13:  # past the step-10 checkpoint: lines and events the resume redoes
            with open(self.path / "stats.jsonl", "a") as f:
                f.write('{"time": 1, "stage": "lab')  # torn mid-write
            raise Crash

    monkeypatch.setattr(Records, "stats", stats_then_crash)
    with pytest.raises(Crash):
        api.label_run(tiny_cfg(killed))
    monkeypatch.undo()
    folder = killed / "checkpoints" / "label"
    (folder / "latest.pt.tmp").write_bytes(b"half a checkpoint")  # kill -9 inside a save
    (killed / "config.yaml.tmp").write_text("half")
    api.label_run(tiny_cfg(killed))

    assert records(killed) == records(straight)
    assert scalar_events(killed) == scalar_events(straight)  # no step twice in TensorBoard
    assert not list(killed.rglob("*.tmp"))
    assert sorted(p.name for p in folder.iterdir()) == \
        sorted(p.name for p in (straight / "checkpoints" / "label").iterdir())


# ---------------------------------------------------------------- 9. nothing chosen on the test set


def test_no_checkpoint_is_chosen_by_test_accuracy(tmp_path, clean_folder, capsys):
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), *TINY]) == 0
    assert not (run / "checkpoints" / "label" / "best.pt").exists()
    metrics = (run / "metrics.json").read_text()
    assert "test_accuracy" in metrics and "best_test_accuracy" not in metrics
    capsys.readouterr()
    assert main(["predict", str(run), str(clean_folder / "test"), "--out",
                 str(tmp_path / "p.csv"), "--checkpoint", "best"]) == 2
    assert "chosen by test accuracy" in capsys.readouterr().err


# ---------------------------------------------------------------- 10. progress in a log file


def test_progress_is_a_few_plain_lines_when_stderr_is_not_a_terminal(tmp_path, capfd):
    assert main(["label", "digits", "--out", str(tmp_path / "run"), *TINY,
                 "--run.progress", "true", "--label.steps", "30"]) == 0
    err = capfd.readouterr().err
    bars = [line for line in err.splitlines() if "label (labels-only)" in line]
    assert "\r" not in err
    assert 1 <= len(bars) <= 3, bars  # first and last (runs shorter than 30 s)
    assert "30/30" in bars[-1]


# ---------------------------------------------------------------- 11. threads


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_are_a_setting_and_honour_omp_num_threads(tmp_path, monkeypatch,
                                                          restore_threads):
    from semigen.runtime import use_threads
    assert main(["label", "digits", "--out", str(tmp_path / "run"), *TINY,
                 "--label.steps", "2", "--runtime.threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert use_threads(0) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    assert use_threads(0) == 2  # neither given: torch's own choice stays
    bad = resolve(overrides={"runtime.threads": "-1"})
    with pytest.raises(ConfigError, match="runtime.threads must be >= 0"):
        validate(bad)


# ---------------------------------------------------------------- 12. the evaluator's cache key


def test_an_evaluator_of_another_recipe_is_not_reused(tmp_path, monkeypatch):
    from semigen.evaluation import images as evaluation

    cfg = resolve(preset="tiny", overrides={"data.cache_dir": str(tmp_path)})
    shape = load_dataset(cfg.data).shape

    def folder():
        return Path(evaluation.evaluator_config(cfg, shape, 5).run.out)

    first = folder()
    assert folder() == first  # the same recipe finds the same cache
    evaluation.load_evaluator(cfg, shape, 5)
    assert (first / "evaluator.json").is_file()
    monkeypatch.setattr(evaluation.torch, "__version__", "99.0")
    assert folder() != first
    monkeypatch.undo()
    monkeypatch.setattr(evaluation, "EVALUATOR_VERSION", evaluation.EVALUATOR_VERSION + 1)
    assert folder() != first  # stands for a change to how an evaluator is trained
    evaluation.load_evaluator(cfg, shape, 5)
    assert (folder() / "evaluator.json").is_file()
    assert len(list((tmp_path / "evaluators").iterdir())) == 2
    assert folder() != Path(evaluation.evaluator_config(cfg, shape, 6).run.out)


def test_a_refactor_of_the_source_keeps_the_cached_evaluator(tmp_path):
    """The cache key of a copy of semigen whose training code was edited (comments, names,
    moved functions: no arithmetic) is the key of the original."""
    import shutil
    import subprocess
    import sys

    import semigen
    copy = tmp_path / "src" / "semigen"
    shutil.copytree(Path(semigen.__file__).parent, copy)
    for path in [copy / "labeling" / "train.py", copy / "training.py", copy / "stage.py"]:
        path.write_text("# an edit that changes no arithmetic\n" + path.read_text())
    script = ("from semigen.config import resolve; from semigen.evaluation import images; "
              "import semigen; cfg = resolve(preset='tiny'); "
              "print(semigen.__file__); print(images.evaluator_run(cfg, (8, 8, 1)).name)")

    def key_of(src: Path) -> list[str]:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(src)}).stdout
        return out.split()

    edited, original = key_of(tmp_path / "src"), key_of(Path(semigen.__file__).parents[1])
    assert edited[0].startswith(str(tmp_path))  # the edited copy was the one imported
    assert edited[1] == original[1]


def test_enospc_errno_is_what_the_message_keys_on():
    from semigen.cli import describe_os_error
    message = describe_os_error(OSError(errno.ENOSPC, "No space left on device", "x.pt"))
    assert message.startswith("no space left on the device writing x.pt")


def test_a_new_semi_supervised_setting_keeps_the_cached_evaluator():
    """The evaluator trains on every label: fields of the semi-supervised recipe (the second
    teacher, thresholds, the representation stage) do not change its weights, nor its key."""
    from semigen.evaluation import images as evaluation

    cfg = resolve(preset="tiny")
    recipe = evaluation.evaluator_config(cfg, (8, 8, 1), 5)
    key = evaluation.evaluator_key(recipe, (8, 8, 1))
    for field, value in (("label.second_teacher", False), ("label.lambda_u", 3.0),
                         ("label.pretrain_lr", 0.5), ("generate.width", 64)):
        changed = resolve(preset="tiny", overrides={field: value})
        assert evaluation.evaluator_key(
            evaluation.evaluator_config(changed, (8, 8, 1), 5), (8, 8, 1)) == key, field
    lr = resolve(preset="tiny", overrides={"label.lr": 0.5})
    other = evaluation.evaluator_config(lr, (8, 8, 1), 5)
    other.label.lr = 0.5  # the recipe's own training settings do count
    assert evaluation.evaluator_key(other, (8, 8, 1)) != key
