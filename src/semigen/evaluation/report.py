"""`semigen report RUN`: one self-contained HTML file (every picture inlined) that opens offline.

It reads only what the run directory holds: metrics.json, stats.jsonl, pseudo_labels.csv,
samples/, data_report.json, and the images themselves (through the run's config) for the
pseudo-label examples. Figures are drawn with matplotlib; nothing is fetched from a network."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from ..config import CLASS_PRIORS, ConfigError, load_run_config
from ..data import load_dataset
from ..data.cells import restored_row, visible
from ..run import (
    Layout,
    Run,
    as_run_path,
    read_metrics,
    read_pseudo_labels,
    read_stages,
    read_stats,
    replacing,
)

EXAMPLES = 8  # pseudo-label examples per class, each end (most and least confident)
SAMPLE_GRID = re.compile(r"(generate(?:-r\d+)?)-step-(\d+)\.png$")


def escape(text: str) -> str:
    """A user's text (a class or file name) as HTML: escaped, and the characters that hide what
    it says made visible, as the review page shows them."""
    return html.escape(visible(text))


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return _png(buffer.getvalue())


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    return plt


def _img(src: str, alt: str, css: str = "") -> str:
    return f'<img src="{src}" alt="{escape(alt)}" class="{css}">'


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _accuracy_note(about: dict) -> str:
    note = (f" (test accuracy {about['test_accuracy']:.4f})"
            if about.get("test_accuracy") is not None else "")
    probe = about.get("class_consistency_by") or {}
    if "labels" in probe:  # the judge's probe: what its consistency stands on
        held = probe.get("held_out_accuracy")
        note += (f"; class consistency by {probe['by']} ({probe['labels']} labels, "
                 + (f"{held:.0%} right on labels held out in turn)" if held is not None
                    else "too few per class to hold any out)"))
    return note


def _judged(images: dict) -> str:
    """FID, KID, precision and recall of one judge, as a phrase."""
    diversity = (f", precision {images['precision']:.2f}, recall {images['recall']:.2f}"
                 if "precision" in images else "")
    consistency = (f", class consistency {images['class_consistency']:.3f}"
                   if "class_consistency" in images else "")
    per_class = (f", class-aware FID {images['class_fid']:.2f} (per class, averaged)"
                 if "class_fid" in images else "")
    return (f"FID {images['fid']:.2f}{per_class}, KID {images['kid']:.4f} ± "
            f"{images['kid_std']:.4f}{diversity}{consistency}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_section(metrics: dict) -> str:
    """The classifier beside its baselines, round by round; pseudo-labels and images too."""
    parts = ["<h2>Results</h2>",
             "<p>Held-out real images only. Image columns: the round's generator scored by the "
             "evaluator network (built-in data sets); variety (x real): the share of what "
             "real images of a class cover that its generated images cover, averaged over the "
             "classes (1: as varied as real images). CAS: the classification accuracy score "
             "of the generated images the round's classifier was given (a linear probe "
             "trained on them alone, scored on the labeled images): whether they teach.</p>",
             _table(["classifier", "test accuracy", "pseudo-label accuracy", "FID",
                     "class consistency", "worst class", "variety (x real)", "CAS"],
                    results_rows(metrics))]
    if metrics.get("fit", {}).get("rounds_note"):
        parts.append(f'<p class="warn">Joint rounds: {escape(metrics["fit"]["rounds_note"])}'
                     '.</p>')
    parts += generator_paragraphs(metrics.get("evaluate", {}))
    if metrics.get("seconds"):
        times = ", ".join(f"{k} {_duration(v)}" for k, v in metrics["seconds"].items()
                          if v is not None)
        parts.append(f"<p>Wall time per stage: {escape(times)}.</p>")
    return "\n".join(parts)


def results_rows(metrics: dict) -> list[list]:
    """A row per classifier: the labels-only baseline, each round, the all-labels baseline."""
    rows = []
    baselines = {k.removeprefix("baseline-"): v for k, v in metrics.items()
                 if k.startswith("baseline-")}
    if "labels-only" in baselines:
        rows.append(["labels-only baseline", baselines["labels-only"].get("test_accuracy"),
                     None, None, None, None, None, None])
    rounds = sorted((int(k.split("-")[1]), v) for k, v in metrics.items()
                    if re.fullmatch(r"round-\d+", k))
    if not rounds and "label" in metrics:  # a label (and generate) run without `fit`
        rounds = [(0, metrics["label"])]
    for r, found in rounds:
        name = "semi-supervised (module 1)" if r == 0 else f"joint round {r}"
        rows.append([name, found.get("test_accuracy"), found.get("pseudo_label_accuracy"),
                     found.get("fid"), found.get("class_consistency"),
                     found.get("worst_class_consistency"), found.get("variety_recall_ratio"),
                     found.get("cas_labeled")])
    if "all-labels" in baselines:
        rows.append(["all-labels baseline", baselines["all-labels"].get("test_accuracy"),
                     None, None, None, None, None, None])
    return rows


def generator_paragraphs(evaluated: dict) -> list[str]:
    """What the final generator's images teach, and how they are judged."""
    parts = []
    teaching = evaluated.get("teaching", {})
    if "cas_labeled" in teaching:
        on_test = (f", the test images' {teaching['cas_test']:.1%} (the same probe trained on "
                   f"the labeled images instead: {teaching['labels_probe_test']:.1%})"
                   if teaching.get("cas_test") is not None else "")
        parts.append(f"<p>What the final generator's images teach (classification accuracy "
                     f"score): a linear probe trained on {teaching['per_class']} of them per "
                     f"class, in {escape(teaching['features'])}, gives the labeled images' "
                     f"class {_fmt(teaching['cas_labeled'])}{on_test}.</p>")
    images = evaluated.get("images", {})
    if "fid" in images:
        about = images["feature_network"]
        sampler = images.get("generator", {"backend": "gan"})
        from ..generation import BACKENDS  # torch: review's figures page imports this module

        how = BACKENDS[sampler["backend"]].describe(sampler)
        against = escape(images.get("real", "the test images"))
        parts.append(f"<p>Final generator ({how}), N = {images['n_fake']} generated against "
                     f"{images['n_real']} real ({against}): {_judged(images)}. Feature "
                     f"network: {escape(about['network'])}"
                     f"{escape(_accuracy_note(about))}. Precision: the share of generated "
                     "images that look like real ones; recall: the share of real images the "
                     "generated ones cover (low: too little variety).</p>")
        parts += variety_paragraphs(images, "the feature network's")
        if "judge" in images:
            judge = images["judge"]
            parts.append(f"<p>The same images by the self-supervised judge a user's own data "
                         f"gets ({escape(judge['feature_network']['network'])}"
                         f"{escape(_accuracy_note(judge['feature_network']))}): "
                         f"{_judged(judge)}.</p>")
            parts += variety_paragraphs(judge, "the self-supervised judge's")
        if "memorisation" in images:
            copied = images["memorisation"]
            parts.append(f"<p>Copying of the generator's {copied['n_train']} training images "
                         f"(pixel space, {copied['n_fake']} generated): nearest-training-image "
                         f"distance {copied['distance_ratio']:.2f} × that of held-out real "
                         f"images (1: as novel as new real images; near 0: copies); "
                         f"{copied['copy_rate']:.1%} of generated images are nearer a training "
                         f"image than 99 % of real ones (about 1 % when novel).</p>")
        if "warning" in images:
            parts.append(f'<p class="warn">{escape(images["warning"])}</p>')
    elif "skipped" in images:
        parts.append(f"<p>Image metrics: {escape(images['skipped'])}</p>")
    return parts


