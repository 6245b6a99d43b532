"""The explorer served by Streamlit and opened in headless Chromium, as a person would."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
# Skipped on a machine without chromium, never in CI (.ci/run installs it).
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="needs Debian chromium"
)
# The script run is over: this Streamlit marks it on the app's root element.
IDLE = (
    "() => document.querySelector('[data-testid=\"stApp\"]')"
    "?.getAttribute('data-test-script-state') === 'notRunning'"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    port = _free_port()
    env = os.environ.copy()
    # Training examples build an index of the training set: into a temporary cache.
    env["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "explore.py")]
        + ["--server.headless", "true", "--server.address", "127.0.0.1"]
        + ["--server.port", str(port), "--browser.gatherUsageStats", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture()
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, served_app):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(served_app)
    page.get_by_text("predicted 4").first.wait_for(timeout=120_000)
    return page


def settled(page, text: str) -> None:
    """Wait for `text` in the main area and for the script run to end; no error box."""
    page.locator('[data-testid="stMain"]').get_by_text(text).first.wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0


def test_page_shows_the_explanation_of_digit_42(page, tmp_path):
    """The served page shows the verdict for test image 42 and its maps; screenshot kept."""
    settled(page, "sanity: ")
    assert page.get_by_text("True label 4").count() >= 1
    assert page.locator("[data-testid='stMain'] img").count() == 4  # the digit, three maps
    shot = tmp_path / "explore.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_changing_the_index_changes_the_digit_and_the_link(page):
    """Typing index 0 explains a 7, and the address bar holds the new view."""
    box = page.locator("[data-testid='stSidebar'] [data-testid='stNumberInput'] input")
    box.fill("0")
    box.press("Enter")
    settled(page, "True label 7")
    page.wait_for_url("**index=0**", timeout=30_000)
    assert "model=cnn.pt" in page.url and "methods=grad_cam" in page.url


def test_every_page_opens_without_an_error(page):
    """Every page of the sidebar opens without an error box (Training and Trust on the MLP)."""
    # The MLP, not the CNN, for the last pages: its training index builds in a second.
    nav = page.locator("[data-testid='stSidebarNav'] a")
    for title, marker in [
        ("Inside the network", "What the model would draw"),
        ("Per-digit maps", "digit 9"),
    ]:
        nav.filter(has_text=title).click()
        settled(page, marker)
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="mlp.pt").click()
    settled(page, "mlp")
    for title, marker in [
        ("Training examples", "TracIn proponents"),
        ("Trust", "Sanity check: model randomization"),
        ("Compare models", "significantly better"),
        ("Your model", "Upload a file"),
        ("Explain a digit", "True label 4"),
    ]:
        nav.filter(has_text=title).click()
        settled(page, marker)
    assert "model=mlp.pt" in page.url


def test_a_link_opens_the_same_view(browser, served_app):
    """A link to /inside with a model and an index opens that page on that digit."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(served_app + "inside?model=mlp.pt&index=7")
    settled(page, "test image 7, predicted")
    assert (
        page.locator("[data-testid='stMain'] [data-testid='stHeading']").first.inner_text()
        == "Inside the network"
    )
    assert "mlp.pt" in page.locator("[data-testid='stMain']").inner_text()


def test_a_digit_drawn_with_the_mouse_is_classified(page, tmp_path):
    """Draw a vertical stroke on the canvas: the model reads it as a 1 and explains it."""
    page.get_by_text("draw your own").click()
    canvas = page.locator("[data-testid='stSidebar'] canvas").first
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + 40
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + step * 0.5, y + step * 9)
    page.mouse.up()
    page.get_by_text("Your drawing", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("predicted 1").first.wait_for(timeout=60_000)
    settled(page, "deletion area")  # maps drawn
    page.screenshot(path=str(tmp_path / "drawn.png"), full_page=True)
