"""`semigen export`: each format loads back in the tool it is for, with the labels it was given."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ODD

from semigen.cli import main
from semigen.config import load_run_config
from semigen.data import added, class_folders
from semigen.data.cells import restored_row
from semigen.export import export


def read_csv(path):
    """A CSV semigen wrote, as a program reads it: the apostrophe that keeps a spreadsheet from
    running a cell taken off (`semigen.data.cells`)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [restored_row(row) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def run_with_decisions(review_run, tmp_path_factory):
    """The review run with one unlabeled image labeled and one own label corrected in review,
    continued so that its classifier trained on them."""
    import shutil

    from semigen.data import load_dataset

    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(review_run, run, ignore=shutil.ignore_patterns("run.lock", "review",
                                                                   "added_labels.csv"))
    data = load_dataset(load_run_config(run / "config.yaml").data)
    added.write(run / "added_labels.csv", {data.unlabeled.ids[0]: "light",
                                           "labeled/dark/actually light.png": "light"})
    assert main(["label", str(run), "--preset", "tiny", "--label.steps", "40",
                 "--label.calibration-steps", "20"]) == 0
    assert main(["generate", str(run), "--preset", "tiny"]) == 0  # set aside with the labels
    return run


def expected_counts(run, threshold):
    pseudo = [r for r in read_csv(run / "pseudo_labels.csv") if float(r["confidence"]) >= threshold]
    return 26, len(pseudo)  # 25 own labels + 1 added; then the confident pseudo-labels


def test_imagefolder_loads_in_torchvision(run_with_decisions, tmp_path):
    from torchvision.datasets import ImageFolder

    found = export(run_with_decisions, "imagefolder", tmp_path / "tree", 0.5,
                   generated_per_class=2)
    labeled, pseudo = expected_counts(run_with_decisions, 0.5)
    assert found["by_source"] == {"labeled": 24, "added": 2, "pseudo": pseudo, "generated": 6}
    tree = ImageFolder(tmp_path / "tree")
    names = ["dark", "light", ODD]
    class_folder = dict(zip(names, class_folders(names), strict=True))
    assert len(tree) == labeled + pseudo + 6
    manifest = {r["path"]: r for r in read_csv(tmp_path / "tree" / "manifest.csv")}
    for path, target in tree.samples:
        row = manifest[Path(path).relative_to(tmp_path / "tree").as_posix()]
        assert tree.classes[target] == Path(path).parent.name  # the folder is the class
        assert Path(path).parent.name == class_folder[row["label"]]
    corrected = [r for r in manifest.values()
                 if r["original"] == "labeled/dark/actually light.png"]
    assert len(corrected) == 1 and corrected[0]["label"] == "light"
    assert corrected[0]["path"].startswith("light/added-")
    # originals are copied as they are, not re-encoded from the training size
    source = Path(load_run_config(run_with_decisions / "config.yaml").data.source)
    original = source / corrected[0]["original"]
    assert (tmp_path / "tree" / corrected[0]["path"]).read_bytes() == original.read_bytes()


def test_hf_dataset_loads_from_disk(run_with_decisions, tmp_path):
    datasets = pytest.importorskip("datasets")
    export(run_with_decisions, "hf", tmp_path / "hf", 0.9)
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    labeled, pseudo = expected_counts(run_with_decisions, 0.9)
    assert len(loaded) == labeled + pseudo
    label_feature = loaded.features["label"]
    assert isinstance(label_feature, datasets.ClassLabel)
    names = label_feature.names
    sources = loaded["source"]
    assert sources.count("added") == 2 and sources.count("pseudo") == pseudo
    row = next(r for r in loaded if r["original"] == "labeled/dark/actually light.png")
    assert names[row["label"]] == "light" and row["confidence"] == 1.0
    assert row["image"].size == (12, 12)
    assert all(c >= 0.9 for c, s in zip(loaded["confidence"], sources, strict=True)
               if s == "pseudo")


def test_csv_is_a_labels_csv_semigen_reads(run_with_decisions, tmp_path, capsys):
    export(run_with_decisions, "csv", tmp_path / "flat", 0.0)
    rows = read_csv(tmp_path / "flat" / "labels.csv")
    labeled, pseudo = expected_counts(run_with_decisions, 0.0)
    assert len(rows) == labeled + pseudo
    assert set(rows[0]) == {"path", "label", "confidence", "source", "original"}
    for row in rows[:5] + rows[-5:]:
        assert cv2.imread(str(tmp_path / "flat" / row["path"])) is not None
    assert main(["data", "check", str(tmp_path / "flat"), "--labels",
                 str(tmp_path / "flat" / "labels.csv")]) == 0
    assert f"labeled: {len(rows)}" in capsys.readouterr().out


def test_export_refuses_to_overwrite_and_bad_thresholds(run_with_decisions, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    assert main(["export", str(run_with_decisions), "--format", "csv", "--out",
                 str(tmp_path / "taken")]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main(["export", str(run_with_decisions), "--format", "csv", "--out",
                 str(tmp_path / "new"), "--min-confidence", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"


def test_exported_cells_a_spreadsheet_would_run_are_neutralised(run_with_decisions, tmp_path):
    """A class folder named like a formula (the HTML-like class's folder begins with '-') and
    an added label's path: in the raw files an apostrophe keeps the spreadsheet from running
    them; semigen reads its own files back unchanged."""
    export(run_with_decisions, "imagefolder", tmp_path / "tree", 0.0)
    odd_folder = class_folders(["dark", "light", ODD])[2]
    assert odd_folder.startswith("-")
    with open(tmp_path / "tree" / "manifest.csv", newline="", encoding="utf-8") as f:
        raw = [row[0] for row in list(csv.reader(f))[1:]]
    assert not [cell for cell in raw if cell.startswith(("=", "+", "-", "@"))]
    odd = [cell for cell in raw if cell.startswith("'" + odd_folder + "/")]
    assert odd and all((tmp_path / "tree" / cell[1:]).is_file() for cell in odd)
    run = tmp_path / "run"
    import shutil
    shutil.copytree(run_with_decisions, run, ignore=shutil.ignore_patterns("run.lock"))
    added.write(run / "added_labels.csv", {"=HYPERLINK(\"http://x\")": "dark"})
    assert (run / "added_labels.csv").read_text().splitlines()[1].startswith("\"'=HYPERLINK")
    assert added.read(run / "added_labels.csv") == {"=HYPERLINK(\"http://x\")": "dark"}


def test_export_of_a_hand_edited_pseudo_labels_file_says_which_line(run_with_decisions,
                                                                    tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run_with_decisions, run, ignore=shutil.ignore_patterns("run.lock"))
    pseudo = run / "pseudo_labels.csv"
    lines = pseudo.read_text().splitlines()
    path, label, _, rnd = lines[1].split(",")
    pseudo.write_text("\n".join([lines[0], f"{path},{label},lots,{rnd}", *lines[2:]]) + "\n")
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "pseudo_labels.csv: damaged" in err and "line 2" in err and "Traceback" not in err
    pseudo.write_text("path,label\nx.png,dark\n")  # no confidence column
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "b")]) == 2
    assert "no path,label,confidence header" in capsys.readouterr().err


def test_a_built_in_run_exports_the_built_in_beside_a_folder_of_its_name(tmp_path,
                                                                         monkeypatch):
    """A run on `digits` exported from a directory that holds a folder named digits reads
    the built-in, as the run says, not the folder."""
    import semigen
    run = tmp_path / "run"
    semigen.label("digits", out=str(run), preset="tiny", label__steps=5,
                  label__calibration_steps=0, label__pretrain_steps=0)
    (tmp_path / "digits" / "labeled" / "decoy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "digits" / "labeled" / "decoy" / "0.png"),
                255 * np.ones((8, 8), np.uint8))
    monkeypatch.chdir(tmp_path)
    found = export(run, "csv", tmp_path / "flat", 0.0)
    labels = {r["label"] for r in read_csv(tmp_path / "flat" / "labels.csv")}
    assert labels == {str(d) for d in range(10)} and found["images"] > 1000


def test_review_checks_the_added_labels_of_a_continued_run(run_with_decisions, tmp_path):
    """A run continued with added labels names the file in its config; review still checks
    it row by row (an unknown class left out and counted), instead of refusing to start."""
    import shutil

    from semigen.review.state import load

    run = tmp_path / "run"
    shutil.copytree(run_with_decisions, run, ignore=shutil.ignore_patterns("run.lock"))
    config = run / "config.yaml"  # the copy names its own files, as the run it copies does
    config.write_text(config.read_text().replace(str(run_with_decisions.resolve()),
                                                 str(run.resolve())))
    saved = load_run_config(config).data.added_labels
    assert Path(saved) == (run / "added_labels.csv").resolve()
    kept = added.read(run / "added_labels.csv")
    with open(run / "added_labels.csv", "a", encoding="utf-8") as f:
        f.write("unlabeled/0-1.png,nosuchclass\n")
    review = load(run, suggest=2, generated_per_class=0)
    assert review.decisions.labels == kept
    assert "1 row(s) left out: a class this data does not have" in review.decisions.left_out