# A class whose generated images reach less than this share of what its real images reach
# gets a sentence of its own: the generator draws too few kinds of its images.
LOW_VARIETY = 0.5


def variety_paragraphs(images: dict, features: str) -> list[str]:
    """Per class: what the generated images cover of its real images, beside what a second set
    of real images covers (same N, same k, same features), and a plain sentence for each class
    below `LOW_VARIETY`."""
    summary = images.get("variety")
    if not summary:
        return []
    rows = [[name, v["variety"]["recall"], v["variety"]["real_recall"],
             v["variety"]["recall_ratio"], v["variety"]["coverage_ratio"],
             v.get("class_consistency")]
            for name, v in images["per_class"].items() if "variety" in v]
    low = [f"class {name}: the generated images cover {100 * ratio:.0f} % of what real images "
           f"of {name} cover" for name, _, _, ratio, _, _ in rows if ratio < LOW_VARIETY]
    reach, cover = 100 * summary["recall_ratio"], 100 * summary["coverage_ratio"]
    parts = [f"<p>Variety in {escape(features)} features, per class: N = "
             f"{summary['n_per_class']} generated and N real images against the same N other "
             f"real images of the class, k = {summary['k']}. Over the classes, the generated "
             f"images reach {reach:.0f} % of what real images reach (recall "
             f"{summary['recall']:.2f} against {summary['real_recall']:.2f}), and cover "
             f"{cover:.0f} % of what they cover.</p>",
             _table(["class", "recall", "real against real", "ratio", "coverage ratio",
                     "class consistency"], rows)]
    if low:
        parts.append(f'<p class="warn">{escape("; ".join(low))}.</p>')
    return parts


