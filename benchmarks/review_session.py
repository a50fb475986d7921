"""A user session with `semigen review`, end to end: label K suggested images in the page by
keyboard, continue the run, and compare with K random images labeled instead.

    python benchmarks/review_session.py RUN --k 50 --out runs/bench-review-session

RUN: a finished `semigen label` run of a built-in (its held-out truth plays the user, who knows
each image's class). Two copies of RUN:
- suggested: `semigen review` serves the copy; headless Chromium opens Label next and, for each
  image shown, presses the key of its true class (as a user would), K times; the page writes
  the copy's added_labels.csv;
- random: K unlabeled images drawn at random (seed 0) get their true labels in the copy's
  added_labels.csv, as if labeled by hand.
Then `semigen label COPY` continues each copy (the features kept, fine-tuning again), side by
side, one thread each. Prints the test accuracy before (RUN) and after each, as Markdown."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from semigen.config import load_run_config
from semigen.data import added, load_dataset
from semigen.review.app import create_app
from semigen.review.state import load


def copy_run(run: Path, to: Path) -> Path:
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(
        "review", "added_labels.csv", "run.lock", "tensorboard", "earlier"))
    return to


def label_in_the_browser(run: Path, k: int, truth: dict) -> float:
    """K suggested images labeled in Label next by their true class's key; returns seconds."""
    import socket

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    review = load(run, suggest=k, generated_per_class=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(review), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    from semigen.review.app import KEYS
    began = time.perf_counter()
    try:
        browser.get(f"http://127.0.0.1:{port}/next")
        for done in range(k):
            WebDriverWait(browser, 30).until(lambda d, n=done: d.find_element(
                By.ID, "progress").text.startswith(f"{n} labeled"))
            shown = int(browser.find_element(By.ID, "current").get_attribute("src")
                        .rsplit("/", 1)[1].split(".")[0])
            image_id = review.data.unlabeled.ids[shown]
            browser.find_element(By.TAG_NAME, "body").send_keys(KEYS[truth[image_id]])
        WebDriverWait(browser, 30).until(lambda d: d.find_element(
            By.ID, "progress").text.startswith(f"{k} labeled"))
    finally:
        browser.quit()
        server.should_exit = True
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("runs/bench-review-session"))
    args = p.parse_args()
    data = load_dataset(load_run_config(args.run / "config.yaml").data)
    if data.unlabeled_truth is None:
        raise SystemExit(f"{args.run}: needs a built-in's run (its truth plays the user)")
    truth = dict(zip(data.unlabeled.ids, data.unlabeled_truth.tolist(), strict=True))
    before = json.loads((args.run / "metrics.json").read_text())["label"]

    suggested = copy_run(args.run, args.out / "suggested")
    seconds = label_in_the_browser(suggested, args.k, truth)
    picked = added.read(suggested / "added_labels.csv")
    assert len(picked) == args.k, f"the page wrote {len(picked)} labels, not {args.k}"
    random = copy_run(args.run, args.out / "random")
    drawn = np.random.default_rng(0).choice(len(data.unlabeled), args.k, replace=False)
    added.write(random / "added_labels.csv",
                {data.unlabeled.ids[i]: data.classes[data.unlabeled_truth[i]] for i in drawn})

    env = os.environ | {"OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    jobs = [subprocess.Popen([sys.executable, "-m", "semigen", "label", str(copy),
                              "--runtime.threads", "1", "--run.progress", "false"], env=env,
                             stdout=subprocess.DEVNULL, stderr=open(copy.with_suffix(".log"), "w"))
            for copy in (suggested, random)]
    if any(job.wait() for job in jobs):
        raise SystemExit(f"a continued run failed: see {args.out}/*.log")
    minutes = (time.perf_counter() - began) / 60
    after = {name: json.loads((args.out / name / "metrics.json").read_text())["label"]
             for name in ("suggested", "random")}
    right = sum(data.classes[truth[i]] == label for i, label in picked.items())
    result = {"run": str(args.run), "k": args.k, "browser_seconds": seconds,
              "continue_minutes": minutes, "before": before["test_accuracy"],
              "suggested": after["suggested"]["test_accuracy"],
              "random": after["random"]["test_accuracy"], "labels_right": right,
              "pseudo_before": before.get("pseudo_label_accuracy"),
              "pseudo_suggested": after["suggested"].get("pseudo_label_accuracy"),
              "pseudo_random": after["random"].get("pseudo_label_accuracy")}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"{args.k} labels in the page in {seconds:.0f} s; continued side by side in "
          f"{minutes:.1f} min\n")
    print("| labels | test accuracy | pseudo-labels right |\n| --- | ---: | ---: |")
    print(f"| the run's own ({before['labeled']}) | {before['test_accuracy']:.2%} | "
          f"{before.get('pseudo_label_accuracy', float('nan')):.2%} |")
    for name in ("random", "suggested"):
        print(f"| + {args.k} {name} | {after[name]['test_accuracy']:.2%} | "
              f"{after[name].get('pseudo_label_accuracy', float('nan')):.2%} |")


if __name__ == "__main__":
    main()
