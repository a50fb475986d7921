import json
import subprocess
import sys

import pytest

from semigen.cli import main
from semigen.run import read_stats


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "semigen", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("data", "label", "predict", "generate", "sample", "evaluate", "fit", "report",
                 "suggest", "demo"):
        assert name in out


def test_data_check_reports_bad_files_and_exits_1_on_errors(messy_folder, capsys):
    assert main(["data", "check", str(messy_folder),
                 "--labels", str(messy_folder / "labels.csv")]) == 1
    out = capsys.readouterr().out
    for expected in ("unlabeled/truncated.png: unreadable (corrupt or truncated image)",
                     "unlabeled/empty.jpg: empty file", "unlabeled/notes.txt: not an image",
                     "listed in labels.csv line 3, file missing", "label 'horse' (line 4)",
                     "class 'bird' has no labeled images", "used as: 16x16 rgb"):
        assert expected in out


def test_data_check_exits_0_on_warnings_only(clean_folder, capsys, tmp_path):
    (clean_folder / "unlabeled" / "broken.png").write_bytes(b"\x89PNG broken")
    assert main(["data", "check", str(clean_folder)]) == 0
    out = capsys.readouterr().out
    assert "broken.png: unreadable" in out and "1 file(s) skipped" in out
    assert main(["data", "check", str(clean_folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labeled_per_class"] == {"dark": 6, "light": 6}
    assert report["skipped"] == [{"path": "unlabeled/broken.png",
                                  "reason": "unreadable (corrupt or truncated image)"}]


def test_builtin_check(capsys):
    assert main(["data", "check", "digits", "--labels-per-class", "4", "--split-seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "labeled: 40   unlabeled: 1307  (true labels held out for evaluation)" in out


@pytest.mark.parametrize("argv, message", [
    (["--label.lr", "-1"], "label.lr must be > 0"),
    (["--label.nope", "3"], "unknown option 'label.nope'"),
    (["--label.steps"], "needs a value"),
    (["--device", "tpu"], "runtime.device must be one of"),
    (["--bogus"], "unrecognized argument: --bogus"),
])
def test_bad_config_is_refused_before_anything_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["label", "digits", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_prints_config_and_data_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["label", "digits", "--out", str(out), "--preset", "tiny",
                 "--label.lr=0.1", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "lr: 0.1" in text and "steps: 30" in text and "data: digits" in text
    assert not out.exists()


def test_fit_refuses_a_bad_config_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "digits", "--rounds", "-2", "--out", str(out),
                 "--fit.synthetic_ratio", "-1"]) == 2
    err = capsys.readouterr().err
    assert "fit.rounds must be >= 0" in err and "fit.synthetic_ratio must be in [0, 64]" in err
    assert not out.exists()


def test_label_on_a_folder_writes_the_run_directory(clean_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(out), "--preset", "tiny",
                 "--label.mode", "labels-only"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "log.txt", "stats.jsonl", "split.json", "data_report.json",
            "metrics.json", "checkpoints", "tensorboard", "pseudo_labels.csv"} <= names
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["labeled"]) == sorted(f"labeled/{c}/{i}.png" for c in ("dark", "light")
                                              for i in range(6))
    assert "source: " + str(clean_folder) in (out / "config.yaml").read_text()
    stats = read_stats(out)
    assert any("test_accuracy" in r for r in stats)
    metrics = json.loads((out / "metrics.json").read_text())["label"]
    assert metrics["test_accuracy"] > 0.9  # dark vs light is easy
    assert "label done" in (out / "log.txt").read_text()
    assert list((out / "tensorboard").iterdir())
