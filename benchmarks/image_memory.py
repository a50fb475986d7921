"""Peak memory of reading a folder of oversized files, as every command reads them (eight
decoding threads), against the size of the files.

    python benchmarks/image_memory.py                      # this checkout's semigen
    python benchmarks/image_memory.py --src /tmp/old/src   # another commit's, for a before

Each case is a folder of eight files, read in a fresh process; the figure is that process's peak
resident memory above what it held after importing semigen. Prints a Markdown table for
BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

READ = """
import json, resource, sys, time
from pathlib import Path
from semigen.data.sources import _files_under, read_files
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    found = read_files(list(_files_under(Path(sys.argv[1]))), 64)
    outcome = sorted({why or "decoded" for _, why in found})
except Exception as e:
    outcome = [f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mb": (peak - before) // 1024, "seconds": time.perf_counter() - start,
                  "outcome": outcome}))
"""


def make_cases(root: Path) -> dict[str, Path]:
    """Folders of eight files each (hard links to one file: the same bytes, little disk)."""
    rng = np.random.default_rng(0)
    originals = {
        "20000x20000 PNG, 0.4 MB each (gray, flat)": (
            "big.png", np.zeros((20000, 20000), np.uint8)),
        "8000x6000 PNG, 138 MB each (RGB noise, 48 M pixels)": (
            "noise.png", rng.integers(0, 256, (6000, 8000, 3), dtype=np.uint8)),
        "16000x12000 JPEG, 3 MB each (RGB)": (
            "big.jpg", np.full((12000, 16000, 3), (30, 120, 200), np.uint8)),
        "3 GiB file that is not an image": ("blob.dat", None),
    }
    cases = {}
    for i, (case, (name, pixels)) in enumerate(originals.items()):
        folder = root / f"case{i}"
        folder.mkdir()
        first = folder / f"0-{name}"
        if pixels is None:
            with open(first, "wb") as f:
                f.truncate(3 << 30)  # sparse
        else:
            ok, encoded = cv2.imencode(Path(name).suffix, pixels)
            assert ok
            first.write_bytes(encoded.tobytes())
        for k in range(1, 8):
            os.link(first, folder / f"{k}-{name}")
        cases[case] = folder
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(Path(__file__).parents[1] / "src"),
                        help="the semigen source folder to measure")
    parser.add_argument("--label", default="this checkout")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=args.src)
    rows = [f"semigen from {args.src} ({args.label})\n",
            "| folder of eight | peak memory above import | seconds | outcome |",
            "| --- | ---: | ---: | --- |"]
    with tempfile.TemporaryDirectory() as work:
        for case, folder in make_cases(Path(work)).items():
            done = subprocess.run([sys.executable, "-c", READ, str(folder)], env=env,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                rows.append(f"| {case} | | | crashed (exit {done.returncode}): {last[:100]} |")
                continue
            found = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(f"| {case} | {found['mb']} MB | {found['seconds']:.1f} | "
                        f"{'; '.join(found['outcome'])} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
