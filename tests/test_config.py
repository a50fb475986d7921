import pytest

from semigen.config import (
    Config,
    ConfigError,
    differences,
    from_dict,
    presets,
    resolve,
    to_yaml,
    validate,
)


def test_overrides_are_coerced_to_field_types():
    cfg = resolve(overrides={"label.lr": "0.5", "runtime.devices": "2",
                             "data.image-size": "none", "run.progress": "false",
                             "label.weight_decay": "1e-3"})
    assert cfg.label.lr == 0.5 and cfg.runtime.devices == 2
    assert cfg.data.image_size is None and cfg.run.progress is False
    assert cfg.label.weight_decay == pytest.approx(1e-3)


@pytest.mark.parametrize("overrides, message", [
    ({"label.nope": "1"}, "unknown option 'label.nope'"),
    ({"nosection.x": "1"}, "unknown option 'nosection.x'"),
    ({"label.steps": "many"}, "label.steps expects int, got 'many'"),
    ({"label.steps": "2.5"}, "label.steps expects int"),
    ({"run.progress": "maybe"}, "run.progress expects bool"),
    ({"label.lr": None}, "label.lr cannot be empty"),
])
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(overrides=overrides)


def test_yaml_file_layers_over_preset_and_unknown_keys_name_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("label:\n  steps: 7\nruntime:\n  seed: 3\n")
    cfg = resolve(preset="tiny", config_file=str(good), overrides={"runtime.seed": "4"})
    assert cfg.label.steps == 7 and cfg.label.batch_size == 16  # file over preset
    assert cfg.runtime.seed == 4  # command line over file
    bad = tmp_path / "bad.yaml"
    bad.write_text("label:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown option 'label.stepz'"):
        resolve(config_file=str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        resolve(config_file=str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve(preset="huge")


def test_validate_lists_every_problem():
    cfg = resolve(overrides={"label.lr": "-1", "runtime.device": "tpu",
                             "label.mode": "all-labels", "data.source": "/some/folder"})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "label.lr must be > 0" in text
    assert "runtime.device must be one of" in text
    assert "all-labels needs a built-in" in text


def test_presets_exist_and_round_trip():
    assert {"tiny", "quick", "full"} <= set(presets())
    for name in presets():
        cfg = resolve(preset=name)
        validate(cfg)
        assert from_dict(cfg.to_dict()) == cfg
    assert resolve(preset="quick") == resolve()  # the defaults are the quick preset
    assert "label:" in to_yaml(Config())


def test_each_generator_backend_gets_its_own_quick_budget_unless_set():
    gan, diffusion = (resolve(overrides={"generate.backend": b}).generate
                      for b in ("gan", "diffusion"))
    assert (gan.steps, gan.batch_size) == (4000, 128)
    assert (diffusion.steps, diffusion.batch_size) == (3400, 32)
    # what a preset, a file or the command line sets is kept, whatever the backend
    tiny = resolve(preset="tiny", overrides={"generate.backend": "diffusion"}).generate
    assert (tiny.steps, tiny.batch_size) == (20, 16)
    mine = resolve(overrides={"generate.backend": "diffusion", "generate.batch_size": "48"})
    assert (mine.generate.steps, mine.generate.batch_size) == (3400, 48)
    # a run's saved config keeps the budget it was resolved with
    assert from_dict(mine.to_dict()) == mine


def test_differences_name_each_changed_field():
    old = resolve(preset="tiny").to_dict()
    new = resolve(preset="tiny", overrides={"label.steps": "60", "runtime.seed": "2"}).to_dict()
    assert differences(old, new) == ["label.steps: 30 -> 60", "runtime.seed: 0 -> 2"]
    assert differences(old, old) == []


def test_the_generator_budget_scales_each_backend_s_quick_steps_only_where_steps_is_unset():
    from semigen.config import BACKEND_BUDGET
    for backend, quick in BACKEND_BUDGET.items():
        cfg = resolve(overrides={"generate.backend": backend, "generate.budget": "2.5"})
        assert cfg.generate.steps == round(2.5 * quick["steps"])
        assert cfg.generate.batch_size == quick["batch_size"]  # batches as they were
    varied = resolve(preset="varied").generate  # the diffusion backend at its quick budget
    assert (varied.backend, varied.steps) == ("diffusion", BACKEND_BUDGET["diffusion"]["steps"])
    # steps given: the budget does not scale them again (nor a run's saved config)
    assert resolve(overrides={"generate.steps": "300", "generate.budget": "4"}
                   ).generate.steps == 300
    with pytest.raises(ConfigError, match="generate.budget must be > 0"):
        validate(resolve(overrides={"generate.budget": "0"}))
