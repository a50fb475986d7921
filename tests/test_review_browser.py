"""`semigen review` in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium labels three images by keyboard, undoes one, reloads, and the run's CSV holds
what was decided; a path-traversal address gets nothing. Skipped where the browser is missing.

Screenshots of every page go to $SEMIGEN_SCREENSHOTS when it is set (docs/review/ holds those
of a Fashion-MNIST run: SEMIGEN_REVIEW_RUN=RUN, a run copied first, never written)."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from semigen.data import added
from semigen.review.app import create_app
from semigen.review.state import load

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs chromium and chromedriver (Debian: chromium, "
                                       "chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(review_run, tmp_path):
    """The review server on a free local port, in a thread, on a copy of the run."""
    import uvicorn

    given = os.environ.get("SEMIGEN_REVIEW_RUN")
    run = tmp_path / "run"
    shutil.copytree(given or review_run, run, ignore=shutil.ignore_patterns(
        "added_labels.csv", "review", "run.lock", "tensorboard", "earlier"))
    review = load(run, suggest=8, generated_per_class=8 if given else 3)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(review), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the review server did not start"
    yield f"http://127.0.0.1:{port}", review
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(browser, predicate, what: str, seconds: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, seconds).until(lambda d: predicate(d), message=what)


def progress(browser) -> str:
    from selenium.webdriver.common.by import By
    return browser.find_element(By.ID, "progress").text


def press(browser, key: str) -> None:
    from selenium.webdriver.common.by import By
    browser.find_element(By.TAG_NAME, "body").send_keys(key)


def test_label_three_images_by_keyboard_then_reload(served, browser):
    from selenium.webdriver.common.keys import Keys

    address, review = served
    csv_file = review.run / "added_labels.csv"
    browser.get(address + "/next")
    wait_for(browser, lambda d: progress(d).startswith("0 labeled"), "the first suggestion")
    suggested = [review.data.unlabeled.ids[i] for i in review.suggestions]
    guess_of_third = review.classes[int(review.probs[review.suggestions[2]].argmax())]

    press(browser, "1")  # class 0
    wait_for(browser, lambda d: progress(d).startswith("1 labeled"), "the first label")
    press(browser, "2")  # class 1
    wait_for(browser, lambda d: progress(d).startswith("2 labeled"), "the second label")
    press(browser, Keys.ENTER)  # the model's guess
    wait_for(browser, lambda d: progress(d).startswith("3 labeled"), "the third label")
    press(browser, Keys.BACKSPACE)  # undo the third ...
    wait_for(browser, lambda d: progress(d).startswith("2 labeled"), "the undo")
    assert len(added.read(csv_file)) == 2
    press(browser, Keys.ENTER)  # ... and decide it again
    wait_for(browser, lambda d: progress(d).startswith("3 labeled"), "the third label again")

    browser.refresh()
    wait_for(browser, lambda d: progress(d).startswith("3 labeled"), "the count after reload")
    assert added.read(csv_file) == {suggested[0]: review.classes[0],
                                    suggested[1]: review.classes[1],
                                    suggested[2]: guess_of_third}
    assert browser.find_element("id", "added").text == "3"


def test_a_path_traversal_address_gets_nothing(served, browser):
    address, review = served
    for path in ("/thumb/..%2F..%2Fconfig.yaml", "/static/..%2F..%2F..%2Fconfig.yaml",
                 "/generated-image/0/..%2F..%2F..%2Fconfig.yaml"):
        browser.get(address + path)
        assert "source:" not in browser.page_source and "label:" not in browser.page_source
    config = (review.run / "config.yaml").read_text()
    assert "source:" in config  # what the browser would have shown, had it been served


def test_screenshot_of_every_page(served, browser, tmp_path):
    address, review = served
    folder = Path(os.environ.get("SEMIGEN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    pair = review.pairs[0] if review.pairs else {"a": 0, "b": 1}
    pages = {"overview": "/", "class": f"/class/{pair['a']}?second={pair['b']}",
             "next": "/next", "errors": "/errors", "generated": "/generated",
             "figures": "/figures"}
    for name, path in pages.items():
        browser.get(address + path)
        wait_for(browser, lambda d: d.execute_script(
            "return document.readyState === 'complete' && [...document.images].every("
            "i => i.complete)"), f"{name}: images loaded")
        if name == "next":
            wait_for(browser, lambda d: "labeled" in progress(d), "the first suggestion")
        shot = folder / f"review_{name}.png"
        assert browser.save_screenshot(str(shot)), name
        assert shot.stat().st_size > 5000, name
        broken = browser.execute_script(
            "return [...document.images].filter(i => i.naturalWidth === 0).length")
        assert broken == 0, f"{name}: {broken} image(s) did not load"


def test_a_failed_save_is_shown_and_the_menu_keeps_what_is_saved(served, browser):
    """added_labels.csv cannot be written (a folder where it should be): the page says NOT
    SAVED at the top, the menu goes back to what is on disk, Label next keeps the image."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    address, review = served
    csv_file = review.run / "added_labels.csv"
    csv_file.unlink(missing_ok=True)
    csv_file.mkdir()
    try:
        browser.get(address + "/class/0")
        menu = browser.find_elements(By.CSS_SELECTOR, "select.relabel")[0]
        Select(menu).select_by_value("1")
        banner = browser.find_element(By.ID, "not-saved")
        wait_for(browser, lambda d: banner.is_displayed(), "the NOT SAVED banner")
        assert banner.text.startswith("NOT SAVED: could not write ")
        assert "added_labels.csv" in banner.text
        assert Select(menu).first_selected_option.get_attribute("value") == ""
        browser.get(address + "/next")
        wait_for(browser, lambda d: progress(d).startswith("0 labeled"), "the first suggestion")
        first = browser.find_element(By.ID, "current").get_attribute("src")
        press(browser, "1")
        wait_for(browser, lambda d: d.find_element(By.ID, "not-saved").is_displayed(),
                 "the banner on Label next")
        assert progress(browser).startswith("0 labeled")
        assert browser.find_element(By.ID, "current").get_attribute("src") == first
    finally:
        csv_file.rmdir()
    press(browser, "1")  # the file can be written again: saved, the banner gone
    wait_for(browser, lambda d: progress(d).startswith("1 labeled"), "the label saved")
    assert not browser.find_element(By.ID, "not-saved").is_displayed()
