"""How long the explorer takes to answer a click, measured in a real browser.

Starts `streamlit run apps/explore.py` on 127.0.0.1, drives headless Chromium with
Playwright and times, from the action to the page settled: the first load (on a
freshly started server, and as a new session on a running one), a new test index and
a new method on the Explain page, and switching pages. Prints the median of several
runs with the range. Run from the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_app.py
    python benchmarks/bench_app.py --runs 3 --cold 1 --no-slow-pages    # quicker

Settled means: the script run is over (this Streamlit marks it on the app's root,
data-test-script-state="notRunning"; the "running" indicator, data-testid
stStatusWidget, only appears once a run has lasted 0.5 s, so shorter runs never show
it), the content the action asked for is on screen (a text in a given element), no
element is stale (Streamlit marks the previous run's elements data-stale="true" until
the new run replaces or removes them), every image has loaded, and nothing in the page
has changed for 0.5 s. The time reported is that of the last change, so the quiet wait
is not counted. "visible" is when the asked-for content first appeared (later
elements, e.g. the sanity verdicts under the maps, may still be computing).

A line for an empty Streamlit app (one st.write) gives the floor: what loading the
page costs before mnistlens does anything.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from mnistlens.app_server import CHROMIUM, CHROMIUM_ARGS, serve_app

ROOT = Path(__file__).resolve().parent.parent

# Installed before any page script: remembers when the page last changed, ignoring
# the header, where the running indicator animates while the script runs.
TRACK_CHANGES = """
window.__lastChange = performance.now();
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (el && el.closest('header, [data-testid="stStatusWidget"]')) continue;
    window.__lastChange = performance.now();
    return;
  }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""

# Resolves with {visible, settled} (performance.now() times) once the page has settled.
WAIT_SETTLED = """
async ({selector, text, absent, quiet, timeout}) => {
  const start = performance.now();
  const found = () => [...document.querySelectorAll(selector)].some(
    (el) => el.textContent.includes(text) && !el.closest('[data-stale="true"]'));
  let visible = null, since = null;
  while (performance.now() - start < timeout) {
    const now = performance.now();
    const wanted = found() !== absent;
    const app = document.querySelector('[data-testid="stApp"]');
    const running = !app || app.getAttribute("data-test-script-state") !== "notRunning";
    const busy = !wanted || running
      || document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]')
      || [...document.images].some((img) => !img.complete);
    if (wanted && visible === null) visible = now;
    if (busy) since = null;
    else {
      if (since === null) since = now;
      const last = Math.max(since, window.__lastChange || 0);  // 0: TRACK_CHANGES not installed
      if (now - last >= quiet) return {visible, settled: last};
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`not settled after ${timeout} ms waiting for ${text} in ${selector}`);
}
"""
HEADING = '[data-testid="stMain"] [data-testid="stHeading"]'
MAIN_TEXT = '[data-testid="stMain"] [data-testid="stElementContainer"]'


def server(script: Path = ROOT / "apps" / "explore.py"):
    """`streamlit run script` on a free local port: a context manager -> its URL."""
    data = os.environ.get("MNISTLENS_DATA", str(ROOT.parent / "shared" / "data" / "mnist"))
    return serve_app(script, env={"MNISTLENS_DATA": data})


def settle(page, selector: str, text: str, absent: bool = False, timeout: float = 300_000):
    """-> (visible, settled) performance.now() times of the current document."""
    times = page.evaluate(
        WAIT_SETTLED,
        {"selector": selector, "text": text, "absent": absent, "quiet": 500, "timeout": timeout},
    )
    error = page.locator('[data-testid="stException"]')
    if error.count():
        raise RuntimeError(f"the app shows an exception: {error.first.inner_text()[:300]}")
    return times["visible"], times["settled"]


def timed(page, action, argument, selector: str, text: str, absent: bool = False):
    """Run `action(page, argument)`, -> (ms to visible, ms to settled) from just before it."""
    start = page.evaluate("performance.now()")
    action(page, argument)
    visible, settled = settle(page, selector, text, absent)
    return visible - start, settled - start


