"""The diffusion backend on tiny budgets: a small UNet on `digits` (8 px) and on a folder of
12 px colour images. Resume, seeds, guidance, refusals, and every verb through it."""

import csv
import json

import cv2
import pytest
import torch
from conftest import interrupt_after_checkpoint

import semigen
from semigen import api, checkpoint, generation
from semigen.cli import main
from semigen.config import ConfigError, resolve, validate
from semigen.evaluation.report import curve_panels
from semigen.generation import diffusion
from semigen.generation.diffusion import Diffusion, halvings, unet_config
from semigen.run import read_stats


def tiny_unet(num_classes=3, shape=(8, 8, 1), **sampling) -> Diffusion:
    torch.manual_seed(0)
    return Diffusion(num_classes, unet_config(num_classes, shape, 8), **sampling).eval()


def test_the_unet_halves_while_the_maps_stay_even_and_at_least_4_px():
    assert [halvings(s, s) for s in (28, 8, 32, 12, 7, 100)] == [2, 1, 3, 1, 0, 2]
    assert halvings(28, 12) == 1  # both sides must halve
    config = unet_config(10, (28, 28, 1), 16)
    assert config["block_out_channels"] == [16, 32, 64]  # 1x, 2x, 4x: the GAN's proportions
    assert config["num_class_embeds"] == 11  # one more: "no class", for guidance
    for shape in ((28, 28, 1), (12, 12, 3), (7, 7, 1)):
        net = Diffusion(10, unet_config(10, shape, 8))
        h, w, c = shape
        out = net(torch.randn(2, c, h, w), torch.tensor([3, 999]), torch.tensor([0, 10]))
        assert out.shape == (2, c, h, w)


