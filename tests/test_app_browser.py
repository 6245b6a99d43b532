"""The explorer served by Streamlit and opened in headless Chromium, as a person would."""

import os
from pathlib import Path

import pytest

from mnistlens.app_server import CHROMIUM, CHROMIUM_ARGS, serve_app
from mnistlens.errors import MnistlensError

ROOT = Path(__file__).resolve().parent.parent
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    # Skipped on a machine without chromium, never in CI (.ci/run installs it).
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="needs Debian chromium"
    ),
]
# The script run is over: this Streamlit marks it on the app's root element.
IDLE = (
    "() => document.querySelector('[data-testid=\"stApp\"]')"
    "?.getAttribute('data-test-script-state') === 'notRunning'"
)


@pytest.fixture(scope="module")
def served_app():
    """The explorer, served with the test run's cache (conftest: a temporary one), as a
    user's server runs with theirs: sanity verdicts and training indexes already there
    (from the AppTest tests, or this server's earlier pages) are read, not computed
    again; test_app.py and test_influence.py test the computing and the reading."""
    with serve_app(ROOT / "apps" / "explore.py") as url:
        yield url


def test_serve_app_serves_while_the_block_runs(tmp_path):
    """serve_app answers the health check inside the block and stops the server after;
    a script Streamlit cannot run is an error with the server's own message."""
    from urllib.request import urlopen

    script = tmp_path / "hello.py"
    script.write_text('import streamlit as st\n\nst.write("hello")\n')
    with serve_app(script) as url:
        assert urlopen(url + "_stcore/health", timeout=10).read() == b"ok"
    with pytest.raises(OSError):
        urlopen(url + "_stcore/health", timeout=5)
    with pytest.raises(MnistlensError, match="(?s)exited with code 2: .*File does not exist"):
        with serve_app(tmp_path / "missing.py"):
            pass


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (each test opens its own pages and contexts)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def context(browser):
    """One browser context for every page: its pages share the HTTP cache (a page load
    costs the browser less CPU than in a new context), and each page is still a
    Streamlit session of its own (a session is one page's connection, not a cookie), as
    each user's would be."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    yield context
    context.close()


@pytest.fixture()
def page(context, served_app):
    """A new page (its own Streamlit session) on the explorer's first page."""
    page = context.new_page()
    page.goto(served_app)
    page.get_by_text("predicted 4").first.wait_for(timeout=120_000)
    yield page
    page.close()


def settled(page, text: str) -> None:
    """Wait for `text` in the main area and for the script run to end; no error box."""
    page.locator('[data-testid="stMain"]').get_by_text(text).first.wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0


def test_digit_42_then_the_index_typed_in_then_a_drawing(page, tmp_path):
    """One visit: the served page shows the verdict for test image 42, its maps and its
    counterfactual (screenshot kept); typing index 0 explains a 7, and the address bar
    holds the new view; then a vertical stroke drawn with the mouse on the canvas is
    read as a 1 and explained."""
    settled(page, "sanity: ")
    assert page.get_by_text("True label 4").count() >= 1
    # the digit, three maps, the invariance strip (one picture); no counterfactual
    # until asked for
    assert page.locator("[data-testid='stMain'] img").count() == 5
    shot = tmp_path / "explore.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000

    box = page.locator("[data-testid='stSidebar'] [data-testid='stNumberInput'] input")
    box.fill("0")
    box.press("Enter")
    settled(page, "True label 7")
    page.wait_for_url("**index=0**", timeout=30_000)
    assert "model=cnn.pt" in page.url and "methods=grad_cam" in page.url

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


def test_a_link_opens_its_view_and_every_page_keeps_it(context, served_app):
    """A link to /inside with a model, an index and the models to compare opens that
    page on that digit; every other page of the sidebar then opens without an error
    box, on the same model and digit. (The MLP: its training index builds in a second;
    two small models to compare: the four default ones cost the server 6 s.)"""
    page = context.new_page()
    page.goto(served_app + "inside?model=mlp.pt&index=7&models=linear&models=mlp")
    settled(page, "test image 7, predicted")
    assert (
        page.locator("[data-testid='stMain'] [data-testid='stHeading']").first.inner_text()
        == "Inside the network"
    )
    assert "mlp.pt" in page.locator("[data-testid='stMain']").inner_text()
    for title, marker in [
        ("Per-digit maps", "digit 9"),
        ("Training examples", "TracIn proponents"),
        ("Trust", "Sanity check: model randomization"),
        ("Compare models", "significantly better"),
        ("Your model", "Upload a file"),
        ("Explain a digit", "True label 9"),  # test image 7
    ]:
        go_to(page, title, marker)
    for kept in ("model=mlp.pt", "index=7", "models=linear&models=mlp"):
        assert kept in page.url
    page.close()


SIDEBAR = "[data-testid='stSidebar']"


def open_session(context, url: str):
    """A new page on `url` (in the shared `context`): a Streamlit session of its own, as
    another user's would be."""
    page = context.new_page()
    page.goto(url)
    page.get_by_text("predicted").first.wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)
    return page


def go_to(page, title: str, marker: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).click()
    settled(page, marker)