def first_load(browser, url: str, text: str = "True label 4") -> tuple[float, float]:
    """A new session (a new browser context) opening the app: ms from navigation start."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    context.add_init_script(TRACK_CHANGES)
    page = context.new_page()
    page.goto(url)
    try:
        return settle(page, MAIN_TEXT, text)
    finally:
        context.close()


def new_index(page, index: int) -> None:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stNumberInput"] input')
    box.fill(str(index))
    box.press("Enter")


def add_method(page, name: str) -> None:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"] input')
    box.click()
    box.fill(name)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    box.blur()  # a focused multiselect swallows the next click on a chip's remove button


def remove_method(page, name: str) -> None:
    page.locator(f'[data-testid="stSidebar"] button[aria-label="Remove {name}"]').click()


def go_to(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).click()


def report(label: str, samples: list[tuple[float, float]]) -> None:
    if not samples:
        return
    visible = statistics.median(v for v, _ in samples)
    settled = [s for _, s in samples]
    print(
        f"{label:<60} n={len(samples):<2} visible {visible:6.0f} ms  settled "
        f"{statistics.median(settled):6.0f} ms  (settled {min(settled):.0f}-{max(settled):.0f})",
        flush=True,
    )


def first_loads(browser, runs: int, cold: int) -> None:
    """An empty app (the floor), the explorer on fresh servers, and new sessions."""
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.py"
        empty.write_text('import streamlit as st\n\nst.write("hello")\n')
        with server(empty) as url:
            floor = [first_load(browser, url, "hello") for _ in range(runs + 1)]
        report("first load of an empty Streamlit app (the floor)", floor[1:])
    fresh = []
    for _ in range(cold):
        with server() as url:
            fresh.append(first_load(browser, url))
    report("first load, fresh server (imports, model, sanity checks)", fresh)


def clicks(browser, url: str, runs: int, slow_pages: bool) -> None:
    """New sessions on a running server, then clicks in one session."""
    first_load(browser, url)  # the server's first session pays the imports
    report(
        "first load, new session on a running server",
        [first_load(browser, url) for _ in range(runs)],
    )
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    context.add_init_script(TRACK_CHANGES)
    page = context.new_page()
    page.goto(url)
    settle(page, MAIN_TEXT, "True label 4")
    indices = random.Random(0).sample(range(10000), runs)
    report(
        "Explain: new test index",
        [timed(page, new_index, i, MAIN_TEXT, f"test image {i}: explaining") for i in indices],
    )
    firsts = []
    for name in ("input_x_gradient", "deeplift", "smoothgrad")[:runs]:
        firsts.append(timed(page, add_method, name, MAIN_TEXT, name.replace("_", " ")))
        timed(page, remove_method, name, MAIN_TEXT, name.replace("_", " "), absent=True)
    report("Explain: add a method, first time (runs its sanity check)", firsts)
    again = []
    for _ in range(runs):
        again.append(timed(page, add_method, "input_x_gradient", MAIN_TEXT, "input x gradient"))
        again.append(
            timed(page, remove_method, "input_x_gradient", MAIN_TEXT, "input x gradient", True)
        )
    report("Explain: add or remove a method seen before", again)
    pages = ["Inside the network", "Per-digit maps"]
    pages += ["Training examples", "Trust"] if slow_pages else []
    for title in pages:
        report(f"switch page, first visit: {title}", [timed(page, go_to, title, HEADING, title)])
    switches = [
        timed(page, go_to, title, HEADING, title)
        for _ in range(runs)
        for title in ("Explain a digit", "Inside the network")
    ]
    report("switch page, visited before (Explain <-> Inside)", switches)
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="samples per measurement (5)")
    parser.add_argument("--cold", type=int, default=2, help="fresh servers for the first load (2)")
    parser.add_argument(
        "--no-slow-pages",
        action="store_true",
        help="skip the first visits of Training examples (a training-set pass unless its "
        "index is on disk) and Trust (measures every method)",
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        first_loads(browser, args.runs, args.cold)
        with server() as url:
            clicks(browser, url, args.runs, not args.no_slow_pages)
        browser.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
