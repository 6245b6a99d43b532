"""Several users at once on one served explorer, each changing the digit at the same time.

Streamlit runs every session in a thread of the server process, so whatever one session
does to process-wide state reaches the others: a torch.fx trace in one thread sent the
other threads' forward passes through its wrapper (NameError "module is not installed
as a submodule" on 14 of 24 index changes with six users), and one session's model,
hooks or random generator seeds could change another's maps. Here each user types its
own test indices, all typed before any page has answered, and every page must end on
its own digit without an exception; and randomization checks computed by several
sessions at once give what each gives alone. The users are browser pages on a served
explorer, not AppTests in threads: an AppTest run replaces Streamlit's runtime and
configuration for the whole process while it runs and removes them when it ends, so
AppTests at once disturb each other (tried with the old trace: widget KeyErrors from
AppTest, not the app's NameError).
"""

import importlib
import os
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from mnistlens.app_server import CHROMIUM, CHROMIUM_ARGS, serve_app

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "apps"
sync_api = pytest.importorskip("playwright.sync_api")
# Skipped on a machine without chromium, never in CI (.ci/run installs it).
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="needs Debian chromium"
)
USERS = 6  # as in the report: six people on one server
ROUNDS = 3  # index changes per user, each typed by all users before any page answers
IDLE = (
    "() => document.querySelector('[data-testid=\"stApp\"]')"
    "?.getAttribute('data-test-script-state') === 'notRunning'"
)
MAIN = "[data-testid='stMain']"
EXCEPTION = "[data-testid='stException']"
INDEX_BOX = "[data-testid='stSidebar'] [data-testid='stNumberInput'] input"


@pytest.fixture(scope="module")
def served_app():
    """The explorer, served with the test run's cache (conftest: a temporary one)."""
    with serve_app(APPS / "explore.py") as url:
        yield url


def answered(page, text: str) -> None:
    """Wait until `text` is in the main area, or an exception is, and the run is over."""
    wanted = page.locator(MAIN).get_by_text(text)
    wanted.or_(page.locator(EXCEPTION)).first.wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)


def linked_index(url: str) -> int | None:
    """The test index in the page's address (?index=), None without one."""
    found = parse_qs(urlparse(url).query).get("index")
    return int(found[0]) if found else None


def own_digit(page, index: int, label: int) -> str | None:
    """Why the page does not show test image `index` alone, or None if it does."""
    if page.locator(EXCEPTION).count():
        return f"index {index}: {page.locator(EXCEPTION).first.inner_text()[:300]}"
    main = page.locator(MAIN).inner_text()
    for text in (f"test image {index}: explaining", f"True label {label}"):
        if text not in main:
            return f"index {index}: no {text!r}"
    if main.count("sanity: ") != 3:  # the verdicts under the three maps
        return f"index {index}: {main.count('sanity: ')} sanity verdicts"
    if page.locator(INDEX_BOX).input_value() != str(index):
        return f"index {index}: the box says {page.locator(INDEX_BOX).input_value()}"
    return None


@pytest.mark.browser
@needs_chromium
def test_users_changing_digits_at_once_each_end_on_their_own(served_app, test_set):
    """USERS sessions on the Explain page; ROUNDS times, each types another test index
    (one per digit class, so no two pages show the same label in a round), all before
    any waits: every page then shows its own digit, its label, its three maps with their
    verdicts, no exception, and its own index in the address bar."""
    labels = test_set[1].tolist()
    firsts = {}  # label -> the first few test indices of that digit
    for i, label in enumerate(labels[:200]):
        firsts.setdefault(label, []).append(i)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1100})
        pages = [context.new_page() for _ in range(USERS)]
        for page in pages:  # each page is a session of its own
            page.goto(served_app)
        for page in pages:
            answered(page, "True label 4")
        wrong = []
        for round_ in range(ROUNDS):
            chosen = [firsts[(user + 3 * round_) % 10][round_] for user in range(USERS)]
            for page, index in zip(pages, chosen, strict=True):
                box = page.locator(INDEX_BOX)
                box.fill(str(index))
                box.press("Enter")
            for page, index in zip(pages, chosen, strict=True):
                answered(page, f"test image {index}: explaining")
                wrong.append(own_digit(page, index, labels[index]))
                page.wait_for_url(lambda url, i=index: linked_index(url) == i, timeout=30_000)
        browser.close()
    assert [w for w in wrong if w] == []
    assert len(wrong) == USERS * ROUNDS