def model_options(page) -> list[str]:
    """The names the sidebar's model box offers (opened, read, closed)."""
    page.locator(f"{SIDEBAR} [data-testid='stSelectbox']").first.click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=30_000)
    names = options.all_inner_texts()
    page.keyboard.press("Escape")
    return names


def upload(page, path: Path) -> None:
    """On the Your model page: choose the file and press Load."""
    go_to(page, "Your model", "Upload a file")
    page.locator("input[type=file]").set_input_files(str(path))
    page.get_by_role("button", name="Load", exact=True).click()
    loaded = page.get_by_text("is loaded and chosen in the sidebar")
    loaded.or_(page.locator("[data-testid='stException']")).first.wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)


def assert_own_view(page, index: int, label: int, prediction: int) -> None:
    """After reruns (a page switch and back) the session still shows its own digit.
    (Your model: the page that computes nothing; Inside on the CNN would make the
    server compute a digit's activations.)"""
    go_to(page, "Your model", "Upload a file")
    go_to(page, "Explain a digit", f"True label {label}")
    assert page.get_by_text(f"predicted {prediction}", exact=True).count() >= 1
    box = page.locator(f"{SIDEBAR} [data-testid='stNumberInput'] input")
    assert box.input_value() == str(index)


def test_two_sessions_keep_their_own_view_models_and_uploads(context, served_app, mlp_program):
    """Two users at once (two pages, two sessions). Index 0 and a fourth method in session A
    leave session B on test image 42 (a 4) with its three methods, after B reruns, and
    A keeps its own (checked after its upload); each address bar holds its own view.
    Pressing Load on Your model in A loads the file and chooses it, without an error:
    the model is offered and explained in A only (B's model list and view are
    unchanged), and A's link (which names the upload) opens the CNN in a new session,
    not A's model."""
    a, b = open_session(context, served_app), open_session(context, served_app)
    shipped = model_options(b)
    box = a.locator(f"{SIDEBAR} [data-testid='stNumberInput'] input")
    box.fill("0")
    box.press("Enter")
    settled(a, "True label 7")
    methods = a.locator(f"{SIDEBAR} [data-testid='stMultiSelect'] input")
    methods.click()
    methods.fill("input_x_gradient")
    a.keyboard.press("Enter")
    a.keyboard.press("Escape")
    settled(a, "input x gradient")
    a.wait_for_url("**methods=input_x_gradient**", timeout=30_000)
    assert "index=0" in a.url

    assert_own_view(b, 42, 4, 4)
    assert "input x gradient" not in b.locator("[data-testid='stMain']").inner_text()
    assert "input_x_gradient" not in b.locator(SIDEBAR).inner_text()
    assert "index=42" in b.url and "input_x_gradient" not in b.url

    upload(a, mlp_program)
    assert a.locator("[data-testid='stException']").count() == 0
    settled(a, "is loaded and chosen in the sidebar")
    # A run after the upload (the sidebar lists it): A is still on its own digit.
    go_to(a, "Explain a digit", "True label 7")
    assert a.locator(f"{SIDEBAR} [data-testid='stNumberInput'] input").input_value() == "0"
    mine = [n for n in model_options(a) if n.startswith("yours: mine.pt2")]
    assert len(mine) == 1
    a.locator(f"{SIDEBAR} [data-testid='stSelectbox']").first.click()
    a.get_by_role("option", name=mine[0]).click()
    settled(a, "user model")  # the caption under the verdict: its arch is unknown
    a.wait_for_url("**model=yours*", timeout=30_000)

    assert model_options(b) == shipped
    go_to(b, "Explain a digit", "True label 4")  # B reruns: still the CNN on image 42
    assert "user model" not in b.locator("[data-testid='stMain']").inner_text()
    c = open_session(context, a.url)
    settled(c, "cnn model")
    assert model_options(c) == shipped


# Records each element Streamlit marks stale while a run is in progress: its transition
# and its opacity at that moment.
RECORD_STALE = """
window.__stale = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.attributeName === 'data-stale' && r.target.getAttribute('data-stale') === 'true') {
      const style = getComputedStyle(r.target);
      window.__stale.push([style.transitionDuration, Number(style.opacity)]);
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-stale']});
"""


def test_the_previous_digit_is_dimmed_at_once_while_the_next_is_computed(context, served_app):
    """While a new index is explained, the page's previous elements are dimmed (they are
    out of date) without Streamlit's one-second fade, which a browser without a GPU
    paints frame by frame (benchmarks/README.md, "Many users at once")."""
    page = context.new_page()
    try:
        page.add_init_script(RECORD_STALE)
        page.goto(served_app)
        settled(page, "sanity: ")
        box = page.locator("[data-testid='stSidebar'] [data-testid='stNumberInput'] input")
        box.fill("1")
        box.press("Enter")
        settled(page, "True label 2")
        stale = page.evaluate("window.__stale")
        assert len(stale) >= 10  # the maps, their numbers, the invariance strip, ...
        assert {duration for duration, _ in stale} == {"0s"}
        assert all(opacity < 1 for _, opacity in stale)
    finally:
        page.close()
