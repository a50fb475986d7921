"""Two CPU processes (gloo) through Lightning Fabric, semi mode (its threshold levels are
all-reduced): identical weights, one set of files; and a whole `fit` the same way."""

import json
import os
import subprocess
import sys

import torch

from semigen import checkpoint
from semigen.generation.data import confident
from semigen.run import read_stats


def test_two_process_cpu_ddp(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "semigen", "label", "digits", "--preset", "tiny",
         "--label.mode", "semi", "--label.calibration-steps", "5", "--device", "cpu",
         "--devices", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    stats = read_stats(out)
    assert [r["stage"] for r in stats if r.get("event") == "done"] == ["represent", "calibrate",
                                                                   "label"]
    done = [r for r in stats if r.get("event") == "done" and r["stage"] == "label"]
    assert len(done) == 1 and done[0]["world_size"] == 2
    fingerprints = done[0]["weight_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    # one writer: each logged step appears once, not once per rank
    loss_steps = [r["step"] for r in stats if "loss" in r and r["stage"] == "label"]
    assert loss_steps == sorted(set(loss_steps)) == list(range(10, 31, 10))
    assert [r["step"] for r in stats if "loss" in r and r["stage"] == "represent"] == [10, 20]
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "config.yaml", "data_report.json", "log.txt", "metrics.json",
        "pseudo_labels.csv", "run.json", "run.lock", "split.json", "stages.json", "stats.jsonl",
        "tensorboard"]
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["calibrate", "label",
                                                                       "represent"]
    assert (out / "log.txt").read_text().count("label done") == 1
    state = checkpoint.load(out / "checkpoints" / "label" / "latest.pt")
    assert len(state["rng"]) == 2  # each rank's RNG, to resume its own stream
    assert all(isinstance(r["torch"], torch.Tensor) for r in state["rng"])


def test_two_process_cpu_ddp_fit(tmp_path):
    """Every stage trains on both ranks; rank 0 alone writes the fit's records, evaluates and
    reports, and a round's generator learns from the pseudo-labels its label stage just wrote."""
    out = tmp_path / "fit"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "semigen", "fit", "digits", "--preset", "tiny", "--rounds", "1",
         "--device", "cpu", "--devices", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("report:") == 1
    assert "deprecated" not in result.stderr

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["round"] for r in metrics["fit"]["rounds"]] == [0, 1]
    assert set(metrics["fit"]["seconds"]) >= {"label", "generate", "label-r1", "generate-r1",
                                              "evaluate"}
    for stage in ("label", "generate", "label-r1", "generate-r1"):
        assert metrics[stage]["world_size"] == 2
    console = result.stdout + result.stderr
    assert console.count("fit: stage label-r1") == 1 and console.count("fit done") == 1
    assert (out / "log.txt").read_text().count("fit done") == 1
    assert (out / "report.html").is_file()
    # round 1's generator trained on round 1's pseudo-labels (the file rank 0 wrote last)
    pseudo = (out / "pseudo_labels.csv").read_text().splitlines()
    assert all(line.endswith(",1") for line in pseudo[1:])
    # those at the confidence bar, or among the most confident half of their class
    rows = [line.split(",") for line in pseudo[1:]]
    kept = confident([(i, r[1], float(r[2])) for i, r in enumerate(rows)], 0.9, 0.5)
    assert metrics["generate-r1"]["training_images"] == 100 + len(kept)


def test_two_process_cpu_ddp_diffusion(tmp_path):
    """The diffusion backend through the same runtime: both ranks end with the same UNet."""
    out = tmp_path / "diffusion"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "semigen", "generate", "digits", "--preset", "tiny",
         "--generate.backend", "diffusion", "--generate.mode", "labels-only",
         "--device", "cpu", "--devices", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    done = [r for r in read_stats(out) if r.get("event") == "done"]
    assert len(done) == 1 and done[0]["world_size"] == 2 and done[0]["backend"] == "diffusion"
    fingerprints = done[0]["weight_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    steps = [r["step"] for r in read_stats(out) if "denoising_loss" in r]
    assert steps == list(range(10, 21, 10))  # one writer