def representation_section(metrics: dict, classes: list[str]) -> str:
    """The labels from the self-supervised features: their held-out estimate (the figure a
    user without a test folder has), flagged when near chance."""
    found = metrics.get("represent")
    if not found:
        return ""
    from ..labeling.represent import describe_estimate
    note, near_chance = describe_estimate(found, len(classes))
    rows = [["held out from the labeled images (estimate)", found.get("estimated_accuracy"),
             found.get("estimate_low"), found.get("estimate_high")],
            ["unlabeled images (known truth)", found.get("features_pseudo_label_accuracy"),
             None, None],
            ["test images (head fitted to them)", found.get("features_test_accuracy"), None,
             None]]
    css = ' class="warn"' if near_chance else ""
    sentence = escape(note[0].upper() + note[1:])
    return (f"<h2>Labels from the features</h2><p{css}>{sentence}.</p>"
            + _table(["accuracy of the features' labels", "accuracy", "95 % low", "95 % high"],
                     rows) + candidates_table(found))


def candidates_table(found: dict) -> str:
    """Which features the labels came from (self-supervised, pretrained, both) and how
    (spread, linear probe), why, and each candidate's held-out estimate; beside it, where the
    truth is known, how many of the unlabeled images each one's labels get right (shown, never
    used to choose)."""
    each = found.get("features_candidates")
    if not each:
        return ""
    pairs = [(name, how, v) for name, ways in each.items() for how, v in ways.items()]
    truth = any("pseudo_label_accuracy" in v for _, _, v in pairs)
    chosen = (found["features_chosen"], found.get("labels_by", "spread"))
    rows = [[name + (" (chosen)" if (name, how) == chosen else ""), how,
             v.get("estimated_accuracy"), v.get("estimate_low"), v.get("estimate_high")]
            + ([v.get("pseudo_label_accuracy")] if truth else []) for name, how, v in pairs]
    from ..labeling.represent import way
    why = escape(f"The labels were {way(found)}: {found['features_chosen_why']}.")
    return (f"<p>{why}</p>" + _table(
        ["features", "labels by", "held-out estimate", "95 % low", "95 % high"]
        + (["unlabeled images right (known truth)"] if truth else []), rows))


def calibration_section(metrics: dict, classes: list[str]) -> str:
    """The classifier's own held-out estimate (two-fold cross-fitting) and the temperature
    that calibrates its confidences, flagged when near chance."""
    found = metrics.get("calibrate")
    if not found:
        return ""
    from ..labeling.calibrate import describe
    note, near_chance = describe(found, len(classes))
    rows = [["classifier's accuracy, held out (trained on half the labels)",
             found["classifier_estimate"], found["classifier_estimate_low"],
             found["classifier_estimate_high"]]]
    if "feature_labels_estimate" in found:
        rows.append(["the features' labels on the same held-out halves",
                     found["feature_labels_estimate"], found["feature_labels_estimate_low"],
                     found["feature_labels_estimate_high"]])
    label = metrics.get("label", {})
    ece = [["held-out images, before / after (other half's temperature)",
            found["held_out_ece_before"], found["held_out_ece_after"]]]
    if "test_ece_uncalibrated" in label:
        ece.append(["test images (known truth)", label["test_ece_uncalibrated"],
                    label.get("test_ece")])
    css = ' class="warn"' if near_chance else ""
    sentence = escape(note[0].upper() + note[1:])
    applied = ("The confidences in pseudo_labels.csv, in predictions and below are divided "
               f"by the temperature {found['temperature']:.2f} fitted on held-out labeled "
               "images." if found["temperature"] != 1.0 else
               "The confidences in pseudo_labels.csv, in predictions and below are the "
               "classifier's own (temperature 1).")
    if label.get("final_labels_why"):
        from ..labeling.calibrate import FINAL_LABELS
        applied += escape(f" The unlabeled images' labels (pseudo_labels.csv) come from the "
                               f"{FINAL_LABELS[label['final_labels']]}: "
                               f"{label['final_labels_why']}.")
    return (f"<h2>Confidence: estimate and calibration</h2><p{css}>{sentence}. {applied}</p>"
            + _table(["estimate", "accuracy", "95 % low", "95 % high"], rows)
            + _table(["expected calibration error", "before", "after"], ece))


