"""`semigen review` on thousands of images: time to the first page and the server's memory.

    python benchmarks/review_speed.py RUN [RUN ...] --out runs/bench-review-speed

For each finished label (or fit) run, on a copy of it (nothing written into RUN): start
`semigen review` as its own process, time from the start to the first page answered (the
classifier reading every unlabeled image once), then a class page and its 48 thumbnails made
for the first time and again from the cache, the server's resident memory (now and at its
peak, from /proc), then a second start (predictions read from the cache). Prints Markdown."""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the server's token travels in the printed address once, then in a cookie
OPENER = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(
    http.cookiejar.CookieJar()))


def get(url: str) -> bytes:
    with OPENER.open(url, timeout=600) as response:
        return response.read()


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, resident at its peak) in MB, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def start(run: Path, port: int, threads: int) -> tuple[subprocess.Popen, float]:
    """The server, and the seconds from its start to the first page answered (at the address
    it prints, with its token)."""
    began = time.perf_counter()
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen([sys.executable, "-m", "semigen", "review", str(run), "--port",
                               str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:
        if "http://" in line:
            get(line.split()[1])
            return server, time.perf_counter() - began
    server.wait()
    raise SystemExit(f"{run}: the review server stopped (exit {server.returncode})")


def measure(run: Path, work: Path, threads: int) -> dict:
    copy = work / run.name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(
        "review", "added_labels.csv", "run.lock", "tensorboard", "earlier"))
    port = free_port()
    server, first = start(copy, port, threads)
    base = f"http://127.0.0.1:{port}"
    try:
        page = get(base + "/class/0").decode()
        thumbs = [line.split('"')[1] for line in page.split("<img ")[1:]]
        began = time.perf_counter()
        for src in thumbs:
            get(base + src)
        made = time.perf_counter() - began
        began = time.perf_counter()
        get(base + "/class/0")
        for src in thumbs:
            get(base + src)
        cached = time.perf_counter() - began
        for url in ("/next", "/errors", "/generated", "/figures", "/api/next"):
            get(base + url)
        resident, peak = memory_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    server, second = start(copy, port, threads)
    server.terminate()
    server.wait(30)
    config = (copy / "config.yaml").read_text()
    split = json.loads((copy / "split.json").read_text())
    return {"run": str(run), "source": next(line.split(":", 1)[1].strip() for line in
                                            config.splitlines() if line.strip().startswith(
                                                "source:")),
            "unlabeled": split["unlabeled_count"], "labeled": len(split["labeled"]),
            "first_page_s": first, "first_page_cached_s": second, "thumbnails": len(thumbs),
            "class_page_made_s": made, "class_page_cached_s": cached,
            "resident_mb": resident, "peak_mb": peak, "threads": threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/bench-review-speed"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [measure(run, args.out, args.threads) for run in args.runs]
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print("| data | images (unlabeled + labeled) | first page | first page, predictions cached "
          "| 48 thumbnails made / cached | server memory (now / peak) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['source']} | {r['unlabeled']:,} + {r['labeled']:,} | "
              f"{r['first_page_s']:.1f} s | {r['first_page_cached_s']:.1f} s | "
              f"{r['class_page_made_s']:.2f} s / {r['class_page_cached_s']:.2f} s | "
              f"{r['resident_mb']:.0f} / {r['peak_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
