from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx

from semigen.config import DataConfig
from semigen.data import (
    DataError,
    StepBatchSampler,
    Views,
    labeled_split,
    load_dataset,
    strong,
    weak,
)

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def skipped(report) -> dict:
    return {path: reason for path, reason in report.skipped}


def test_folder_contract_reports_every_bad_file(messy_folder):
    import cv2
    jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 100, np.uint8))[1].tobytes()
    (messy_folder / "unlabeled" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    data = load_dataset(DataConfig(source=str(messy_folder)))
    report = data.report
    found = skipped(report)
    assert found["unlabeled/truncated.png"] == "unreadable (corrupt or truncated image)"
    assert found["unlabeled/cut.jpg"] == "unreadable (corrupt or truncated image)"
    assert found["unlabeled/empty.jpg"] == "empty file"
    assert found["unlabeled/notes.txt"] == "not an image"
    assert "labels.csv" not in found  # the CSV is not in unlabeled/ and was not given
    # nested folders with spaces, a png+jpg mix, a gray image among RGB, an off-size image:
    assert report.labeled_per_class == {"bird": 0, "cat": 4, "dog": 4}
    assert report.channels_found == {"rgb": 7 + 5, "gray": 1}
    assert report.sizes_found["16x16"] == 12 and report.sizes_found["40x40"] == 1
    assert report.shape == (16, 16, 3) and report.resized == 2
    assert data.labeled.images.shape == (8, 16, 16, 3)
    assert "labeled/dog/deep folder/dog 0.jpg" in data.labeled.ids
    assert len(data.unlabeled) == 5 and (data.unlabeled.labels == -1).all()
    # the class with zero labeled images is an error naming it
    assert not report.ok
    assert any("'bird'" in e and "no labeled images" in e for e in report.errors)
    with pytest.raises(DataError, match="bird"):
        report.raise_if_errors()
    text = report.format()
    for name in ("truncated.png", "empty.jpg", "notes.txt", "bird"):
        assert name in text


def test_labels_csv_missing_file_and_unknown_label(messy_folder):
    data = load_dataset(DataConfig(source=str(messy_folder),
                                   labels_csv=str(messy_folder / "labels.csv")))
    report = data.report
    assert skipped(report)["unlabeled/missing.png"] == "listed in labels.csv line 3, file missing"
    assert any("'horse'" in e and "line 4" in e and "no class folder" in e
               for e in report.errors)
    # the CSV's labeled row moves that image from unlabeled to 'cat'; its empty label stays
    # unlabeled
    assert report.labeled_per_class["cat"] == 5
    assert "unlabeled/batch 1/u0.png" in data.labeled.ids
    assert "unlabeled/batch 1/u2.png" in data.unlabeled.ids


def test_csv_alone_defines_classes(tmp_path, clean_folder):
    # a CSV under a root with no class folders of its own
    only_csv = tmp_path / "only_csv"
    only_csv.mkdir()
    (only_csv / "imgs").symlink_to(clean_folder / "labeled")
    (only_csv / "labels.csv").write_text(
        "path,label\nimgs/dark/0.png,dark\nimgs/light/0.png,light\nimgs/light/1.png,\n")
    data = load_dataset(DataConfig(source=str(only_csv),
                                   labels_csv=str(only_csv / "labels.csv")))
    assert data.classes == ["dark", "light"]
    assert data.report.ok, data.report.errors
    assert len(data.labeled) == 2 and len(data.unlabeled) == 1


def test_csv_without_required_columns_is_refused(tmp_path, clean_folder):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match=r"bad.csv: needs the columns path,label; missing label"):
        load_dataset(DataConfig(source=str(clean_folder), labels_csv=str(bad)))


def test_folder_without_layout_is_explained(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match="expected DATA/labeled/<class>"):
        load_dataset(DataConfig(source=str(tmp_path)))
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(DataConfig(source=str(tmp_path / "nope")))


def test_clean_folder_loads_with_test_set(clean_folder):
    data = load_dataset(DataConfig(source=str(clean_folder)))
    assert data.report.ok and not data.report.skipped
    assert data.classes == ["dark", "light"]
    assert data.test is not None and len(data.test) == 12
    assert data.report.test_per_class == {"dark": 6, "light": 6}
    assert data.unlabeled_truth is None  # a folder's unlabeled images have no known truth


def test_forced_size_and_channels(clean_folder):
    data = load_dataset(DataConfig(source=str(clean_folder), image_size=20, channels="gray"))
    assert data.shape == (20, 20, 1)
    assert data.test.images.shape[1:] == (20, 20, 1)


def test_split_is_reproducible_and_disjoint():
    first = load_dataset(DataConfig(source="digits", labels_per_class=7, split_seed=3))
    again = load_dataset(DataConfig(source="digits", labels_per_class=7, split_seed=3))
    other = load_dataset(DataConfig(source="digits", labels_per_class=7, split_seed=4))
    assert first.labeled.ids == again.labeled.ids
    assert first.labeled.ids != other.labeled.ids
    assert set(first.labeled.ids).isdisjoint(first.unlabeled.ids)
    assert set(first.labeled.ids).isdisjoint(first.test.ids)
    assert len(first.labeled) + len(first.unlabeled) == 1347  # all of the training part
    assert np.bincount(first.labeled.labels).tolist() == [7] * 10
    assert (first.unlabeled.labels == -1).all()  # training never sees held-out truth...
    assert first.unlabeled_truth.shape == (len(first.unlabeled),)  # ...evaluation does
    assert first.test.ids == other.test.ids  # the test set does not move with the split seed
    assert not first.hflip  # a mirrored digit is another glyph


