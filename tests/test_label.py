"""Module 1 end to end on tiny budgets: semi training, pseudo-labels, predict."""

import csv

import numpy as np
import pytest

from semigen.api import label_run as train
from semigen.cli import main
from semigen.config import resolve
from semigen.data import DataError, load_dataset
from semigen.run import read_stats


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def semi_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("semi") / "run"
    # FixMatch from scratch: 30 fine-tuning steps after 20 representation steps fall to about
    # chance first (tests/test_represent.py covers that path)
    metrics = train(resolve(preset="tiny", overrides={"run.out": str(out),
                                                      "label.pretrain_steps": "0"}))
    return out, metrics


def test_semi_writes_pseudo_labels_for_every_unlabeled_image(semi_run):
    out, metrics = semi_run
    assert metrics["mode"] == "semi"
    table = rows(out / "pseudo_labels.csv")
    assert list(table[0]) == ["path", "label", "confidence", "round"]
    assert len(table) == metrics["unlabeled"] == 1247
    assert {r["label"] for r in table} <= {str(i) for i in range(10)}
    confidences = np.array([float(r["confidence"]) for r in table])
    assert ((confidences >= 0.1 - 1e-4) & (confidences <= 1)).all()  # max of 10 probabilities
    assert {r["round"] for r in table} == {"0"}
    # 30 steps of the tiny preset already label well above chance (0.1)
    assert metrics["pseudo_label_accuracy"] > 0.3
    # the CSV is what the reported pseudo-label accuracy was measured on
    data = load_dataset(resolve(preset="tiny").data)
    assert [r["path"] for r in table] == data.unlabeled.ids
    right = np.mean([int(r["label"]) == t for r, t in zip(table, data.unlabeled_truth,
                                                          strict=True)])
    assert right == pytest.approx(metrics["pseudo_label_accuracy"], abs=1e-6)


def test_semi_logs_what_the_issue_asks_for(semi_run):
    out, _ = semi_run
    stats = read_stats(out)
    steps = [r for r in stats if "loss_u" in r]
    assert steps and all({"loss", "loss_x", "mask", "threshold", "lr"} <= set(r) for r in steps)
    assert all(0 <= r["mask"] <= 1 for r in steps)
    evals = [r for r in stats if "test_accuracy" in r and "event" not in r]
    assert evals and all({"test_ece", "pseudo_label_accuracy", "pseudo_label_ece",
                          "pseudo_label_counts"} <= set(r) for r in evals)
    assert all(sum(r["pseudo_label_counts"]) == 1247 for r in evals)  # eval_unlabeled > 1247


def test_semi_needs_unlabeled_images(tmp_path, clean_folder):
    import shutil
    shutil.rmtree(clean_folder / "unlabeled")
    cfg = resolve(preset="tiny", overrides={"data.source": str(clean_folder),
                                             "run.out": str(tmp_path / "run")})
    with pytest.raises(DataError, match="semi needs unlabeled images"):
        train(cfg)


def test_predict_labels_a_folder(tmp_path, clean_folder, caplog):
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), "--preset", "tiny",
                 "--label.steps", "40"]) == 0
    (clean_folder / "test" / "dark" / "broken.png").write_bytes(b"not really")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(clean_folder / "test"), "--out", str(out)]) == 0
    table = rows(out)
    assert len(table) == 12
    right = sum(r["path"].split("/")[0] == r["label"] for r in table)
    assert right >= 11  # dark vs light
    assert "skipped dark/broken.png: unreadable" in caplog.text
    # one file; an existing --out is replaced only when asked
    one = ["predict", str(run), str(clean_folder / "test" / "light" / "0.png"), "--out",
           str(out)]
    assert main(one) == 2
    assert main([*one, "--overwrite"]) == 0
    assert rows(out) == [{"path": "0.png", "label": "light",
                          "confidence": rows(out)[0]["confidence"]}]


def test_predict_explains_a_missing_run(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path), "--out",
                 str(tmp_path / "p.csv")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("name, params", [("cnn", 288_746), ("wrn28_2", 1_467_610)])
def test_networks_take_any_small_size(name, params):
    import torch

    from semigen.labeling import nets
    net = nets.build(name, 3, 10)
    assert sum(p.numel() for p in net.parameters()) == params  # WRN-28-2: 1.47 M, as published
    for size in (8, 28, 32):
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 10)
    assert nets.build(name, 1, 7)(torch.zeros(1, 1, 28, 28)).shape == (1, 7)


