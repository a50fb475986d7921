import pytest
import torch
from conftest import interrupt_after_checkpoint

from semigen import api, checkpoint
from semigen.checkpoint import Checkpointer, CheckpointError
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.labeling import nets
from semigen.labeling.predict import accuracy
from semigen.run import read_stats


def tiny_cfg(out, mode="labels-only", **overrides):
    values = {"run.out": str(out), "label.mode": mode, "label.steps": "20",
              "run.log_every": "1", "run.checkpoint_every": "5", "label.eval_every": "5"}
    return resolve(preset="tiny", overrides=values | overrides)


def losses(run_dir):
    return {r["step"]: r["loss"] for r in read_stats(run_dir) if "loss" in r}


@pytest.mark.parametrize("mode", ["labels-only", "semi"])
def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch, mode):
    straight = tmp_path / "straight"
    api.label_run(tiny_cfg(straight, mode))

    interrupted = tmp_path / "interrupted"
    interrupt_after_checkpoint(monkeypatch,
                               lambda: api.label_run(tiny_cfg(interrupted, mode)))
    assert max(losses(interrupted)) == 10
    api.label_run(tiny_cfg(interrupted, mode))  # resume: auto is the default

    assert losses(interrupted) == losses(straight)  # steps 11..20 equal to the last bit
    a = checkpoint.load(straight / "checkpoints" / "label" / "latest.pt")
    b = checkpoint.load(interrupted / "checkpoints" / "label" / "latest.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in a["levels"]:  # the adaptive thresholds' state resumes too
        assert torch.equal(a["levels"][name], b["levels"][name]), name
    assert (straight / "pseudo_labels.csv").read_text() == \
        (interrupted / "pseudo_labels.csv").read_text()


def test_checkpoint_rebuilds_its_model_alone(tmp_path):
    out = tmp_path / "run"
    api.label_run(tiny_cfg(out))
    state = checkpoint.load(out / "checkpoints" / "label" / "latest.pt")
    assert state["step"] == 20 and state["kind"] == "classifier"
    assert torch.__version__.startswith(state["versions"]["torch"].split("+")[0])
    assert {"python", "semigen", "torchvision", "lightning"} <= set(state["versions"])
    ema_net = nets.from_checkpoint(state)
    raw_net = nets.from_checkpoint(state, use_ema=False)
    assert not ema_net.training
    # the rebuilt EMA model scores what the run measured with it at its last step
    data = load_dataset(resolve(preset="tiny").data)
    acc = accuracy(ema_net, data.test, "cpu")
    assert acc == pytest.approx(state_metrics(out)["test_accuracy"], abs=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(ema_net.state_dict().values(),
                                                       raw_net.state_dict().values(),
                                                       strict=True))
    assert state["classes"] == [str(i) for i in range(10)]
    assert state["config"]["label"]["mode"] == "labels-only"


def state_metrics(run_dir):
    return [r for r in read_stats(run_dir) if r.get("event") == "done"][0]


def test_resume_none_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    api.label_run(tiny_cfg(out, **{"label.steps": "5"}))
    api.label_run(tiny_cfg(out, **{"label.steps": "8"}))  # a longer run continues this one
    assert "resumed from" in (out / "log.txt").read_text()
    assert "config changed: label.steps: 5 -> 8" in (out / "log.txt").read_text()
    with pytest.raises(CheckpointError, match="already holds a run"):
        api.label_run(tiny_cfg(out, **{"run.resume": "none"}))


class RunsCode:
    """An object whose unpickling calls a function: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "was_run"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "model": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects"):
        checkpoint.load(path)
    assert not marker.exists()


def test_corrupt_and_foreign_files_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        checkpoint.load(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a semigen checkpoint"):
        checkpoint.load(foreign)


def test_interrupted_write_never_replaces_latest(tmp_path, monkeypatch):
    ckpts = Checkpointer(tmp_path / "checkpoints", keep_last=2)
    ckpts.save({"model": {"w": torch.ones(3)}}, step=1)

    def dies_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="no space left"):
        ckpts.save({"model": {"w": torch.zeros(3)}}, step=2)
    monkeypatch.undo()
    state = checkpoint.load(ckpts.latest)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert not list(ckpts.folder.glob("*.tmp"))


def test_keep_last_prunes_step_files(tmp_path):
    ckpts = Checkpointer(tmp_path, keep_last=2)
    for step in range(1, 6):
        ckpts.save({"x": torch.tensor(step)}, step)
    assert [p.name for p in ckpts.step_files()] == ["step-00000004.pt", "step-00000005.pt"]
    assert checkpoint.load(ckpts.latest)["step"] == 5
    assert checkpoint.load(tmp_path / "step-00000004.pt")["step"] == 4