def class_prior_sentence(found: dict) -> str:
    """What the class shares aimed at were, and how the user changes that (the represent
    figures of a run: `labeling.represent.labels_from_features`)."""
    setting = found.get("class_prior_setting", "labeled")
    text = (f"Distribution alignment and the thresholds aim at {CLASS_PRIORS[setting]} "
            f"(label.class_prior {setting}).")
    if "class_prior_estimate" in found:
        moved = 0.5 * float(np.abs(np.subtract(found["class_prior_estimate"],
                                               found["labeled_prior"])).sum())
        text += (f" EM's estimate of the unlabeled images' shares, from the features' labels, "
                 f"lies {moved:.0%} (total variation) from the labeled shares.")
        if setting != "estimate":
            text += (" A few labels per class cannot tell a real difference from the features' "
                     "leanings, so it is not used unless you ask: where you know the classes "
                     "are unequal, run label or fit again with --label.class-prior estimate.")
    return text


def class_share_section(metrics: dict, data, rows: list[dict]) -> str:
    """How common each class is: among the labeled images, as estimated among the unlabeled
    ones (what alignment and thresholds aimed at), among the final pseudo-labels, and the truth
    where known; and, plainly, confidence far above accuracy."""
    from ..labeling.prior import overconfidence
    found = metrics.get("represent", {})
    label = metrics.get("label", {})
    parts = []
    if "class_prior" in found:
        given = Counter(r["label"] for r in rows)
        truth = (np.bincount(data.unlabeled_truth, minlength=len(data.classes))
                 / max(1, len(data.unlabeled_truth)) if data.unlabeled_truth is not None
                 else None)
        def share(value):
            return None if value is None else f"{value:.1%}"
        estimate = found.get("class_prior_estimate")
        table = [[name, share(found["labeled_prior"][c]),
                  None if estimate is None else share(estimate[c]),
                  share(found["class_prior"][c]), share(given[name] / max(1, len(rows))),
                  None if truth is None else share(truth[c])]
                 for c, name in enumerate(data.classes)]
        parts += ["<h2>How common each class is</h2>",
                  f"<p>{escape(class_prior_sentence(found))}</p>",
                  _table(["class", "labeled", "estimated (unlabeled)", "aimed at",
                          "pseudo-labels", "true (unlabeled)"], table)]
    warning = overconfidence(label | metrics.get("calibrate", {})
                             | {k: found[k] for k in ("estimated_accuracy",) if k in found})
    if warning:
        parts.append(f'<p class="warn">{escape(warning[0].upper() + warning[1:])}.</p>')
    return "\n".join(parts)


def sample_section(run_path: Path, classes: list[str]) -> str:
    """The last grid of each generator stage (round), one row per class."""
    last: dict[str, tuple[int, Path]] = {}
    for path in Layout(run_path).samples.glob("*.png"):
        found = SAMPLE_GRID.search(path.name)
        if found and int(found.group(2)) >= last.get(found.group(1), (-1, None))[0]:
            last[found.group(1)] = (int(found.group(2)), path)
    if not last:
        return ""
    plt = _pyplot()
    parts = ["<h2>Generated images per class</h2>",
             "<p>The EMA generator at the end of each round, the same seeds in every grid.</p>",
             '<div class="row">']
    for stage in sorted(last, key=lambda s: (len(s), s)):
        step, path = last[stage]
        grid = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        fig, ax = plt.subplots(figsize=(4, 0.38 * len(classes) + 0.6))
        ax.imshow(grid, interpolation="nearest")
        rows = np.linspace(0, grid.shape[0], len(classes) + 1)
        ax.set_yticks((rows[:-1] + rows[1:]) / 2, classes, fontsize=8)
        ax.set_xticks([])
        ax.set_title(f"{stage}, step {step}", fontsize=9)
        parts.append(f"<figure>{_img(_figure(fig), f'samples {stage}')}</figure>")
    return "\n".join(parts + ["</div>"])


