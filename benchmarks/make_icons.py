"""A user's icon library as a folder set: the Oxygen icon theme (KDE), 128x128 px RGBA
artwork that Debian ships as a package, so it installs offline. Its icons are filed by what
they stand for (actions, apps, categories, devices, mimetypes, places, status): classes that
are far from equally common (mimetypes are 43 % of them) and that differ in meaning more than
in look.

    apt-get download oxygen-icon-theme && dpkg-deb -x oxygen-icon-theme_*.deb /work/data/oxygen
    python benchmarks/make_icons.py runs/icons --theme /work/data/oxygen/usr/share/icons/oxygen

Classes with at least `--smallest` icons at `--size` px; `--labeled` per class labeled, `--test`
per class held out, the rest unlabeled; ``<out>.truth.csv`` and ``<out>-all`` (every training
image labeled) as `make_elpv.py` writes them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from folder_sets import balanced, write_folder_set  # noqa: E402
from make_shapes import all_labeled_copy  # noqa: E402


def icons_by_context(theme: Path, size: int, smallest: int) -> dict[str, list[Path]]:
    folder = theme / "base" / f"{size}x{size}"
    # links are other names for the same artwork: each picture once
    found = {context.name: sorted(p for p in context.glob("*.png") if not p.is_symlink())
             for context in sorted(folder.iterdir())
             if context.is_dir()}
    return {name: files for name, files in found.items() if len(files) >= smallest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--theme", type=Path, default=Path("/usr/share/icons/oxygen"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--smallest", type=int, default=30, help="fewest icons a class needs")
    parser.add_argument("--labeled", type=int, default=5, help="labeled images per class")
    parser.add_argument("--test", type=int, default=10, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balanced", action="store_true",
                        help="every class cut to as many images as the smallest has")
    args = parser.parse_args()
    members = icons_by_context(args.theme, args.size, args.smallest)
    if args.balanced:
        members = balanced(members, args.seed)
    truth = write_folder_set(args.out, members, args.labeled, args.test, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in members.items())
          + f"; {len(truth)} unlabeled")
    print(f"wrote {all_labeled_copy(args.out, truth)}")


if __name__ == "__main__":
    main()
