"""What every benchmark script shares: its standard options and where its results go."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """--preset, --seeds, --labels-per-class, --set k=v (any config field), --out."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="k=v",
                   help="a config field for every run, e.g. label.steps=800")
    p.add_argument("--out", default=out)
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    args = p.parse_args()
    args.set = dict(pair.split("=", 1) for pair in args.set)
    return args


def save(out: str, results: list[dict], table: str | None = None) -> None:
    """OUT/results.json after every run (a stopped benchmark keeps what it measured); at the
    end the Markdown table, to OUT/table.md and the console."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "results.json").write_text(json.dumps(results, indent=1))
    if table is not None:
        (Path(out) / "table.md").write_text(table + "\n")
        print(table)


def save_merged(out: str, rows: list[dict], key: tuple[str, ...], table: str | None = None
                ) -> list[dict]:
    """`save`, keeping the rows of other invocations in OUT/results.json (read just before
    writing, so that benchmark processes running at the same time add to one file); a row of
    `rows` replaces the earlier one with the same `key` fields. Returns every row, in key order."""
    def ident(row):
        return tuple(row[k] for k in key)
    path = Path(out) / "results.json"
    earlier = json.loads(path.read_text()) if path.exists() else []
    replaced = {ident(r) for r in rows}
    merged = sorted([r for r in earlier if ident(r) not in replaced] + rows, key=ident)
    save(out, merged, table)
    return merged


def mean_and_spread(values: list, decimals: int = 2) -> str:
    """'m% ± sd%' of the values that are not None (no spread for one value; '–' for none)."""
    import statistics
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.{decimals}%}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{decimals}%}{spread}"


def grids_side_by_side(path: Path, grids: dict[str, Path], classes: list[str]) -> Path:
    """One PNG of per-class sample grids (one row per class) side by side, titled by the keys
    of `grids`, the class names on the left."""
    import cv2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 5), squeeze=False)
    for ax, (title, png) in zip(axes[0], grids.items(), strict=True):
        grid = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
        ax.imshow(grid, interpolation="nearest")
        rows = [(i + 0.5) * grid.shape[0] / len(classes) for i in range(len(classes))]
        ax.set_yticks(rows, classes, fontsize=8)
        ax.set_xticks([])
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def last_grid(run: Path) -> Path | None:
    """A generator run's last per-class grid of its first stage (RUN/samples/)."""
    found = sorted((Path(run) / "samples").glob("generate-step-*.png"))
    return found[-1] if found else None
