"""A colour folder set with many images per class: desktop icons of several icon themes that
Debian ships as packages (so they install offline), 48 px, filed by what they stand for
(actions, apps, devices, mimetypes, places, status). Each theme draws in its own style, so a
class holds many different looks: what a generator's variety per class is measured against.

    apt-get download faenza-icon-theme mate-icon-theme gnome-icon-theme lxde-icon-theme \\
        moka-icon-theme oxygen-icon-theme
    for f in *.deb; do dpkg-deb -x $f /work/data/themes/root; done
    python benchmarks/make_theme_icons.py /work/data/sets/themes-l10 \\
        --icons /work/data/themes/root/usr/share/icons

Per class at most `--per-class` icons (a random subset), `--labeled` labeled, `--test` held
out, the rest unlabeled; ``<out>.truth.csv`` as `make_elpv.py` writes it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from folder_sets import write_folder_set  # noqa: E402

CONTEXTS = ("actions", "apps", "devices", "mimetypes", "places", "status")


def icons_by_context(icons: Path, size: int) -> dict[str, list[Path]]:
    """Every theme's PNG icons of `size` px per context; links are other names for the same
    artwork, so each picture counts once. Themes file them as <size>x<size>/<context> or
    <context>/<size>."""
    found: dict[str, list[Path]] = {c: [] for c in CONTEXTS}
    for theme in sorted(p for p in icons.iterdir() if p.is_dir()):
        for context in CONTEXTS:
            for folder in (theme / f"{size}x{size}" / context, theme / context / str(size),
                           theme / "base" / f"{size}x{size}" / context):
                if folder.is_dir():
                    found[context] += sorted(p for p in folder.glob("*.png")
                                             if not p.is_symlink())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--icons", type=Path, action="append", required=True,
                        help="a folder of icon themes (repeatable)")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--labeled", type=int, default=10)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed + 3000)
    staging = args.out.with_name(args.out.name + ".files")
    members = {}
    for icons in args.icons:
        for context, files in icons_by_context(icons, args.size).items():
            members.setdefault(context, []).extend(files)
    for context, files in members.items():
        chosen = sorted(rng.choice(len(files), min(args.per_class, len(files)), replace=False))
        (staging / context).mkdir(parents=True, exist_ok=True)
        named = []
        for i in chosen:  # one name per picture: its theme and its own name
            theme = files[i].relative_to(next(p for p in args.icons
                                              if files[i].is_relative_to(p))).parts[0]
            target = staging / context / f"{theme}-{files[i].name}"
            if not target.exists():
                os.link(files[i], target)
            named.append(target)
        members[context] = named
    truth = write_folder_set(args.out, members, args.labeled, args.test, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in members.items())
          + f"; {len(truth)} unlabeled")


if __name__ == "__main__":
    main()
