"""The judge of generated images for a user's own data: self-supervised features trained on
the training images only, cached; precision and recall; a linear probe for consistency."""

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from semigen.cli import main
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.evaluation.distances import precision_recall
from semigen.evaluation.images import Judge, judged
from semigen.evaluation.judge import ProbeClassifier, judge_config, judge_features


def test_precision_and_recall_tell_realism_from_diversity():
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(size=(500, 8)))
    same = precision_recall(real, torch.from_numpy(rng.normal(size=(500, 8))))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    # one image drawn again and again: realistic, not diverse
    collapsed = precision_recall(real, real[:1].repeat(500, 1) + 1e-3 * torch.randn(500, 8))
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.05
    # images unlike any real one: neither
    far = precision_recall(real, torch.from_numpy(rng.normal(size=(500, 8))) + 50)
    assert far["precision"] == 0 and far["recall"] == 0 and far["density"] == 0


class MeanAndSpread(torch.nn.Module):
    """uint8 images -> (mean, std) of their pixels: a feature network one can reason about."""
    num_features = 2

    def forward(self, images):
        x = images.double().flatten(1) / 255
        return torch.stack([x.mean(1), x.std(1)], 1)


def test_the_class_aware_distance_sees_classes_mixed_up_that_the_plain_one_does_not():
    rng = np.random.default_rng(0)

    def images(brightness, n):  # class 0 dark, class 1 bright
        return torch.from_numpy(rng.normal(brightness, 20, (n, 1, 8, 8)).clip(0, 255)
                                .astype(np.uint8))
    real = torch.cat([images(60, 300), images(190, 300)])
    real_labels = np.repeat([0, 1], 300)
    fake = torch.cat([images(60, 300), images(190, 300)])
    right, swapped = torch.tensor(real_labels), torch.tensor(1 - real_labels)
    judge = Judge(MeanAndSpread(), None)
    kept = judged(judge, real, real_labels, fake, right, ["dark", "bright"], 300)
    mixed = judged(judge, real, real_labels, fake, swapped, ["dark", "bright"], 300)
    assert kept["fid"] == pytest.approx(mixed["fid"])  # the same images, whatever their class
    assert kept["fid"] < 0.01 and kept["class_fid"] < 0.01
    assert mixed["class_fid"] > 0.2  # (190 - 60) / 255 apart, squared: about 0.26
    assert kept["class_fid"] == pytest.approx(
        np.mean([kept["per_class"][c]["fid"] for c in ("dark", "bright")]))


@pytest.mark.parametrize("classes", [2, 3])
def test_a_probe_classifier_predicts_as_its_sklearn_model(classes):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20 * classes, 5)) + np.repeat(np.eye(5)[:classes] * 3, 20, axis=0)
    y = np.repeat(np.arange(classes), 20)
    normed = x / np.linalg.norm(x, axis=1, keepdims=True)
    probe = LogisticRegression(max_iter=1000).fit(normed, y)
    as_net = ProbeClassifier(torch.nn.Identity(), probe, classes)
    assert (as_net(torch.from_numpy(x).float()).argmax(1).numpy() == probe.predict(normed)).all()


def test_the_judge_trains_once_per_data_set_and_never_on_other_images(clean_folder, tmp_path,
                                                                     caplog):
    cfg = resolve(preset="tiny", overrides={"data.source": str(clean_folder),
                                            "data.cache_dir": str(tmp_path / "cache")})
    data = load_dataset(cfg.data)
    with caplog.at_level(logging.INFO, logger="semigen"):
        first, about = judge_features(cfg, data)
        again, _ = judge_features(cfg, data)
    assert caplog.text.count("training the judge") == 1  # cached
    images = torch.from_numpy(data.test.images).permute(0, 3, 1, 2)
    assert torch.equal(first(images), again(images))
    assert "20 steps on the training images only" in about["network"]
    # another architecture than the run's classifier; other images: another judge
    assert judge_config(cfg, data).label.net != cfg.label.net
    (clean_folder / "unlabeled" / "dark0.png").unlink()
    other = load_dataset(cfg.data)
    assert judge_config(cfg, other).run.out != judge_config(cfg, data).run.out


def test_your_own_feature_weights_judge_the_images(clean_folder, tmp_path):
    import torchvision
    weights = tmp_path / "my_resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    run = tmp_path / "run"
    for argv in (["label", str(clean_folder), "--preset", "tiny", "--out", str(run)],
                 ["generate", str(run), "--preset", "tiny"],
                 ["evaluate", str(run), "--evaluate.features", str(weights),
                  "--evaluate.features_net", "resnet18", "--per-class", "4"]):
        assert main(argv) == 0, argv
    images = json.loads((run / "metrics.json").read_text())["evaluate"]["images"]
    assert images["feature_network"]["network"].startswith("resnet18 with your weights")
    assert images["n_fake"] == 8 and images["fid"] >= 0
    assert main(["evaluate", str(run), "--evaluate.features", str(tmp_path / "none.pth")]) == 2
