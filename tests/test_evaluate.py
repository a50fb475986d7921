"""`semigen evaluate` on a tiny digits run: classifier, pseudo-labels and image metrics."""

import json

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from semigen.cli import main
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.evaluation.images import (
    EvaluatorFeatures,
    embed_images,
    evaluator_config,
    feature_distances,
    load_evaluator,
    memorisation,
)
from semigen.labeling import nets


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    run, cache = root / "run", root / "cache"
    for argv in (["label", "digits", "--preset", "tiny", "--out", str(run)],
                 # a 30-step classifier is seldom 0.9 sure: take pseudo-labels from 0.5
                 ["generate", str(run), "--preset", "tiny", "--generate.min-confidence", "0.5"],
                 ["evaluate", str(run), "--per-class", "10", "--evaluator-steps", "30",
                  "--data.cache-dir", str(cache)]):
        assert main(argv) == 0, argv
    metrics = json.loads((run / "metrics.json").read_text())
    return run, cache, metrics


def test_classifier_metrics_agree_with_the_label_stage(evaluated):
    _, _, metrics = evaluated
    found = metrics["evaluate"]["classifier"]
    assert found["test_accuracy"] == pytest.approx(metrics["label"]["test_accuracy"], abs=1e-6)
    assert found["n_test"] == 450 and len(found["per_class_accuracy"]) == 10
    confusion = torch.tensor(found["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 450
    assert confusion.diag().sum().item() / 450 == pytest.approx(found["test_accuracy"])


def test_pseudo_label_metrics(evaluated):
    _, _, metrics = evaluated
    found = metrics["evaluate"]["pseudo_labels"]
    assert found["n_pseudo_labels"] == 1247
    assert found["pseudo_label_accuracy"] == pytest.approx(
        metrics["label"]["pseudo_label_accuracy"], abs=1e-4)  # the CSV rounds confidences
    assert 0 <= found["pseudo_label_coverage_at_0.95"] <= found["pseudo_label_coverage_at_0.9"]


def test_image_metrics_name_their_network_and_n(evaluated, capsys):
    run, cache, metrics = evaluated
    images = metrics["evaluate"]["images"]
    assert images["n_fake"] == 100 and images["n_real"] == 450
    assert images["fid"] > 0 and 0 <= images["class_consistency"] <= 1
    assert set(images["per_class"]) == {str(i) for i in range(10)}
    assert images["feature_network"]["path"].startswith(str(cache))
    assert "all-labels, 30 steps" in images["feature_network"]["network"]
    assert "below 2x the dimension" in images["warning"]  # 10 per class is far too few
    # variety: 10 generated against 10 real, beside 10 other real, in both judges' features
    for judge in (images, images["judge"]):
        assert judge["per_class"]["3"]["variety"]["n"] == 10
        assert 0 <= judge["variety"]["recall_ratio"] and judge["variety"]["worst_class"] in \
            judge["per_class"]
    # the evaluator is cached: a second evaluation does not train it again
    checkpoint_file = next(cache.rglob("latest.pt"))
    before = checkpoint_file.stat().st_mtime_ns
    assert main(["evaluate", str(run), "--per-class", "10", "--evaluator-steps", "30",
                 "--data.cache-dir", str(cache)]) == 0
    assert checkpoint_file.stat().st_mtime_ns == before
    printed = json.loads(capsys.readouterr().out)["images"]
    assert printed["variety"] == images["variety"] and len(printed["variety_per_class"]) == 10
    again = json.loads((run / "metrics.json").read_text())["evaluate"]["images"]
    assert {k: again[k] for k in ("fid", "kid", "memorisation")} == \
        {k: images[k] for k in ("fid", "kid", "memorisation")}  # the same images, the same scores


def test_memorisation_is_measured_against_the_generators_training_images(evaluated):
    _, _, metrics = evaluated
    copied = metrics["evaluate"]["images"]["memorisation"]
    # the tiny run's generator is semi: 100 labeled images + the confident pseudo-labels
    kept = sum(metrics["generate"]["training_images_per_class"])
    assert copied["n_train"] == kept == metrics["generate"]["training_images"] > 100
    assert copied["n_fake"] == 100 and copied["n_real"] == 450  # all, up to 1000
    assert copied["distance_ratio"] > 0 and 0 <= copied["copy_rate"] <= 1


def test_memorisation_tells_copies_from_new_images():
    data = load_dataset(resolve().data)
    as_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    train, held_out = as_tensor(data.unlabeled.images[:300]), as_tensor(data.test.images)
    noise = torch.randint(-2, 3, (600, *train.shape[1:]),
                          generator=torch.Generator().manual_seed(0))
    copies = (train.repeat(2, 1, 1, 1).int() + noise).clamp(0, 255).to(torch.uint8)
    new = as_tensor(data.unlabeled.images[300:900])  # real, but not among the training images
    copied = memorisation(copies, held_out, train)
    novel = memorisation(new, held_out, train)
    assert copied["distance_ratio"] < 0.1 and copied["copy_rate"] > 0.95
    assert 0.8 < novel["distance_ratio"] < 1.25 and novel["copy_rate"] < 0.05


def test_fid_separates_real_from_noise(evaluated):
    _, cache, _ = evaluated
    cfg = resolve(overrides={"data.cache_dir": str(cache)})
    data = load_dataset(cfg.data)
    evaluator, _ = load_evaluator(cfg, data.shape, steps=30)
    features = EvaluatorFeatures(evaluator.eval())
    test = torch.from_numpy(data.test.images).permute(0, 3, 1, 2).contiguous()
    noise = torch.randint(0, 256, test.shape, generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    test_f, noise_f = embed_images(features, test), embed_images(features, noise)
    real_vs_real = feature_distances(test_f[:225], test_f[225:])["fid"]
    real_vs_noise = feature_distances(test_f[:225], noise_f[225:])["fid"]
    assert real_vs_real * 5 < real_vs_noise
    # the features computed once give torchmetrics' FID of the network run on the images
    direct = FrechetInceptionDistance(feature=features, normalize=False)
    direct.update(test[:225], real=True)
    direct.update(noise[225:], real=False)
    assert real_vs_noise == pytest.approx(direct.compute().item(), rel=1e-6)


def test_evaluator_features():
    classifier = nets.build("cnn", 1, 10)
    features = EvaluatorFeatures(classifier)
    out = features(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
    assert features.num_features == 128 and out.shape == (3, 128) and out.dtype == torch.float64


@pytest.mark.parametrize("classifier", [{"label.net": "cnn"}, {"label.net": "wrn28_2"},
                                        {"label.backbone": "resnet18"}])
def test_the_evaluator_is_not_the_classifiers_architecture(classifier):
    cfg = resolve(preset="tiny", overrides=classifier)
    recipe = evaluator_config(cfg, (8, 8, 1), 30)
    assert recipe.label.mode == "all-labels" and recipe.label.backbone == ""
    assert recipe.label.net != (cfg.label.backbone or cfg.label.net)
    judge = nets.build(recipe.label.net, 1, 10)  # and it works on 8 px images
    assert judge(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_image_metrics_on_a_user_folder_with_inception_weights(clean_folder, tmp_path, capsys):
    from torchvision.models import inception_v3
    run = tmp_path / "run"
    for argv in (["label", str(clean_folder), "--preset", "tiny", "--out", str(run)],
                 ["generate", str(run), "--preset", "tiny"]):
        assert main(argv) == 0, argv
    assert main(["evaluate", str(run)]) == 0  # a user's folder: the self-supervised judge
    images = json.loads((run / "metrics.json").read_text())["evaluate"]["images"]
    assert images["feature_network"]["network"].startswith("semigen judge (self-supervised")
    probe = images["feature_network"]["class_consistency_by"]
    assert probe["labels"] == 12 and 0 <= probe["held_out_accuracy"] <= 1
    assert images["fid"] >= 0 and 0 <= images["precision"] <= 1 and 0 <= images["recall"] <= 1
    assert 0 <= images["class_consistency"] <= 1 and images["real"] == "the test images"

    # A file made here stands in for torchvision's downloaded Inception-v3 weights.
    weights = tmp_path / "inception_v3.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               weights)
    assert main(["evaluate", str(run), "--inception-weights", str(weights),
                 "--per-class", "4"]) == 0
    images = json.loads((run / "metrics.json").read_text())["evaluate"]["images"]
    assert images["feature_network"]["network"].startswith("Inception-v3")
    assert images["n_fake"] == 2 * 4 and images["n_real"] == 12
    assert images["fid"] >= 0 and images["kid"] == images["kid"]  # a number, not NaN
    # class consistency stays the judge's probe's: Inception has no classes of the user's
    assert images["feature_network"]["class_consistency_by"]["network"].startswith(
        "semigen judge")

    capsys.readouterr()
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    for bad in (tmp_path / "missing.pth", tmp_path / "junk.pth"):
        assert main(["evaluate", str(run), "--inception-weights", str(bad)]) == 2
        assert bad.name in capsys.readouterr().err
