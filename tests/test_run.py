"""The run package: the layout names every file once, the stages record is kept apart from the
figures (and a run written before it existed continues as it did), and the open run hands its
one data set to the runs that belong to it."""

import json

from semigen.config import resolve
from semigen.run import Layout, Records, Run, open_run
from semigen.run.layout import OWN_ENTRIES


def test_the_layout_spells_each_file_once(tmp_path):
    layout = Layout(tmp_path)
    assert layout.metrics == tmp_path / "metrics.json"
    assert layout.stages == tmp_path / "stages.json"
    assert layout.checkpoint("label-r2") == tmp_path / "checkpoints" / "label-r2" / "latest.pt"
    assert layout.baseline("labels-only") == tmp_path / "baselines" / "labels-only"
    assert {"stages.json", "metrics.json", "checkpoints", "run.lock"} <= OWN_ENTRIES
    assert "review" not in OWN_ENTRIES  # review samples into RUN/review/generated itself


def test_a_run_written_before_the_stages_record_continues_as_it_did(tmp_path):
    """Its metrics.json entries count as finished stages; the first stage finished now writes
    stages.json with them (and their wall times) carried over."""
    cfg = resolve(preset="tiny", overrides={"run.out": str(tmp_path)})
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"represent": {}, "label": {"test_accuracy": 0.9}, "generate": {},
         "seconds": {"label": 3.0, "generate": 4.0}}))
    with Records(tmp_path) as records:
        run = Run(cfg, records, data=None)
        assert run.finished("label") and run.finished("generate")
        assert not run.finished("label-r1") and not run.finished("seconds")
        run.mark_finished("label-r1", 2.0)
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert stages["label"]["seconds"] == 3.0 and stages["label-r1"]["seconds"] == 2.0
    assert "seconds" not in stages
    # from now on the record decides, not the figures
    (tmp_path / "metrics.json").write_text(json.dumps({"label-r2": {}}))
    with Records(tmp_path, writer=False) as records:
        run = Run(cfg, records, data=None)
        assert run.finished("label-r1") and not run.finished("label-r2")


def test_a_part_of_a_run_shares_its_data(tmp_path):
    cfg = resolve(preset="tiny", overrides={"run.out": str(tmp_path / "run")})
    with open_run(cfg) as run:
        inner = resolve(preset="tiny", overrides={"run.out": str(run.layout.baseline("x")),
                                                  "label.mode": "labels-only"})
        with run.part(inner) as part:
            assert part.data is run.data
        other = resolve(preset="tiny", overrides={"run.out": str(tmp_path / "other"),
                                                  "data.split_seed": "1"})
        with run.part(other) as part:
            assert part.data is not run.data
            assert part.data.labeled.ids != run.data.labeled.ids


def test_a_stage_stopped_before_the_first_record_leaves_nothing_finished(tmp_path):
    """A new run stopped inside its label stage has figures of the parts that ran (represent)
    and no stages record: nothing counts as finished, and nothing is carried over."""
    cfg = resolve(preset="tiny", overrides={"run.out": str(tmp_path)})
    (tmp_path / "metrics.json").write_text(json.dumps({"represent": {}, "calibrate": {}}))
    with Records(tmp_path) as records:
        run = Run(cfg, records, data=None)
        assert not run.finished("represent") and not run.finished("label")
        run.mark_finished("label", 5.0)
    assert list(json.loads((tmp_path / "stages.json").read_text())) == ["label"]