def test_tensorboard_gets_scalars_and_per_class_counts(semi_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, _ = semi_run
    events = EventAccumulator(str(out / "tensorboard" / "label"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"label/loss", "label/mask", "label/test_accuracy", "label/pseudo_label_accuracy",
            "label/pseudo_label_counts/0", "label/pseudo_label_counts/9"} <= tags


def test_baseline_modes_train_on_what_they_claim(tmp_path):
    lower = train(resolve(preset="tiny", overrides={"label.mode": "labels-only",
                                                     "run.out": str(tmp_path / "lo")}))
    upper = train(resolve(preset="tiny", overrides={"label.mode": "all-labels",
                                                     "run.out": str(tmp_path / "all")}))
    assert lower["labeled"] == 100 and upper["labeled"] == 1347  # all of digits' training part
    # both still label every unlabeled image, so their pseudo-labels compare with semi's
    assert len(rows(tmp_path / "lo" / "pseudo_labels.csv")) == 1247
    assert "pseudo_label_accuracy" in upper


def test_a_folder_with_every_image_labeled_trains_without_unlabeled_images(tmp_path,
                                                                           clean_folder):
    import shutil
    shutil.rmtree(clean_folder / "unlabeled")
    run = tmp_path / "run"
    assert main(["label", str(clean_folder), "--out", str(run), "--preset", "tiny",
                 "--label.mode", "labels-only"]) == 0
    assert rows(run / "pseudo_labels.csv") == []  # the header alone: nothing to label


def test_generated_images_are_a_weighted_term_of_their_own_in_every_step():
    """A joint round's step passes the labeled and the generated images through the network
    together, and the loss is the labeled cross-entropy plus `generated_weight` times the
    generated images' own cross-entropy, each image with its own class."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from semigen.labeling.fixmatch import step_loss

    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            seen.append(x.clone())
            return self.linear(x.flatten(1))

    torch.manual_seed(0)
    model = Recorder()
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    x_generated, y_generated = torch.ones(3, 1, 2, 2), torch.tensor([2, 2, 0])
    lab = resolve(preset="tiny", overrides={"label.mode": "labels-only"}).label
    for weight in (1.0, 0.1):
        batches = {"labeled": iter([(x, y, None)]),
                   "synthetic": iter([(x_generated, y_generated, None)])}
        loss, parts, _ = step_loss(model, lab, None, batches, None, {},
                                   generated_weight=weight)
        assert torch.equal(seen[-1], torch.cat([x, x_generated]))
        expected_x = F.cross_entropy(model.linear(x.flatten(1)), y)
        expected_g = F.cross_entropy(model.linear(x_generated.flatten(1)), y_generated)
        torch.testing.assert_close(parts["loss_g"], expected_g)
        torch.testing.assert_close(loss, expected_x + weight * expected_g)


def test_in_semi_mode_too_the_generated_images_are_a_term_of_their_own():
    """A joint round trains in semi mode by default: its loss is FixMatch's (labeled
    cross-entropy and consistency on the unlabeled images) plus `generated_weight` times the
    generated images' cross-entropy, the images in the same pass."""
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F
    from torch import nn

    from semigen.labeling.fixmatch import initial_levels, step_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    rt = SimpleNamespace(fabric=SimpleNamespace(all_reduce=lambda value, reduce_op: value))
    lab = resolve(preset="tiny").label
    assert lab.mode == "semi"
    x, y = torch.randn(2, 1, 2, 2), torch.tensor([0, 1])
    x_gen, y_gen = torch.randn(3, 1, 2, 2), torch.tensor([2, 2, 0])
    weak, strong = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)

    def loss_of(generated: bool, weight: float):
        batches = {"labeled": iter([(x, y, None)]),
                   "unlabeled": iter([(weak, strong, None, torch.arange(4))])}
        if generated:
            batches["synthetic"] = iter([(x_gen, y_gen, None)])
        return step_loss(model, lab, rt, batches, None, initial_levels(3), generated_weight=weight)

    without, parts_without, _ = loss_of(False, 1.0)
    assert "loss_g" not in parts_without
    expected_g = F.cross_entropy(model(x_gen), y_gen)
    for weight in (1.0, 0.3):
        loss, parts, _ = loss_of(True, weight)
        torch.testing.assert_close(parts["loss_g"], expected_g)
        torch.testing.assert_close(loss, without + weight * expected_g)


def test_a_round_streams_its_generated_images_beside_the_labeled_ones():
    """`fine_tuning_batches` gives a round a stream of the generated images, with their classes,
    fit.synthetic_ratio of them per labeled image in a batch; without them, none."""
    from semigen import runtime
    from semigen.labeling.train import fine_tuning_batches
    from semigen.run import Records, Run
    from semigen.stage import Stage

    cfg = resolve(preset="tiny", overrides={"label.mode": "labels-only",
                                            "label.batch_size": "8",
                                            "fit.synthetic_ratio": "0.5"})
    data = load_dataset(cfg.data)
    run = Run(cfg, Records(cfg.run.out, writer=False), data)
    stage = Stage("label-r1", run, runtime.start(cfg.runtime), None, None)
    generated = (np.full((6, 8, 8, 1), 255, np.uint8), np.array([3, 3, 3, 4, 4, 4]))
    labeled = (data.labeled.images, data.labeled.labels)
    batches = fine_tuning_batches(stage, data, labeled, generated, 4, 0)
    x, y, _ = next(batches["synthetic"])
    assert len(x) == 4 and set(y.tolist()) <= {3, 4}
    assert len(next(batches["labeled"])[0]) == 8
    assert "synthetic" not in fine_tuning_batches(stage, data, labeled, None, 4, 0)