@pytest.mark.slow
def test_a_randomization_check_does_not_depend_on_other_sessions(
    apps_on_path, tmp_path, monkeypatch
):
    """The Trust page's cascades (layers re-initialized top down from the process's
    random generator, seeded) are the same computed one after the other or in three
    sessions' threads at once (`mnistlens.device.fork_rng`: one seeded computation at a
    time). Without that, every cascade below its top layer came out different."""
    cache = importlib.import_module("cache")
    methods = ("saliency", "input_x_gradient", "grad_cam")

    def cascades(folder: str, at_once: bool) -> dict:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / folder))  # none kept on disk
        cache.sanity.clear()  # nor in memory
        found = {}

        def check(method: str) -> None:
            found[method] = cache.sanity("cnn.pt", method)["cascade"]

        if not at_once:
            for method in methods:
                check(method)
            return found
        threads = [threading.Thread(target=check, args=(m,)) for m in methods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return found

    alone = cascades("alone", at_once=False)
    assert len(next(iter(alone.values()))) >= 3  # the whole cascade, not just the top
    assert cascades("together", at_once=True) == alone


@pytest.mark.slow
def test_the_warm_up_computes_what_the_first_page_shows(apps_on_path, monkeypatch):
    """A fresh server computes each page's first view before anyone asks (apps/warm.py)
    with the pages' own cached functions and defaults: after its steps for the Explain
    page, a new session's first page explains nothing itself."""
    from streamlit.testing.v1 import AppTest

    from mnistlens import explain, typicality

    cache, warm = importlib.import_module("cache"), importlib.import_module("warm")
    cache.explanation.clear()
    cache.digit_like.clear()
    explain_steps = ("test set", "digit-like", "verdict", "explain", "invariance")
    for name, step in warm.steps():
        if not name.startswith(explain_steps):  # the Explain page's steps come first
            break
        step()
    explained, judged = [], []
    real, real_judge = explain.explain, typicality.digit_like
    monkeypatch.setattr(explain, "explain", lambda *a, **k: explained.append(1) or real(*a, **k))
    monkeypatch.setattr(
        typicality, "digit_like", lambda *a, **k: judged.append(1) or real_judge(*a, **k)
    )
    at = AppTest.from_file(str(APPS / "explore.py"), default_timeout=240).run()
    assert not at.exception
    assert at.metric[0].label == "True label 4"
    assert explained == [] and judged == []


FIRST_PAGE_IMPORTS = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=240).run()
assert not at.exception, at.exception
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.slow  # a fresh process: its imports and the first page's computing, ~10 s
def test_the_preload_imports_what_the_first_page_imports_and_no_more(apps_on_path):
    """A fresh server imports the first page's modules while Streamlit starts, and the
    first page's run waits for them (apps/warm.py, PRELOAD): every one of them is one the
    first page imports, and none of those the other pages add (LATER: pandas, the
    comparison and concept modules) is, so the first visitor waits for no import that
    is not theirs."""
    import json
    import subprocess
    import sys

    warm = importlib.import_module("warm")
    run = subprocess.run(
        [sys.executable, "-c", FIRST_PAGE_IMPORTS, str(APPS / "explore.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    imported = set(json.loads(run.stdout.strip().splitlines()[-1]))
    missing, extra = set(warm.PRELOAD) - imported, set(warm.LATER) & imported
    assert not missing and not extra, (missing, extra)
    assert "altair" not in imported  # the probabilities are no Vega chart


@pytest.mark.slow  # listing the steps loads the models and compares them (their names)
def test_the_warm_up_computes_the_first_views_before_the_extras(apps_on_path):
    """The warm-up's order: the first page's view, then the other pages' first views
    from the cheapest (Inside, Per-digit) to the slowest (Trust, then Compare with its
    stress test), and only then the Explain page's counterfactual (its search is off
    until asked) and Concepts: a visitor of a first view waits for the least."""
    warm = importlib.import_module("warm")
    names = [name for name, _ in warm.steps()]

    def first(prefix: str) -> int:
        return next(i for i, name in enumerate(names) if name.startswith(prefix))

    def last(prefix: str) -> int:
        return max(i for i, name in enumerate(names) if name.startswith(prefix))

    assert last("invariance") < first("imports") < first("profile") < first("per-digit")
    assert first("per-digit") < first("trust")
    assert last("trust") < first("compare") < last("compare stress") < first("counterfactual")
    assert first("counterfactual") < first("concepts") == len(names) - 1
