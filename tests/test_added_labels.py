"""Labels added after a run's split (RUN/added_labels.csv, what `semigen review` writes): read
as true labels, continuing the run trains the classifier again on them, the features kept."""

import json

import numpy as np
import pytest

import semigen
from semigen.cli import main
from semigen.config import make_config
from semigen.data import DataError, added, load_dataset
from semigen.run import read_stats


def training_lines(run, stage):
    return [r for r in read_stats(run / "stats.jsonl") if r["stage"] == stage and "loss" in r]


def test_apply_moves_unlabeled_images_and_corrects_labels(tmp_path):
    data = load_dataset(make_config("digits", labels_per_class=2).data)
    first_unlabeled, second_unlabeled = data.unlabeled.ids[:2]
    own = data.labeled.ids[0]
    wrong = data.classes[(data.labeled.labels[0] + 1) % 10]
    csv = tmp_path / "added.csv"
    added.write(csv, {first_unlabeled: "3", second_unlabeled: "7", own: wrong,
                      "digits/train/99999": "1"})

    grown = added.apply(data, csv)

    assert len(grown.labeled) == len(data.labeled) + 2
    assert len(grown.unlabeled) == len(data.unlabeled) - 2
    assert len(grown.unlabeled_truth) == len(grown.unlabeled)
    position = {image: i for i, image in enumerate(grown.labeled.ids)}
    assert grown.labeled.labels[position[first_unlabeled]] == 3
    assert grown.labeled.labels[position[second_unlabeled]] == 7
    assert grown.classes[grown.labeled.labels[position[own]]] == wrong
    moved = data.unlabeled.ids.index(first_unlabeled)
    assert np.array_equal(grown.labeled.images[position[first_unlabeled]],
                          data.unlabeled.images[moved])
    assert first_unlabeled not in grown.unlabeled.ids
    assert grown.report.added_labels == {"file": str(csv), "added": 2, "corrected": 1,
                                         "not_found": 1}
    assert any("99999" in w for w in grown.report.warnings)
    assert grown.split_record(make_config("digits").data)["added_labels"] == \
        added.fingerprint(added.read(csv))
    # the split's labels (the corrected one too) estimate accuracy; the two added never do
    allowed = grown.held_out_allowed()
    assert allowed[position[own]] and allowed.sum() == len(data.labeled)
    assert not allowed[position[first_unlabeled]] and not allowed[position[second_unlabeled]]


def test_a_class_the_data_lacks_is_refused_naming_the_file(tmp_path):
    data = load_dataset(make_config("digits").data)
    csv = tmp_path / "added.csv"
    csv.write_text(f"path,label\n{data.unlabeled.ids[0]},giraffe\n")
    with pytest.raises(DataError, match=r"added.csv.*'giraffe'"):
        added.apply(data, csv)
    csv.write_text(f"path,label\n{data.unlabeled.ids[0]},\n")
    with pytest.raises(DataError, match="line 2"):
        added.read(csv)


def test_write_is_atomic_and_rows_round_trip(tmp_path):
    csv = tmp_path / "run" / "added_labels.csv"
    labels = {"unlabeled/a, b.png": "cat", 'unlabeled/"q".png': "dog"}
    added.write(csv, labels)
    assert added.read(csv) == labels
    assert [p.name for p in csv.parent.iterdir()] == ["added_labels.csv"]  # no temporary left
    assert added.fingerprint(labels) == added.fingerprint(dict(reversed(labels.items())))


def test_continuing_a_run_trains_again_on_added_labels(tmp_path, capsys):
    run = tmp_path / "run"
    semigen.label("digits", out=str(run), preset="tiny", labels_per_class=2)
    split = json.loads((run / "split.json").read_text())
    represent_lines = training_lines(run, "represent")
    data = load_dataset(make_config("digits", labels_per_class=2).data)
    truth = dict(zip(data.unlabeled.ids, data.unlabeled_truth, strict=True))
    picked = data.unlabeled.ids[:5]
    wrong = {split["labeled"][0]: data.classes[(split["labeled_labels"][0] + 1) % 10]}
    added.write(run / "added_labels.csv", {p: data.classes[truth[p]] for p in picked} | wrong)

    # generate alone would train on pseudo-labels made without them: refused, saying what to do
    assert main(["generate", str(run), "--preset", "tiny"]) == 2
    assert "semigen label" in capsys.readouterr().err

    assert main(["label", str(run), "--preset", "tiny"]) == 0
    grown = json.loads((run / "split.json").read_text())
    assert len(grown["labeled"]) == len(split["labeled"]) + 5
    assert set(picked) <= set(grown["labeled"])
    assert "5 labels added, 1 corrected" in (run / "log.txt").read_text()
    earlier = run / "earlier" / "1"
    assert json.loads((earlier / "metrics.json").read_text())["label"]["labeled"] == 20
    assert json.loads((run / "metrics.json").read_text())["label"]["labeled"] == 25
    assert (earlier / "checkpoints" / "label").is_dir() and (run / "checkpoints" / "label").is_dir()
    # the five added labels train but never estimate (Label next offers the hardest images,
    # which would make the estimates pessimistic), and the class shares to keep are the
    # split's 20 labels' (the correction left one class with a single label, not held out)
    metrics = json.loads((run / "metrics.json").read_text())["represent"]
    assert metrics["estimate_held_out"] == 19
    split_labels = np.array(grown["labeled_labels"][:20])
    assert metrics["labeled_prior"] == pytest.approx(np.bincount(split_labels, minlength=10) / 20)
    # the self-supervised features were kept, not learned again (their labels were spread anew)
    assert training_lines(run, "represent") == represent_lines and represent_lines
    # once taken, the same labels continue the run as usual (nothing set aside again)
    assert main(["label", str(run), "--preset", "tiny"]) == 0
    assert not (run / "earlier" / "2").exists()


def test_a_new_run_takes_added_labels_from_the_command_line(tmp_path):
    data = load_dataset(make_config("digits", labels_per_class=2).data)
    csv = tmp_path / "mine.csv"
    added.write(csv, {data.unlabeled.ids[0]: "4"})
    cfg = make_config("digits", out=str(tmp_path / "new"), labels_per_class=2,
                      added_labels=str(csv))
    grown = load_dataset(cfg.data)
    assert len(grown.labeled) == 21 and grown.labeled.ids[-1] == data.unlabeled.ids[0]