def test_a_sample_is_fixed_by_its_seed_whatever_the_batch(monkeypatch):
    net = tiny_unet(guidance=2.0, sample_steps=4)
    labels, seeds = torch.tensor([0, 1, 2, 1, 0]), [5, 6, 7, 8, 9]
    together = generation.sample(net, labels, seeds)
    alone = torch.cat([generation.sample(net, labels[i:i + 1], seeds[i:i + 1])
                       for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert together.shape == (5, 1, 8, 8) and together.abs().max() <= 1
    assert not torch.allclose(together[1], together[3])  # same class, other seed
    # a CPU samples a large batch in parts: the same images, in order
    monkeypatch.setattr(diffusion, "CPU_SAMPLE_BATCH", 2)
    seen = []
    net.unet.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    torch.testing.assert_close(generation.sample(net, labels, seeds), together, atol=1e-5,
                               rtol=0)
    assert max(seen) == 2 * 2  # two images at a time, each with and without its class
    with pytest.raises(ValueError, match="5 labels but 4 seeds"):
        generation.sample(net, labels, seeds[:4])


def test_guidance_changes_the_images_and_zero_is_the_conditional_model_alone():
    net = tiny_unet(guidance=0.0, sample_steps=4)
    labels, seeds = torch.tensor([0, 2]), [1, 2]
    plain = generation.sample(net, labels, seeds)
    net.guidance = 4.0
    guided = generation.sample(net, labels, seeds)
    assert (guided - plain).abs().max() > 1e-3
    x, t = torch.randn(2, 1, 8, 8), torch.tensor(500)
    net.guidance = 0.0
    assert torch.equal(net.guided(x, t, labels), net(x, t, labels))


def test_guidance_is_one_plus_w_times_the_class_minus_w_times_no_class():
    """(1 + w) * conditional - w * unconditional, the unconditional one asked with the "no
    class" index, num_classes (a sign or an index off by one fails here)."""
    net = tiny_unet(num_classes=3, guidance=2.0)
    asked = []

    def fake_forward(x, t, labels):  # the prediction is the class index asked for
        asked.append(labels.clone())
        return labels.float()[:, None, None, None].expand(-1, 1, 8, 8)

    net.forward = fake_forward
    guided = net.guided(torch.zeros(2, 1, 8, 8), torch.tensor(10), torch.tensor([0, 1]))
    assert torch.equal(asked[0], torch.tensor([0, 1, 3, 3]))
    # class c: (1 + 2) * c - 2 * 3
    torch.testing.assert_close(guided[:, 0, 0, 0], torch.tensor([-6.0, -3.0]))


def test_label_dropout_hides_its_share_of_classes_behind_the_no_class_index():
    labels = torch.arange(4).repeat(2500)
    g = torch.Generator().manual_seed(0)
    shown = diffusion.hide_classes(labels, 0.1, 4, g)
    hidden = shown == 4
    assert 0.08 < hidden.float().mean().item() < 0.12
    assert torch.equal(shown[~hidden], labels[~hidden])  # the rest keep their own class
    assert torch.equal(diffusion.hide_classes(labels, 0.0, 4, g), labels)
    assert (diffusion.hide_classes(labels, 1.0, 4, g) == 4).all()


def test_the_trainer_hides_classes_at_its_rate_so_the_unconditional_model_learns():
    """Each training step shows the network "no class" for about generate.label_dropout of
    its images (without it the unconditional prediction that guidance subtracts never
    trains, and guidance silently does nothing)."""
    from lightning.fabric import Fabric

    cfg = resolve(preset="tiny", overrides={"generate.backend": "diffusion",
                                            "generate.label_dropout": "0.25"}).generate
    model = diffusion.build(cfg, 4, (8, 8, 1))
    net = model.objects["generator"]
    shown = []
    net.register_forward_pre_hook(lambda module, args: shown.append(args[2].clone()))
    step = diffusion.trainer(model, cfg, Fabric(accelerator="cpu", devices=1))
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(50)
    for _ in range(4):
        step(torch.zeros(len(labels), 1, 8, 8), labels, g)
    seen = torch.cat(shown)
    hidden = seen == 4
    assert len(seen) == 800 and 0.2 < hidden.float().mean().item() < 0.3
    assert torch.equal(seen[~hidden], labels.repeat(4)[~hidden])


def test_a_round_samples_each_candidate_at_its_own_guidance(diffusion_fit):
    """The joint round's candidate sets at guidance 0 and 4 are different images (the
    guidance reaches the sampler), and each is what the sampler gives at that guidance."""
    from semigen.joint.images import make_images

    run, _ = diffusion_fit
    state = checkpoint.load(run / "checkpoints" / "generate" / "latest.pt")
    at = {w: make_images(state, None, "sample", w, 2, seed=3, device="cpu")[0]
          for w in (0.0, 4.0)}
    assert (at[0.0] != at[4.0]).any()
    direct = generation.generate_per_class(
        diffusion.from_checkpoint(state, guidance=4.0), len(state["classes"]), 2, 3)[0]
    assert (direct.permute(0, 2, 3, 1).numpy() == at[4.0]).all()


def test_config_refuses_an_unknown_backend_and_guidance_without_label_dropout():
    with pytest.raises(ConfigError, match="generate.backend"):
        validate(resolve(preset="tiny", overrides={"generate.backend": "vae"}))
    with pytest.raises(ConfigError, match="label_dropout"):
        validate(resolve(preset="tiny", overrides={"generate.backend": "diffusion",
                                                   "generate.label_dropout": "0"}))
    validate(resolve(preset="tiny", overrides={"generate.backend": "diffusion",  # no guidance
                                               "generate.label_dropout": "0",
                                               "generate.guidance": "0"}))


def folder_config(folder, out, **extra):
    return resolve(preset="tiny", overrides={
        "data.source": str(folder), "generate.backend": "diffusion",
        "generate.mode": "labels-only", "run.out": str(out), "run.log_every": "1",
        "run.checkpoint_every": "5", **extra})


def test_diffusion_resumes_exactly(tmp_path, monkeypatch, clean_folder):
    api.generate_run(folder_config(clean_folder, tmp_path / "straight"))
    interrupt_after_checkpoint(
        monkeypatch, lambda: api.generate_run(folder_config(clean_folder, tmp_path / "resumed")))
    api.generate_run(folder_config(clean_folder, tmp_path / "resumed"))

    def losses(out):
        return [(r["step"], r["denoising_loss"]) for r in read_stats(out)
                if "denoising_loss" in r]
    assert len(losses(tmp_path / "straight")) == 20
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    states = [checkpoint.load(tmp_path / run / "checkpoints" / "generate" / "latest.pt")
              for run in ("straight", "resumed")]
    assert states[0]["backend"] == "diffusion" and states[0]["step"] == 20
    for name, tensor in states[0]["ema"].items():
        assert torch.equal(tensor, states[1]["ema"][name]), name
    # the run's grids are the diffusion model's: 2 classes x 4, 12 px colour
    grid = cv2.imread(str(tmp_path / "straight" / "samples" / "generate-step-00000020.png"))
    assert grid.shape == (2 * 13 + 1, 4 * 13 + 1, 3)


def test_another_backend_s_generator_is_not_continued(tmp_path, clean_folder):
    out = tmp_path / "run"
    api.generate_run(folder_config(clean_folder, out, **{"generate.backend": "gan"}))
    with pytest.raises(ConfigError, match="generate.backend: 'gan' -> 'diffusion'"):
        api.generate_run(folder_config(clean_folder, out))
    # nor a checkpoint of another backend named by path
    gan_checkpoint = out / "checkpoints" / "generate" / "latest.pt"
    with pytest.raises(checkpoint.CheckpointError, match="holds a gan generator"):
        api.generate_run(folder_config(clean_folder, tmp_path / "other",
                                       **{"run.resume": str(gan_checkpoint)}))


@pytest.fixture(scope="module")
def diffusion_fit(tmp_path_factory):
    """A whole tiny fit (one joint round) with the diffusion backend."""
    root = tmp_path_factory.mktemp("diffusion-fit")
    run = root / "run"
    summary = semigen.fit("digits", out=str(run), preset="tiny", rounds=1,
                          generate__backend="diffusion", data__cache_dir=str(root / "cache"))
    return run, summary


def test_every_verb_works_with_the_diffusion_backend(diffusion_fit, tmp_path, capsys):
    run, summary = diffusion_fit
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["generate"]["backend"] == metrics["generate-r1"]["backend"] == "diffusion"
    assert metrics["label-r1"]["synthetic"] > 0  # round 1 learnt from its generated images
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    images = metrics["evaluate"]["images"]
    assert images["generator"] == {"backend": "diffusion", "guidance": 0.5, "sample_steps": 4,
                                   "sampler": "DPM-Solver++ (2nd order)"}
    assert images["n_fake"] == 100 and images["fid"] >= 0
    assert "diffusion, guidance 0.5" in (run / "report.html").read_text()

    # evaluate and sample at another guidance than the one trained with
    capsys.readouterr()
    assert main(["evaluate", str(run), "--generate.guidance", "0", "--per-class", "5"]) == 0
    again = json.loads((run / "metrics.json").read_text())["evaluate"]["images"]
    assert again["generator"]["guidance"] == 0 and again["n_fake"] == 50
    for w in ("0", "4"):
        assert main(["sample", str(run), "--per-class", "2", "--out", str(tmp_path / w),
                     "--generate.guidance", w, "--generate.sample_steps", "3"]) == 0
        with open(tmp_path / w / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 20
        assert {(r["guidance"], r["sample_steps"]) for r in rows} == {(str(float(w)), "3")}
    differ = [(tmp_path / "0" / r["path"]).read_bytes() != (tmp_path / "4" / r["path"])
              .read_bytes() for r in rows]
    assert sum(differ) > len(rows) // 2
    assert main(["sample", str(run), "--per-class", "1", "--out", str(tmp_path / "bad"),
                 "--generate.guidance", "-1"]) == 2


def test_sampling_the_same_seeds_in_other_batches_gives_the_same_files(diffusion_fit,
                                                                         tmp_path):
    run, _ = diffusion_fit
    for batch in ("3", "40"):
        assert main(["sample", str(run), "--per-class", "4", "--seed", "9",
                     "--batch-size", batch, "--out", str(tmp_path / batch)]) == 0
    with open(tmp_path / "3" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert len(manifest) == 40
    for row in manifest:
        a = cv2.imread(str(tmp_path / "3" / row["path"])).astype(int)
        b = cv2.imread(str(tmp_path / "40" / row["path"])).astype(int)
        assert abs(a - b).max() <= 1, row["path"]  # float sums differ in the last bit only


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["net"].pop("unet"), "'unet'"),
    (lambda s: s["net"]["unet"].update(block_out_channels=[16, 32]), "loading state_dict"),
    (lambda s: s.update(backend="vae"), "backend 'vae'"),
])
def test_a_malformed_diffusion_checkpoint_is_refused_naming_the_file(
        diffusion_fit, tmp_path, capsys, damage, message):
    run, _ = diffusion_fit
    state = checkpoint.load(run / "checkpoints" / "generate" / "latest.pt")
    state.pop("loaded_from")
    damage(state)
    bad = tmp_path / "bad.pt"
    checkpoint.save(state, bad)
    capsys.readouterr()
    assert main(["sample", str(run), "--per-class", "1", "--out", str(tmp_path / "out"),
                 "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err


def test_the_report_plots_whatever_losses_a_backend_logs():
    stats = [{"stage": "label", "step": 1, "loss": 2.0, "test_accuracy": 0.5},
             {"stage": "generate", "step": 1, "denoising_loss": 0.3},
             {"stage": "generate", "step": 1, "event": "done", "final_loss": 9}]
    assert curve_panels(stats) == [("loss", "training loss"),
                                   ("denoising_loss", "denoising loss"),
                                   ("test_accuracy", "test accuracy")]


def test_every_backend_offers_the_same_names_and_has_a_quick_budget():
    """The backend table and the config's budgets name the same backends, and every backend
    module offers what the generator's stage, export and the report ask of it (the `Backend`
    protocol), and the protocol tells a module that lacks one of its names."""
    import types

    from semigen.config import BACKEND_BUDGET
    from semigen.generation.backends import BACKENDS, Backend
    assert set(BACKENDS) == set(BACKEND_BUDGET)
    lacking = types.ModuleType("lacking")
    lacking.__dict__.update({k: v for k, v in vars(BACKENDS["gan"]).items() if k != "sync"})
    assert not isinstance(lacking, Backend)
    for name, module in BACKENDS.items():
        assert isinstance(module, Backend), f"{name} lacks a name of the Backend protocol"
        assert isinstance(module.describe({"backend": name, "guidance": 1.0,
                                           "sample_steps": 20}), str)


def test_edm_s_target_and_preconditioning_give_back_the_clean_image():
    """The network's target in the EDM form is what, scaled by c_out and added to c_skip times
    the noisy image, is the clean image; and the sampler's own preconditioning of a perfect
    prediction denoises to it."""
    g = torch.Generator().manual_seed(0)
    x, noise = torch.rand(64, 1, 4, 4, generator=g) * 2 - 1, torch.randn(64, 1, 4, 4,
                                                                         generator=g)
    scaled, c_noise, target = diffusion.edm_example(x, noise, g)
    sigma = (4 * c_noise).exp()[:, None, None, None]
    noisy = x + sigma * noise
    torch.testing.assert_close(scaled, noisy / (sigma ** 2 + 0.25).sqrt())
    solver = diffusion.sampler("edm")
    torch.testing.assert_close(solver.precondition_outputs(noisy, target, sigma), x,
                               atol=1e-4, rtol=1e-4)
    assert 0.1 < sigma.median() < 0.6 and sigma.min() < 0.05 and sigma.max() > 2


def test_the_edm_form_trains_and_samples_by_seed(tmp_path):
    cfg = resolve(preset="tiny", overrides={
        "run.out": str(tmp_path / "edm"), "generate.backend": "diffusion",
        "generate.diffusion_form": "edm", "generate.mode": "labels-only",
        "generate.steps": "60", "generate.sample_steps": "6"})
    api.generate_run(cfg)
    state = checkpoint.load(tmp_path / "edm" / "checkpoints" / "generate" / "latest.pt")
    net = diffusion.from_checkpoint(state)
    assert net.prediction == "edm" and "EDM" in net.settings()["sampler"]
    labels, seeds = torch.tensor([0, 1, 1]), [3, 4, 5]
    images = generation.sample(net, labels, seeds)
    assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1 and images.std() > 0.05
    torch.testing.assert_close(generation.sample(net, labels[1:2], seeds[1:2]), images[1:2],
                               atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="generate.diffusion_form"):
        validate(resolve(preset="tiny", overrides={"generate.diffusion_form": "vp"}))