TITLES = {"loss": "training loss", "loss_x": "labeled loss", "loss_u": "unlabeled loss",
          "d_loss": "discriminator loss", "g_loss": "generator loss",
          "test_accuracy": "test accuracy", "pseudo_label_accuracy": "pseudo-label accuracy"}


def curve_panels(stats: list[dict]) -> list[tuple[str, str]]:
    """(key, title) of each learning curve: every loss that a stage logs, whatever its backend
    calls it, then the accuracies."""
    logged = dict.fromkeys(k for r in stats if "event" not in r for k in r)
    panels = [(k, TITLES.get(k, k.replace("_", " "))) for k in logged if "loss" in k]
    return panels + [(k, TITLES[k]) for k in ("test_accuracy", "pseudo_label_accuracy")
                     if k in logged]


def curves_section(run_path: Path) -> str:
    stats = read_stats(run_path) if Layout(run_path).stats.exists() else []
    if not stats:
        return ""
    plt = _pyplot()
    stages = list(dict.fromkeys(r["stage"] for r in stats if r["stage"] != "fit"))
    panels = curve_panels(stats)
    if not panels:
        return ""
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for stage in stages:
            points = [(r["step"], r[key]) for r in stats
                      if r["stage"] == stage and key in r and "event" not in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=stage, linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return "<h2>Learning curves</h2>" + _img(_figure(fig), "learning curves", "wide")


def confusion_section(metrics: dict, classes: list[str]) -> str:
    found = metrics.get("evaluate", {}).get("classifier", {})
    if "confusion_matrix" not in found:
        return ""
    plt = _pyplot()
    matrix = np.array(found["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(classes), 0.8 + 0.45 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    per_class = _table(["class", "test accuracy"],
                       [[c, v] for c, v in found["per_class_accuracy"].items()])
    return (f"<h2>Classifier on {found['n_test']} held-out images</h2>"
            f"<p>Accuracy {found['test_accuracy']:.4f}, expected calibration error "
            f"{found['test_ece']:.4f}.</p>"
            f'<div class="row"><figure>{_img(_figure(fig), "confusion matrix")}</figure>'
            f"{per_class}</div>")


def read_pseudo_label_rows(path: Path, data) -> list[dict]:
    """pseudo_labels.csv's rows of the unlabeled images the data holds now (a damaged file is
    refused, naming it)."""
    read_pseudo_labels(path, data.classes)  # the checks: header, classes, numbers
    known = set(data.unlabeled.ids)
    with open(path, newline="", encoding="utf-8") as f:
        rows = (restored_row(row) for row in csv.DictReader(f))
        return [row for row in rows if row["path"] in known]


def pseudo_label_section(run_path: Path, data, rows: list[dict]) -> str:
    """Confidence histograms (right and wrong where truth is known) and, per class, the most and
    least confident images given that label."""
    plt = _pyplot()
    confidence = np.array([float(r["confidence"]) for r in rows])
    position = {image_id: i for i, image_id in enumerate(data.unlabeled.ids)}
    truth = data.unlabeled_truth
    fig, ax = plt.subplots(figsize=(5, 2.6))
    bins = np.linspace(0, 1, 41)
    if truth is not None:
        index = {c: i for i, c in enumerate(data.classes)}
        right = np.array([truth[position[r["path"]]] == index[r["label"]] for r in rows])
        ax.hist(confidence[right], bins=bins, label="right", alpha=0.7)
        ax.hist(confidence[~right], bins=bins, label="wrong", alpha=0.7)
        ax.legend(fontsize=8)
    else:
        ax.hist(confidence, bins=bins)
    ax.set_xlabel("confidence", fontsize=8)
    ax.set_ylabel("unlabeled images", fontsize=8)
    ax.set_title(f"pseudo-label confidence (round {rows[0].get('round', 0)})", fontsize=9)
    parts = ["<h2>Pseudo-labels</h2>", _img(_figure(fig), "confidence histogram"),
             "<p>Per class: the most confident images given that label (left) and the least "
             "confident (right).</p>", "<table>"]
    for name in data.classes:
        mine = sorted((r for r in rows if r["label"] == name),
                      key=lambda r: float(r["confidence"]), reverse=True)
        if not mine:
            parts.append(f"<tr><th>{escape(name)}</th><td colspan=2>none</td></tr>")
            continue
        strips = []
        for chosen in (mine[:EXAMPLES], mine[-EXAMPLES:][::-1]):
            pictures = data.unlabeled.images[[position[r["path"]] for r in chosen]]
            strips.append(_img(_strip(pictures), f"{name} examples", "strip"))
        parts.append(f"<tr><th>{escape(name)}<br><small>{len(mine)} images</small></th>"
                     f"<td>{strips[0]}</td><td>{strips[1]}</td></tr>")
    return "\n".join(parts + ["</table>"])


def _strip(images: np.ndarray) -> str:
    """uint8 N x H x W x C -> one row PNG, upscaled so small images stay visible."""
    import torch
    from torchvision.utils import make_grid

    grid = make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), nrow=len(images), padding=1,
                     pad_value=255)
    pixels = grid.permute(1, 2, 0).numpy()
    scale = max(1, 48 // images.shape[1])
    pixels = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    return _png(encoded.tobytes())


def data_section(data) -> str:
    """The data report as `semigen data check` prints it: counts, sizes, every skipped file."""
    return f"<h2>Data</h2><pre>{escape(data.report.format(max_listed=200))}</pre>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 1em 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } img.wide { max-width: 100%; } img.strip { image-rendering: pixelated; }
.warn { color: #a40; } pre { background: #f8f8f8; padding: 0.8em; }
#image-status { color: #666; font-size: 0.8em; }
"""

# Says in the page whether every picture loaded (a check for a user, and for the tests).
CHECK = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesOk = ok + "/" + images.length;
  document.getElementById("image-status").textContent =
    ok === images.length ? images.length + " pictures"
                         : (images.length - ok) + " pictures failed to load";
});
"""


def metric_sections(metrics: dict, data, rows: list[dict], path: Path) -> list[str]:
    """The sections drawn from metrics.json; a file whose values are not what semigen writes
    (a string where a number goes: edited by hand) is refused in one line."""
    try:
        return [metrics_section(metrics), representation_section(metrics, data.classes),
                calibration_section(metrics, data.classes),
                class_share_section(metrics, data, rows), confusion_section(metrics, data.classes)]
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise ConfigError(f"{path}: does not hold what semigen writes ({type(e).__name__}: "
                          f"{str(e)[:80]}); remove it, and `semigen evaluate` writes the "
                          "run's figures again") from None


def write_report(run_path: str | Path, run: Run | None = None) -> Path:
    """Write the run's report.html from what the run directory holds (with the open `run`'s
    data, else the images read again through its config); return its path."""
    run_path = as_run_path(run_path)
    layout = Layout(run_path)
    cfg = run.cfg if run is not None else load_run_config(layout.config)
    data = run.data if run is not None else load_dataset(cfg.data)
    metrics = read_metrics(run_path)
    seconds = {name: entry.get("seconds") for name, entry in read_stages(run_path).items()}
    if seconds:
        metrics["seconds"] = seconds  # the wall times, from the stages' record
    import matplotlib
    # Class names are plain text: '$x$' is not math, and TeX is never run on them.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        pseudo = layout.pseudo_labels
        rows = read_pseudo_label_rows(pseudo, data) if pseudo.exists() else []
        figures = metric_sections(metrics, data, rows, layout.metrics)
        sections = [*figures[:3], sample_section(run_path, data.classes),
                    curves_section(run_path), *figures[3:]]
        if rows:
            sections.append(pseudo_label_section(run_path, data, rows))
        sections.append(data_section(data))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>semigen report: {escape(run_path.name)}</title>
<style>{STYLE}</style></head>
<body><h1>semigen report: {escape(str(run_path))}</h1>
<p>Data <code>{escape(cfg.data.source)}</code>, {len(data.classes)} classes,
seed {cfg.runtime.seed}. <span id="image-status"></span></p>
{"".join(s for s in sections if s)}
<script>{CHECK}</script></body></html>
"""
    path = layout.report
    with replacing(path) as f:
        f.write(page)
    return path
