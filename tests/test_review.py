"""`semigen review`: the pages, the decisions on disk, and what it refuses to serve."""

import csv

import numpy as np
import pytest
from conftest import ODD
from fastapi.testclient import TestClient

from semigen.data import added
from semigen.review.app import create_app
from semigen.review.state import confused_pairs, load


@pytest.fixture
def client(review_run):
    run = review_run
    for leftover in (run / "added_labels.csv", run / "review" / "skipped.csv"):
        leftover.unlink(missing_ok=True)
    review = load(run, suggest=6, generated_per_class=3)
    return TestClient(create_app(review), base_url="http://127.0.0.1"), review


def test_every_page_opens_and_escapes_class_names(client):
    c, review = client
    odd = review.classes.index(ODD)
    for url in ["/", "/class/0", f"/class/{odd}?second=0", "/next", "/errors", "/generated",
                "/figures", "/class/0?page=99"]:
        response = c.get(url)
        assert response.status_code == 200, url
        assert ODD not in response.text and "<img src=x" not in response.text, url
    assert "&lt;img src=x onerror=alert(1)&gt; &amp;amp co" in c.get("/").text
    assert c.get("/class/3").status_code == 404


def test_thumbnails_are_made_once_and_cached(client):
    c, review = client
    first = c.get("/thumb/unlabeled/0.png")
    assert first.status_code == 200 and first.content.startswith(b"\x89PNG")
    cached = list((review.run / "review" / "thumbs").rglob("*.png"))
    assert cached and any(p.read_bytes() == first.content for p in cached)
    assert c.get("/thumb/unlabeled/0.png").content == first.content
    assert c.get("/thumb/labeled/0.png").status_code == 200


@pytest.mark.parametrize("url", [
    "/thumb/../../../etc/passwd", "/thumb/unlabeled/..%2F..%2F..%2Fetc%2Fpasswd.png",
    "/thumb/unlabeled/-1.png", "/thumb/unlabeled/100000.png", "/thumb/test/0.png",
    "/thumb/config.yaml/0.png", "/static/../app.py", "/static/%2e%2e/%2e%2e/config.yaml",
    "/static/..%2Fapp.py", "/generated-image/0/-1.png", "/generated-image/9/0.png",
    "/generated-image/0/..%2F..%2Fconfig.yaml", "//etc/passwd", "/report/../config.yaml"])
def test_nothing_outside_the_run_s_images_is_served(client, url):
    c, _ = client
    response = c.get(url)
    assert response.status_code in (404, 422), (url, response.status_code)
    assert b"root:" not in response.content and b"import" not in response.content


def test_decisions_are_on_disk_at_once_and_undo_takes_them_back(client):
    c, review = client
    first = c.get("/api/next").json()
    assert first["total"] == 6 and first["left"] == 6 and first["index"] is not None
    assert c.post("/api/label", json={"part": "unlabeled", "index": first["index"],
                                      "label": 1}).json() == {"added": 1}
    image = review.data.unlabeled.ids[first["index"]]
    assert added.read(review.run / "added_labels.csv") == {image: review.classes[1]}
    after = c.get("/api/next").json()
    assert after["labeled"] == 1 and after["index"] != first["index"]
    c.post("/api/skip", json={"index": after["index"], "skipped": True})
    assert c.get("/api/next").json()["skipped"] == 1
    # the server that dies loses nothing: a new one reads the decisions back
    again = load(review.run, suggest=6, generated_per_class=0)
    assert again.decisions.labels == {image: review.classes[1]}
    assert review.data.unlabeled.ids[after["index"]] in again.decisions.skipped
    c.post("/api/label", json={"part": "unlabeled", "index": first["index"], "label": None})
    assert added.read(review.run / "added_labels.csv") == {}
    with open(review.run / "added_labels.csv", newline="") as f:
        assert next(csv.reader(f)) == ["path", "label"]


def test_bad_decisions_are_refused(client):
    c, review = client
    assert c.post("/api/label", json={"part": "unlabeled", "index": 10**6, "label": 0}
                  ).status_code == 404
    assert c.post("/api/label", json={"part": "unlabeled", "index": 0, "label": 7}
                  ).status_code == 404
    assert c.post("/api/label", json={"part": "../x", "index": 0, "label": 0}).status_code == 422
    # a cross-site form post or a foreign page's script cannot decide
    assert c.post("/api/label", data={"part": "unlabeled", "index": "0", "label": "0"}
                  ).status_code == 403
    assert c.post("/api/label", json={"part": "unlabeled", "index": 0, "label": 0},
                  headers={"Origin": "http://evil.example"}).status_code == 403
    assert not (review.run / "added_labels.csv").exists()


def test_another_host_name_is_refused(client):
    c, _ = client
    assert c.get("/", headers={"Host": "evil.example"}).status_code == 400


def test_a_token_guards_every_request_when_exposed(review_run):
    review = load(review_run, suggest=2, generated_per_class=0)
    c = TestClient(create_app(review, token="s3cret", hosts=("*",)), base_url="http://box")
    assert c.get("/").status_code == 403
    assert c.get("/thumb/unlabeled/0.png").status_code == 403
    assert c.get("/?token=wrong").status_code == 403
    assert c.get("/?token=s3cret").status_code == 200  # the printed address; then a cookie
    assert c.get("/next").status_code == 200


