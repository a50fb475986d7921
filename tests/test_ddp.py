"""Two CPU processes (gloo) through Lightning Fabric, semi mode (its threshold levels are
all-reduced): identical weights, one set of files."""

import os
import subprocess
import sys

import torch

from semigen import checkpoint
from semigen.rundir import read_stats


def test_two_process_cpu_ddp(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "semigen", "label", "digits", "--preset", "tiny",
         "--label.mode", "semi", "--device", "cpu", "--devices", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    stats = read_stats(out)
    done = [r for r in stats if r.get("event") == "done"]
    assert len(done) == 1 and done[0]["world_size"] == 2
    fingerprints = done[0]["weight_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    # one writer: each logged step appears once, not once per rank
    loss_steps = [r["step"] for r in stats if "loss" in r]
    assert loss_steps == sorted(set(loss_steps)) == list(range(10, 31, 10))
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "config.yaml", "data_report.json", "log.txt", "metrics.json",
        "pseudo_labels.csv", "split.json", "stats.jsonl", "tensorboard"]
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert (out / "log.txt").read_text().count("label done") == 1
    state = checkpoint.load(out / "checkpoints" / "label" / "latest.pt")
    assert len(state["rng"]) == 2  # each rank's RNG, to resume its own stream
    assert all(isinstance(r["torch"], torch.Tensor) for r in state["rng"])
