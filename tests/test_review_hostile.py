"""`semigen review` and the run directory against a hostile or clumsy user: two servers on one
run, links planted in a run received from someone else, another account on the same machine,
bodies and arguments no page sends, a save that fails, a hand-edited added_labels.csv, names
that hide what they say."""

import hashlib
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import ODD
from fastapi.testclient import TestClient

from semigen.cli import main
from semigen.data import added
from semigen.review.app import create_app
from semigen.review.state import load


@pytest.fixture
def run(review_run, tmp_path):
    """A copy of the review run this test may spoil."""
    copy = tmp_path / "run"
    shutil.copytree(review_run, copy, ignore=shutil.ignore_patterns("run.lock",
                                                                    "added_labels.csv"))
    return copy


def client_of(run, **options):
    review = load(run, suggest=4, generated_per_class=options.pop("generated", 0))
    return TestClient(create_app(review), base_url="http://127.0.0.1"), review


# ------------------------------------------------------------- one server, the printed address

def start_server(run, *args):
    """`semigen review RUN --port 0 ARGS` in a process of its own; its printed address."""
    server = subprocess.Popen([sys.executable, "-m", "semigen", "review", str(run), "--port", "0",
                               "--generated-per-class", "0", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    for line in server.stdout:
        if line.startswith("review: http"):
            return server, line.split()[1]
        assert time.monotonic() < deadline, "the server did not start"
    server.wait()
    pytest.fail(f"the server stopped: exit {server.returncode}")


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_one_server_a_run_with_a_token_at_the_address_it_bound(run, capsys):
    server, url = start_server(run)
    try:
        # --port 0: the port the system gave, not 0; a token even on 127.0.0.1
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)", url)
        assert found and int(found.group(1)) > 0
        base = url.split("?")[0]
        assert status_of(url) == 200
        assert status_of(base) == 403  # another account on this machine has no token
        assert status_of(base + "thumb/unlabeled/0.png") == 403
        # the writer's lock is held and names the server
        assert "review" in (run / "run.lock").read_text()
        assert main(["label", str(run), "--preset", "tiny"]) == 2
        assert "is being written by" in capsys.readouterr().err
        second = subprocess.run([sys.executable, "-m", "semigen", "review", str(run), "--port",
                                 "0"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "is being written by" in second.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (run / "run.lock").read_text() == ""  # left: nobody writes


def test_ipv6_is_printed_as_bound(run):
    if not __import__("socket").has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server, url = start_server(run, "--host", "::1")
    except BaseException:
        pytest.skip("::1 cannot be bound here")
    try:
        assert re.fullmatch(r"http://\[::1\]:\d+/\?token=[\w-]+", url)
        assert status_of(url) == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("args, said", [
    (["--port", "70000"], "--port 70000: must lie between 0"),
    (["--port", "-1"], "--port -1: must lie between 0"),
    (["--host", ""], "--host is empty"),
    (["--suggest", "-5"], "--suggest and --generated-per-class must be 0 or more"),
    (["--generated-per-class", "-1"], "must be 0 or more")])
def test_bad_arguments_get_one_line(run, capsys, args, said):
    assert main(["review", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (run / "review" / "predictions").exists()


# ------------------------------------------------------------- links out of the run

def test_links_out_of_the_run_are_never_followed(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    c, review = client_of(run, generated=2)
    first = c.get("/thumb/unlabeled/0.png")
    assert first.status_code == 200
    # a cached thumbnail that is a link out
    key = hashlib.sha256(review.data.unlabeled.ids[0].encode()).hexdigest()
    thumb = run / "review" / "thumbs" / key[:2] / f"{key}.png"
    assert thumb.read_bytes() == first.content
    thumb.unlink()
    thumb.symlink_to(secret)
    response = c.get("/thumb/unlabeled/0.png")
    assert response.status_code == 403 and b"root:" not in response.content
    assert "leads out of the run directory" in response.text
    # the report, and a generated image
    (run / "report.html").unlink(missing_ok=True)
    (run / "report.html").symlink_to(secret)
    assert c.get("/report").status_code == 403
    generated = review.generated[0]["files"][0]
    generated.unlink()
    generated.symlink_to(secret)
    assert c.get("/generated-image/0/0.png").status_code == 403
    assert secret.read_text() == "root:x:0:0"


def test_a_planted_temporary_link_is_not_written_through(run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    c, review = client_of(run)
    key = hashlib.sha256(review.data.unlabeled.ids[1].encode()).hexdigest()
    folder = run / "review" / "thumbs" / key[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.png.tmp").symlink_to(victim)
    (run / ".added_labels.csv.tmp").symlink_to(victim)
    assert c.get("/thumb/unlabeled/1.png").status_code == 200
    assert c.post("/api/label", json={"part": "unlabeled", "index": 1, "label": 0}
                  ).status_code == 200
    assert victim.read_text() == "keep"
    assert added.read(run / "added_labels.csv") == {review.data.unlabeled.ids[1]:
                                                    review.classes[0]}


def test_a_linked_thumbs_folder_receives_nothing(run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    c, _ = client_of(run)
    shutil.rmtree(run / "review" / "thumbs", ignore_errors=True)
    (run / "review" / "thumbs").symlink_to(outside, target_is_directory=True)
    assert c.get("/thumb/unlabeled/2.png").status_code == 403
    assert list(outside.rglob("*")) == []


def test_a_run_lock_that_is_a_link_is_refused(run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run / "run.lock").unlink(missing_ok=True)
    (run / "run.lock").symlink_to(victim)
    with pytest.raises(OSError):
        from semigen.run import lock_run
        lock_run(run)
    assert victim.read_text() == "keep"


# ------------------------------------------------------------- bodies and saves

def test_a_body_no_page_sends_gets_a_one_line_answer(run):
    c, _ = client_of(run)
    response = c.post("/api/label", content=b'{"part": "unlabeled", "index": 0, "label": NaN}',
                      headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"error": "body.label: Input should be a finite number"} or \
        response.json()["error"].startswith("body.label: ")
    response = c.post("/api/label", content=b"{not json", headers={"Content-Type":
                                                                   "application/json"})
    assert response.status_code == 422 and "error" in response.json()
    assert not (run / "added_labels.csv").exists()


def test_a_failed_save_is_said_and_the_decision_stays_pending(run):
    c, review = client_of(run)
    (run / "added_labels.csv").mkdir()  # cannot be written
    response = c.post("/api/label", json={"part": "unlabeled", "index": 0, "label": 1})
    assert response.status_code == 500
    assert response.json()["error"].startswith("could not write ")
    assert review.decisions.labels == {}  # memory agrees with the disk
    assert c.get("/api/next").json()["added"] == 0
    (run / "added_labels.csv").rmdir()
    assert c.post("/api/label", json={"part": "unlabeled", "index": 0, "label": 1}
                  ).json() == {"added": 1}


# ------------------------------------------------------------- added_labels.csv when review opens

def test_added_labels_are_checked_when_review_opens(run):
    from semigen.config import load_run_config
    from semigen.data import load_dataset
    data = load_dataset(load_run_config(run / "config.yaml").data)
    good = data.unlabeled.ids[0]
    rows = ["path,label,note", f"{good},dark,mine", f"{data.unlabeled.ids[1]},nosuchclass,x",
            f"{data.unlabeled.ids[2]},\"da\x00rk\",x", "/etc/passwd,dark,x"]
    rows += [f"nowhere/{i}.png,dark," for i in range(300_000)]
    original = "\n".join(rows) + "\n"
    (run / "added_labels.csv").write_text(original)
    c, review = client_of(run)
    assert review.decisions.labels == {good: "dark"}
    said = review.decisions.left_out
    assert "300,001 row(s) left out: no image of this run" in said
    assert "1 row(s) left out: a class this data does not have (e.g. line 3)" in said
    assert "1 row(s) left out: control or direction characters (e.g. line 4)" in said
    assert "column(s) 'note' not kept" in said
    # the overview says it; nothing is lost: the file as it was is kept beside
    assert "300,001 row(s) left out" in c.get("/").text
    assert (run / "review" / "added_labels.as-found.csv").read_text() == original
    rows = [r for r in c.get("/").text.splitlines() if "<td>dark</td>" in r]
    assert rows and "<td>1</td>" in rows[0]  # one added to dark, not 300,000


# ------------------------------------------------------------- what the pages show

def test_names_that_hide_what_they_say_are_shown_plainly(run):
    c, review = client_of(run)
    spoof = "cat\u202egnp.exe"
    review.classes[0] = spoof
    page = c.get("/").text
    assert "\u202e" not in page and "cat[U+202E]gnp.exe" in page
    assert c.get("/").headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert c.get("/").headers["Referrer-Policy"] == "no-referrer"
    assert ODD not in page


def test_a_planted_or_torn_predictions_cache_is_computed_again(run):
    _, review = client_of(run)
    (cache,) = (run / "review").glob("predictions-*.npz")
    import numpy as np
    with open(cache, "wb") as f:  # an object array: loading it would unpickle
        np.savez(f, features=np.array([object()], dtype=object), probs=np.zeros(1))
    _, again = client_of(run)
    assert np.allclose(again.probs, review.probs)
    cache.write_bytes(b"PK\x03\x04 torn")
    _, again = client_of(run)
    assert np.allclose(again.probs, review.probs)
