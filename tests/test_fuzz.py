"""No traceback from input, tried systematically with Hypothesis: random values of the right
and wrong types for every config field (as keywords and flags, in a --config file and in a
run's config.yaml), and random bytes or random JSON as the files a user or a crash can leave
(a labels CSV, split.json, metrics.json, pseudo_labels.csv, checkpoints, weights). Each is
accepted, or refused with semigen's own error naming the field or the file."""

import dataclasses
import io
import json
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semigen import checkpoint
from semigen.checkpoint import CheckpointError
from semigen.cli import main
from semigen.config import Config, ConfigError, make_config
from semigen.data import DataError
from semigen.labeling.nets import read_state_dict
from semigen.run import check_split, read_metrics

REFUSALS = (ConfigError, DataError, CheckpointError)
FIELDS = [f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
          for f in dataclasses.fields(section.type if isinstance(section.type, type)
                                      else type(getattr(Config(), section.name)))]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-1", "0", "1e-30", "true", "none", "",
                     "digits", "auto", "cpu", "semi", "gan", "../x", "\x00"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=5), scalars, max_size=3))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def accepted_or_refused(work) -> None:
    """`work()` returns, or raises one of semigen's refusals; anything else is a defect."""
    try:
        work()
    except REFUSALS as e:
        assert str(e).strip(), "a refusal must say something"


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=values)
def test_every_config_field_takes_any_value_or_refuses_it(tmp_path, field, value):
    section, name = field.split(".")
    accepted_or_refused(lambda: make_config(**{f"{section}__{name}": value}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({section: {name: value}}))
    accepted_or_refused(lambda: make_config(config=str(config)))  # --config FILE
    accepted_or_refused(lambda: make_config(base=str(config)))  # a run's config.yaml


@SETTINGS
@given(document=json_values)
def test_any_yaml_document_as_a_config_file_is_accepted_or_refused(tmp_path, document):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    accepted_or_refused(lambda: make_config(config=str(config)))


@settings(SETTINGS, max_examples=40)
@given(field=st.sampled_from(FIELDS), text=st.text(max_size=12))
def test_every_flag_on_the_command_line_ends_in_an_exit_code(tmp_path, field, text):
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["label", "digits", "--out", str(tmp_path / "run"), "--dry-run",
                     f"--{field}", text or "''"])
    assert code in (0, 1, 2) and "Traceback" not in err.getvalue()


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "data"
    rng = np.random.default_rng(0)
    for k, name in enumerate(("a", "b")):
        for i in range(3):
            image = np.clip(rng.normal(40 + 170 * k, 20, (10, 10, 3)), 0, 255).astype(np.uint8)
            write_image(root / "imgs" / name / f"{i}.png", image)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-run") / "run"
    with redirect_stderr(io.StringIO()):
        assert main(["label", "digits", "--out", str(out), "--preset", "tiny",
                     "--label.mode", "labels-only", "--label.steps", "3"]) == 0
    return out


def contents():
    text = st.one_of(json_values.map(json.dumps), st.text(max_size=200))
    return st.one_of(st.binary(max_size=300), text.map(str.encode))


@SETTINGS
@given(blob=contents())
def test_any_bytes_as_a_labels_csv(folder, blob):
    labels = folder / "labels.csv"
    labels.write_bytes(blob)
    with redirect_stderr(io.StringIO()):
        code = main(["data", "check", str(folder), "--labels", str(labels)])
    assert code in (0, 1, 2)


@settings(SETTINGS, max_examples=40)  # each writes a report: half a second
@given(name=st.sampled_from(["split.json", "metrics.json", "pseudo_labels.csv"]),
       blob=contents())
def test_any_bytes_as_a_run_record(run, name, blob):
    path = run / name
    kept = path.read_bytes() if path.exists() else None
    path.write_bytes(blob)
    try:
        accepted_or_refused(lambda: read_metrics(run))
        accepted_or_refused(lambda: check_split(run, json.loads((run / "split.json").read_text())
                                                if name != "split.json" else
                                                {"classes": [], "labeled": [],
                                                 "labeled_labels": [], "unlabeled_count": 0,
                                                 "unlabeled_fingerprint": ""}))
        with redirect_stderr(io.StringIO()):
            assert main(["report", str(run)]) in (0, 2)
    finally:
        if kept is None:
            path.unlink()
        else:
            path.write_bytes(kept)


@SETTINGS
@given(blob=contents())
def test_any_bytes_as_a_checkpoint_or_weights_file(tmp_path, run, blob):
    path = tmp_path / "file.pt"
    path.write_bytes(blob)
    accepted_or_refused(lambda: checkpoint.load(path))
    accepted_or_refused(lambda: read_state_dict(path))
    with redirect_stderr(io.StringIO()):
        assert main(["predict", str(run), str(run / "samples"), "--out",
                     str(tmp_path / "p.csv"), "--overwrite", "--checkpoint", str(path)]) == 2
