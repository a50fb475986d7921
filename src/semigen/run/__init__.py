"""The run: one directory, opened once, that owns every file in it.

- `layout`: the name of every file and folder of a run directory (nowhere else spelled);
- `lock`: one writer at a time (``run.lock``);
- `atomic`: files replaced whole (`replacing`);
- `records`: the log, stats.jsonl and TensorBoard, metrics.json, stages.json;
- `outputs`: what a command may write to, and what is a run directory;
- `continuation`: the same data, split and model as before, or a refusal;
- `earlier`: what labels added since the split make stale, set aside in ``RUN/earlier/``;
- `pseudo_labels`: ``pseudo_labels.csv``'s format, read and written;
- `checkpoints`: a stage's last checkpoint, by name;
- `run`: `open_run`, which does all of the above once and yields the open `Run`."""

from .atomic import OutputTaken, filling, replacing
from .checkpoints import check_run, load_stage, stage_checkpoint
from .continuation import check_continuation, check_split
from .earlier import set_aside
from .layout import Layout
from .lock import RunInUse, lock_run, unlock_run, writer_of, writing
from .outputs import as_run_path, check_output, is_run_directory
from .pseudo_labels import read_pseudo_labels, write_pseudo_labels
from .records import Records, read_json, read_metrics, read_stages, read_stats
from .run import Run, open_run, run_config, with_added_labels

__all__ = ["Layout", "OutputTaken", "Records", "Run", "RunInUse", "as_run_path",
           "check_continuation", "check_output", "check_run", "check_split", "filling",
           "is_run_directory", "load_stage", "lock_run", "open_run", "read_json",
           "read_metrics", "read_pseudo_labels", "read_stages", "read_stats", "replacing",
           "run_config", "set_aside", "stage_checkpoint", "unlock_run", "with_added_labels",
           "write_pseudo_labels", "writer_of", "writing"]
