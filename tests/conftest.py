import gzip
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok, path
    path.write_bytes(buf.tobytes())
    return path


def blob(rng, size=16, channels=3):
    shape = (size, size, channels) if channels > 1 else (size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """DATA/ with every kind of trouble the data contract names."""
    rng = np.random.default_rng(0)
    root = tmp_path / "my data"
    for i in range(3):
        write_image(root / "labeled" / "cat" / f"cat {i}.png", blob(rng))
        write_image(root / "labeled" / "dog" / "deep folder" / f"dog {i}.jpg", blob(rng))
    write_image(root / "labeled" / "dog" / "gray one.png", blob(rng, channels=1))
    write_image(root / "labeled" / "cat" / "big.png", blob(rng, size=40))
    (root / "labeled" / "bird").mkdir(parents=True)  # a class with zero labels
    for i in range(5):
        write_image(root / "unlabeled" / "batch 1" / f"u{i}.png", blob(rng))
    good = cv2.imencode(".png", blob(rng))[1].tobytes()
    (root / "unlabeled" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "unlabeled" / "empty.jpg").write_bytes(b"")
    (root / "unlabeled" / "notes.txt").write_text("not an image")
    (root / "labels.csv").write_text(
        "path,label\n"
        "unlabeled/batch 1/u0.png,cat\n"
        "unlabeled/missing.png,dog\n"
        "unlabeled/batch 1/u1.png,horse\n"
        "unlabeled/batch 1/u2.png,\n")
    return root


@pytest.fixture
def clean_folder(tmp_path) -> Path:
    """Two classes, a few labeled, unlabeled and test images: something a run can train on."""
    rng = np.random.default_rng(1)
    root = tmp_path / "clean"
    for c, value in (("dark", 40), ("light", 210)):
        for i in range(6):
            image = np.clip(rng.normal(value, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            write_image(root / "labeled" / c / f"{i}.png", image)
            write_image(root / "test" / c / f"{i}.png", image[::-1])
            write_image(root / "unlabeled" / f"{c}{i}.png", image[:, ::-1])
    return root


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """An IDX file as MNIST ships them: magic (0, 0, dtype 0x08, ndim), big-endian dims, bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                     *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def fake_idx_folder(tmp_path) -> Path:
    """Gzipped IDX files named as Debian's dataset-fashion-mnist names them: 20 train and 10
    test images of 28x28, labels 0-9."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "idx"
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28)), gz=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, gz=True)
    return folder


def interrupt_after_checkpoint(monkeypatch, train, step: int = 10) -> None:
    """Run `train()` until it has written the checkpoint of `step`, then stop it there as
    Ctrl-C would (KeyboardInterrupt); checkpoints are saved normally again afterwards."""
    from semigen.checkpoint import Checkpointer
    real_save = Checkpointer.save

    def save_then_interrupt(self, payload, at):
        path = real_save(self, payload, at)
        if at == step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpointer, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(Checkpointer, "save", real_save)


ODD = "<img src=x onerror=alert(1)> &amp co"  # a class name to show, never to interpret


@pytest.fixture(scope="session")
def review_run(tmp_path_factory):
    """A folder set of three classes (one with an HTML-like name) with one wrong label among
    the user's own, a tiny classifier with cross-fitted calibration, and a tiny generator."""
    import semigen

    root = tmp_path_factory.mktemp("review") / "data"
    rng = np.random.default_rng(0)
    looks = {"dark": 30, "light": 220, ODD: 125}
    for c, (name, value) in enumerate(looks.items()):
        for i in range(8):
            image = np.clip(rng.normal(value, 12, (12, 12, 3)), 0, 255).astype(np.uint8)
            write_image(root / "labeled" / name / f"{i}.png", image)
        for i in range(30):
            image = np.clip(rng.normal(value, 12, (12, 12, 3)), 0, 255).astype(np.uint8)
            write_image(root / "unlabeled" / f"{c}-{i}.png", image)
    light = np.clip(rng.normal(220, 12, (12, 12, 3)), 0, 255).astype(np.uint8)
    write_image(root / "labeled" / "dark" / "actually light.png", light)
    out = root.parent / "run"
    options = {"preset": "tiny", "label__calibration_steps": 20, "label__steps": 40}
    semigen.label(str(root), out=str(out), **options)
    semigen.generate(str(root), out=str(out), **options)
    return out


# CI (`.ci/run`, where it could install every package the tests need) sets SEMIGEN_NO_SKIPS:
# there a skipped test is a failure, so that a green run has run the browser tests too.
SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    import os

    if os.environ.get("SEMIGEN_NO_SKIPS") and SKIPPED:
        print(f"\nSEMIGEN_NO_SKIPS: {len(SKIPPED)} test(s) skipped, which fails this run: "
              + ", ".join(SKIPPED))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
