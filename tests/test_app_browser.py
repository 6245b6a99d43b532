"""apps/explore.py served by Streamlit and opened in headless Chromium, as a person would."""

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app():
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "apps" / "explore.py"),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
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
def page(served_app):
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
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(served_app)
        yield page
        browser.close()


def test_page_shows_the_explanation_of_digit_42(page, tmp_path):
    """The served page shows the verdict for test image 42 and its figures; screenshot kept."""
    page.get_by_text("predicted 4").first.wait_for(timeout=120_000)
    page.locator("img").first.wait_for(timeout=60_000)
    assert page.get_by_text("True label 4").count() >= 1
    assert page.locator("[data-testid='stException']").count() == 0
    shot = tmp_path / "explore.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_a_digit_drawn_with_the_mouse_is_classified(page, tmp_path):
    """Draw a vertical stroke on the canvas: the model reads it as a 1 and explains it."""
    page.get_by_text("predicted 4").first.wait_for(timeout=120_000)
    page.get_by_text("draw your own").click()
    canvas = page.locator("canvas").first
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + 40
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + step * 0.5, y + step * 10)
    page.mouse.up()
    page.get_by_text("Your drawing").wait_for(timeout=60_000)
    page.get_by_text("predicted 1").first.wait_for(timeout=60_000)
    page.get_by_text("deletion area").first.wait_for(timeout=60_000)  # maps drawn
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(tmp_path / "drawn.png"), full_page=True)
