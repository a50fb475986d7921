"""A user's folder of real scans: the ELPV solar-cell set (Buerhop-Lutz et al. 2018; Deitsch
et al. 2019), 2,624 grey 300x300 px electroluminescence images of solar cells, each with the
type of cell (mono- or polycrystalline) and the share of experts who called it defective.
PyPI's `elpv-dataset` package ships the images, so it installs offline:

    pip install --no-deps --target /work/data/elpv-pkg elpv-dataset
    python benchmarks/make_elpv.py runs/elpv --package /work/data/elpv-pkg --all-labeled-copy

Four classes, as common as they are in the collection (not balanced): mono-ok, mono-defect,
poly-ok, poly-defect, "defect" where at least half the experts saw one (about 30 % of each
type). Writes the folder contract with `--labeled` images per class in ``labeled/``, `--test`
per class in ``test/`` (balanced, as a user would pick a test set) and every other image in
``unlabeled/`` at its true share; beside the folder ``<out>.truth.csv`` (the unlabeled images'
classes, never read by training) and with ``--all-labeled-copy`` ``<out>-all``, every training
image labeled (the all-labels baseline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from folder_sets import balanced, write_folder_set  # noqa: E402
from make_shapes import all_labeled_copy  # noqa: E402


def cell_classes(package: Path) -> list[tuple[Path, str]]:
    """(image file, class) for every cell listed in the package's labels.csv."""
    data = package / "elpv_dataset" / "data"
    found = []
    for line in (data / "labels.csv").read_text().splitlines():
        rel, probability, kind = line.split()
        found.append((data / rel, f"{kind}-{'defect' if float(probability) >= 0.5 else 'ok'}"))
    return found


def make(out: Path, package: Path, labeled: int, test: int, seed: int, equal: bool = False
         ) -> list[tuple[str, str]]:
    members: dict[str, list[Path]] = {}
    for path, name in cell_classes(package):
        members.setdefault(name, []).append(path)
    return write_folder_set(out, balanced(members, seed) if equal else members, labeled, test,
                            seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--package", type=Path, required=True,
                        help="the folder elpv-dataset was installed into (pip --target)")
    parser.add_argument("--labeled", type=int, default=10, help="labeled images per class")
    parser.add_argument("--test", type=int, default=50, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balanced", action="store_true",
                        help="every class cut to as many images as the smallest has")
    parser.add_argument("--all-labeled-copy", action="store_true")
    args = parser.parse_args()
    truth = make(args.out, args.package, args.labeled, args.test, args.seed,
                 args.balanced)
    print(f"wrote {args.out} ({len(truth)} unlabeled) and {args.out.name}.truth.csv")
    if args.all_labeled_copy:
        print(f"wrote {all_labeled_copy(args.out, truth)}")


if __name__ == "__main__":
    main()
