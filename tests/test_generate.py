"""Module 2 on tiny budgets: training data, the GAN loop, resume, sample."""

import csv

import numpy as np
import pytest
import torch
from conftest import interrupt_after_checkpoint

from semigen import api, checkpoint, generation
from semigen.api import label_run as train_classifier
from semigen.cli import main
from semigen.config import resolve
from semigen.data import DataError, folder_name, load_dataset
from semigen.generation.data import training_set
from semigen.run import read_pseudo_labels, read_stats


@pytest.fixture(scope="module")
def label_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    train_classifier(resolve(preset="tiny", overrides={"run.out": str(out)}))
    return out


def write_pseudo(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence", "round"])
        writer.writerows(rows)


def test_training_set_takes_confident_pseudo_labels_and_balances_classes(tmp_path):
    data = load_dataset(resolve(preset="tiny").data)
    ids = data.unlabeled.ids
    pseudo_csv = tmp_path / "p.csv"
    write_pseudo(pseudo_csv, [(ids[0], "3", "0.95", 0), (ids[1], "3", "0.5", 0),
                              (ids[2], "4", "0.99", 0), (ids[2], "5", "0.97", 1)])
    pseudo = read_pseudo_labels(pseudo_csv, data.classes)
    assert pseudo[ids[2]] == (5, 0.97)  # the latest round wins
    images, labels, weights = training_set(data, "semi", pseudo, 0.9, False)
    assert len(labels) == 100 + 2  # ids[1] is below the confidence bar
    assert np.bincount(labels).tolist() == [10, 10, 10, 11, 10, 11, 10, 10, 10, 10]
    per_class = [weights[torch.from_numpy(labels == c)].sum().item() for c in range(10)]
    assert per_class == pytest.approx([per_class[0]] * 10)  # each class drawn equally often
    _, lo_labels, _ = training_set(data, "labels-only", pseudo, 0.9, False)
    _, all_labels, _ = training_set(data, "all-labels", None, 0.9, False)
    assert len(lo_labels) == 100 and len(all_labels) == 1347
    with pytest.raises(DataError, match="run `semigen label` first"):
        training_set(data, "semi", None, 0.9, False)
    _, _, weighted = training_set(data, "semi", pseudo, 0.9, True)
    assert weighted[100].item() == pytest.approx(0.95 * weighted[0].item() * 10 / 11)


def test_unknown_pseudo_label_is_named(tmp_path):
    write_pseudo(tmp_path / "p.csv", [("a.png", "zebra", "0.9", 0)])
    with pytest.raises(DataError, match="line 2: label 'zebra' is not a class"):
        read_pseudo_labels(tmp_path / "p.csv", ["cat", "dog"])


def test_generate_on_a_label_run(label_run):
    assert main(["generate", str(label_run), "--preset", "tiny"]) == 0
    state = checkpoint.load(label_run / "checkpoints" / "generate" / "latest.pt")
    assert state["kind"] == "generator" and state["step"] == 20
    grids = sorted(p.name for p in (label_run / "samples").iterdir())
    assert grids == ["generate-step-00000010.png", "generate-step-00000020.png"]
    import cv2
    grid = cv2.imread(str(label_run / "samples" / grids[-1]))
    assert grid.shape[0] == 10 * 9 + 1 and grid.shape[1] == 4 * 9 + 1  # 10 rows of 4, 8 px
    metrics = __import__("json").loads((label_run / "metrics.json").read_text())
    assert {"label", "generate"} <= set(metrics)  # the label stage's entry is kept
    assert metrics["generate"]["training_images"] >= 100
    generator = generation.from_checkpoint(state)
    images = generation.sample(generator, torch.tensor([0, 1]), [1, 2])
    assert images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("class_loss", ["0", "0.5"])
def test_generate_resumes_exactly(tmp_path, monkeypatch, clean_folder, class_loss):
    def cfg(out):
        return resolve(preset="tiny", overrides={
            "data.source": str(clean_folder), "generate.mode": "labels-only",
            "generate.class_loss": class_loss, "run.out": str(out), "run.log_every": "1",
            "run.checkpoint_every": "5"})

    api.generate_run(cfg(tmp_path / "straight"))
    interrupt_after_checkpoint(monkeypatch, lambda: api.generate_run(cfg(tmp_path / "resumed")))
    api.generate_run(cfg(tmp_path / "resumed"))

    def losses(out):
        return [(r["step"], r["d_loss"], r["g_loss"], r.get("d_class_loss"), r.get("g_class_loss"))
                for r in read_stats(out) if "d_loss" in r]
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert len(losses(tmp_path / "straight")) == 20
    # the auxiliary classifier's losses are logged when it trains, and only then
    assert all((row[3] is not None) == (class_loss != "0") for row in losses(tmp_path / "straight"))


def test_sample_is_the_same_whatever_the_batch_size(label_run, tmp_path):
    if not (label_run / "checkpoints" / "generate" / "latest.pt").exists():
        assert main(["generate", str(label_run), "--preset", "tiny"]) == 0
    for batch in ("3", "40"):
        assert main(["sample", str(label_run), "--per-class", "4", "--seed", "9",
                     "--batch-size", batch, "--out", str(tmp_path / batch)]) == 0
    with open(tmp_path / "3" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert len(manifest) == 40 and manifest[0]["path"] == "0/0-00000.png"
    assert len({r["checkpoint_sha256"] for r in manifest}) == 1
    assert len({r["seed"] for r in manifest}) == 40
    for row in manifest:
        a = (tmp_path / "3" / row["path"]).read_bytes()
        assert a == (tmp_path / "40" / row["path"]).read_bytes(), row["path"]


def test_class_names_become_safe_folder_names():
    assert folder_name("T-shirt/top") == "T-shirt-top"
    assert folder_name("a:b*c") == "a-b-c" and folder_name("..") == "class"


def test_a_checkpoint_of_the_wrong_kind_is_refused(label_run, tmp_path, capsys):
    if not (label_run / "checkpoints" / "generate" / "latest.pt").exists():
        assert main(["generate", str(label_run), "--preset", "tiny"]) == 0
    wrong = label_run / "checkpoints" / "generate" / "latest.pt"
    assert main(["predict", str(label_run), str(label_run / "samples"), "--out",
                 str(tmp_path / "p.csv"), "--checkpoint", str(wrong)]) == 2
    assert "holds a generator, not a classifier" in capsys.readouterr().err