def test_labeled_split_draws_per_class():
    labels = np.repeat(np.arange(3), 10)
    idx = labeled_split(labels, 3, 4, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 4, 4]
    assert (idx == labeled_split(labels, 3, 4, seed=0)).all()


def test_too_many_labels_per_class_is_an_error():
    data = load_dataset(DataConfig(source="digits", labels_per_class=500))
    assert any("labels_per_class=500" in e for e in data.report.errors)


def test_fmnist_from_gzipped_idx_files(tmp_path, fake_idx_folder):
    cfg = DataConfig(source="fmnist", fmnist_dir=str(fake_idx_folder),
                     cache_dir=str(tmp_path / "cache"), labels_per_class=1, download=False)
    data = load_dataset(cfg)
    assert data.report.ok, data.report.errors
    assert data.classes[0] == "T-shirt/top"
    assert data.shape == (28, 28, 1)
    assert len(data.labeled) == 10 and len(data.unlabeled) == 10 and len(data.test) == 10
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_torchvision_builtin_reads_local_files_and_explains_absence(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"built-in 'mnist': not found in .*\(download is off\)"):
        load_dataset(DataConfig(source="mnist", cache_dir=str(cache), download=False))
    raw = cache / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    data = load_dataset(DataConfig(source="mnist", cache_dir=str(cache), download=False,
                                   labels_per_class=2))
    assert data.report.ok and len(data.labeled) == 20 and len(data.test) == 10


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fmnist_from_debian_package(tmp_path):
    data = load_dataset(DataConfig(source="fmnist", cache_dir=str(tmp_path), labels_per_class=10,
                                   download=False))
    assert data.report.ok
    assert len(data.labeled) == 100 and len(data.unlabeled) == 59900 and len(data.test) == 10000


def test_views_are_a_function_of_the_sample_seed():
    data = load_dataset(DataConfig(source="digits"))
    views = Views(data.labeled.images, data.labeled.labels,
                  [weak(data.shape, True), strong(data.shape, True)])
    a, b = views[(5, 1234)], views[(5, 1234)]
    c = views[(5, 999)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].shape == (1, 8, 8) and a[0].min() >= -1 and a[0].max() <= 1
    plain = views[5]
    assert torch.equal(plain[0], plain[1])  # no seed: the untouched image, for evaluation


def test_step_sampler_resumes_mid_stream():
    full = StepBatchSampler(50, 4, seed=7)
    late = StepBatchSampler(50, 4, seed=7, start_step=3)
    stream = iter(full)
    batches = [next(stream) for _ in range(5)]
    resumed = iter(late)
    assert [next(resumed), next(resumed)] == batches[3:5]
    assert next(iter(StepBatchSampler(50, 4, seed=8))) != batches[0]


def test_large_images_report_the_size_found_and_the_size_used(tmp_path):
    from conftest import write_image
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "d" / "labeled" / c / f"{i}.png",
                        rng.integers(0, 256, (200, 300), dtype=np.uint8))
    write_image(tmp_path / "d" / "unlabeled" / "u.jpg", rng.integers(0, 256, (200, 300, 3),
                                                                     dtype=np.uint8))
    data = load_dataset(DataConfig(source=str(tmp_path / "d"), cache_dir=str(tmp_path / "c")))
    assert data.report.sizes_found == {"200x300": 7}  # the files' own, not the scaled size
    assert data.shape == (43, 64, 1)  # longest side data.max_side (64)
    assert "sizes found: 200x300 (7)" in data.report.format()
    wide = load_dataset(DataConfig(source=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"),
                                   max_side=128))
    assert wide.shape == (85, 128, 1)


def test_images_are_decoded_once_and_again_only_when_a_file_changes(clean_folder, tmp_path,
                                                                     monkeypatch):
    from conftest import write_image

    from semigen.data import sources
    cfg = DataConfig(source=str(clean_folder), cache_dir=str(tmp_path / "cache"))
    first = load_dataset(cfg)
    decoded = []
    real_read_files = sources.read_files
    monkeypatch.setattr(sources, "read_files",
                        lambda paths, *a, **k: decoded.append(len(paths)) or
                        real_read_files(paths, *a, **k))
    again = load_dataset(cfg)
    assert decoded == []  # read from the cache
    for split in ("labeled", "unlabeled", "test"):
        assert getattr(again, split).ids == getattr(first, split).ids
        assert np.array_equal(getattr(again, split).images, getattr(first, split).images)
    assert again.report.to_dict() == first.report.to_dict()
    # a changed file, another setting: decoded anew
    write_image(clean_folder / "unlabeled" / "dark0.png", np.zeros((12, 12, 3), np.uint8))
    changed = load_dataset(cfg)
    assert decoded == [36]
    assert changed.unlabeled.images[changed.unlabeled.ids.index("unlabeled/dark0.png")].max() == 0
    load_dataset(DataConfig(source=str(clean_folder), cache_dir=str(tmp_path / "cache"),
                            channels="gray"))
    assert decoded == [36, 36]


def test_a_cache_that_cannot_be_written_costs_only_time(clean_folder, tmp_path, caplog):
    blocked = tmp_path / "not a folder"
    blocked.write_text("")
    data = load_dataset(DataConfig(source=str(clean_folder), cache_dir=str(blocked)))
    assert len(data.unlabeled) == 12 and "could not keep the decoded images" in caplog.text