def test_likely_label_errors_come_from_held_out_predictions(client):
    c, review = client
    issues = review.label_issues
    assert issues["source"] == "held out"
    first = issues["rows"][0]
    assert first["id"] == "labeled/dark/actually light.png"
    assert review.classes[first["suggested"]] == "light"
    assert f'/thumb/labeled/{first["index"]}.png' in c.get("/errors").text


def test_generated_images_are_shown_with_their_recognition(client):
    _, review = client
    assert [g["name"] for g in review.generated] == review.classes
    assert all(len(g["files"]) == 3 and 0 <= g["recognised"] <= 1 for g in review.generated)


def test_confused_pairs_weigh_the_second_choice():
    probs = np.array([[0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.9, 0.0, 0.1], [0.0, 0.2, 0.8]])
    pairs = confused_pairs(probs, ["a", "b", "c"])
    assert [(p["a_name"], p["b_name"]) for p in pairs] == [("a", "b"), ("b", "c"), ("a", "c")]
    assert pairs[0]["images"] == 2 and pairs[0]["weight"] == pytest.approx(0.9)


def test_suggest_leaves_out_images_labeled_in_review(review_run, tmp_path):
    import shutil

    from semigen.labeling.suggest import suggest

    run = tmp_path / "run"
    shutil.copytree(review_run, run, ignore=shutil.ignore_patterns("run.lock", "review",
                                                                   "added_labels.csv"))
    first = [r["path"] for r in suggest(run, 5, tmp_path / "a.csv")]
    added.write(run / "added_labels.csv", {image: "dark" for image in first[:3]})
    again = [r["path"] for r in suggest(run, 5, tmp_path / "b.csv")]
    assert len(again) == 5 and not set(first[:3]) & set(again)


def test_a_second_start_reads_the_classifier_s_view_without_importing_torch(client):
    """The first start computed and kept what the classifier says; a fresh process opening the
    same run shows the same and never imports torch (a cached start in about a second)."""
    import json
    import subprocess
    import sys

    _, review = client
    script = (
        "import json, sys\n"
        "from semigen.review.state import load\n"
        f"r = load({str(review.run)!r}, suggest=6, generated_per_class=3)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision',"
        " 'kornia', 'lightning', 'cleanlab'})\n"
        "print(json.dumps({'heavy': heavy, 'probs': r.probs.tolist(),"
        " 'suggestions': r.suggestions, 'issues': r.label_issues,"
        " 'generated': [g['predicted'] for g in r.generated]}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    seen = json.loads(done.stdout)
    assert seen["heavy"] == []
    assert np.allclose(seen["probs"], review.probs, atol=1e-6)
    assert seen["suggestions"] == review.suggestions
    assert seen["issues"]["source"] == "held out"
    assert [r["id"] for r in seen["issues"]["rows"]] == \
        [r["id"] for r in review.label_issues["rows"]]
    assert seen["generated"] == [g["predicted"] for g in review.generated]


def test_a_retrained_classifier_or_other_settings_are_computed_again(client, caplog):
    _, review = client
    again = "the classifier reads the"
    with caplog.at_level("INFO", logger="semigen"):
        load(review.run, suggest=6, generated_per_class=3)
        assert again not in caplog.text
        load(review.run, suggest=4, generated_per_class=3)  # other suggestions
        assert again in caplog.text
        caplog.clear()
        checkpoint = review.run / "checkpoints" / "label" / "latest.pt"
        checkpoint.touch()  # as a retrained classifier's file would be new
        fresh = load(review.run, suggest=6, generated_per_class=3)
        assert again in caplog.text
    assert fresh.suggestions == review.suggestions
    assert len(list((review.run / "review").glob("predictions-*.npz"))) == 1


def test_generated_images_of_another_generator_are_sampled_again(client):
    """RUN/review/generated/ is kept while the run's generator is the one that made it; a
    later generator (another checkpoint's SHA-256 in the manifest) samples it again."""
    _, review = client
    manifest = review.run / "review" / "generated" / "manifest.csv"
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    made_by = {row["checkpoint_sha256"] for row in rows}
    assert len(made_by) == 1 and len(rows) == 3 * len(review.classes)
    before = manifest.stat().st_mtime_ns
    load(review.run, suggest=6, generated_per_class=3)
    assert manifest.stat().st_mtime_ns == before  # the same generator: kept
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "checkpoint_sha256": "0" * 64} for row in rows)
    load(review.run, suggest=6, generated_per_class=3)
    with open(manifest, newline="") as f:
        assert {row["checkpoint_sha256"] for row in csv.DictReader(f)} == made_by


def test_the_overview_shows_the_class_prior_s_estimate_and_how_to_use_it(client):
    c, review = client
    found = review.metrics["represent"]
    page = c.get("/").text
    assert "How common each class is" in page and "--label.class-prior estimate" in page
    row = next(line for line in page.splitlines() if "<td>dark</td>" in line and " %" in line)
    dark = review.classes.index("dark")
    labeled, estimate = found["labeled_prior"][dark], found["class_prior_estimate"][dark]
    assert f"<td>{100 * labeled:.1f} %</td>" in row
    assert f"{100 * estimate:.1f} %" in page
    # a hand-edited metrics.json whose shares do not fit the run's classes: no section, no error
    saved = dict(found)
    try:
        found["class_prior_estimate"] = [0.5, 0.5]
        assert "How common each class is" not in c.get("/").text
        found["class_prior_estimate"], found["class_prior_setting"] = saved[
            "class_prior_estimate"], "<b>bold</b>"
        assert c.get("/").status_code == 200 and "How common" not in c.get("/").text
    finally:
        found.clear()
        found.update(saved)
