"""Many users at once: one served explorer, several browser sessions changing digits together.

Serves apps/explore.py on 127.0.0.1 (a fresh server, `serve_app`) and drives one
headless Chromium with Playwright's async API, one browser context per user (each its
own Streamlit session, as separate people are). Two parts:

1. First visits on the fresh server: its first page (Explain a digit, test image 42,
   from navigation start), then Trust and then Compare models, each from the click in
   the sidebar until the page has settled. With --wait S the first page is opened S
   seconds after the server answers (a person does not open the link within the same
   second); the default opens it at once.
2. --users sessions open the explorer, then all at once each types --changes test
   indices, one after the other, each time waiting until its page has settled. Printed:
   the settle time of an index change (median, max), the wrong pages (a page that,
   settled, does not show its own digit: its index in the box and in the caption, the
   digit's true label, or that shows an exception), the errors (a page that never
   settled), and with psutil the CPU time the server and the browsers used meanwhile.
   --think S: a user waits S seconds after its page settled before the next index.
   --rounds 2: then each user types the same indices again, every map now cached: the
   settle time of a change that computes nothing, the floor the browsers and
   Streamlit's reruns set on this machine (printed per round).

Settled is bench_app.py's rule (the run is over, the content is there and not stale,
images loaded, nothing changed for 0.5 s; the quiet wait is not counted). Run from the
project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_users.py
    python benchmarks/bench_users.py --users 8 --changes 5 --cache ~/.cache  # verdicts kept

By default the server gets an empty temporary user cache (XDG_CACHE_HOME): the fresh
server of a machine that never ran the explorer, nothing on disk (sanity verdicts,
training indexes); it reads the results shipped in checkpoints/cache unless --no-shipped.
--cache DIR uses DIR instead (e.g. ~/.cache, the user's own). The
server warms up as `mnistlens app` does (apps/warm.py) unless --no-warm; --app serves
another copy of the explorer (e.g. `git archive HEAD apps`, to compare with a change);
--floor serves instead a page that passes the same checks and computes nothing
(`FLOOR`, with the explorer's .streamlit/config.toml): what Streamlit and the browsers
cost a change on this machine, the floor under any page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_app import MAIN_TEXT, ROOT, TRACK_CHANGES, WAIT_SETTLED
from playwright.async_api import async_playwright

from mnistlens.app_server import CHROMIUM, CHROMIUM_ARGS, serve_app

# bench_app.py's rule, checked every 50 ms instead of 10, so that eight pages polling
# take less CPU from the pages they measure. The settle time is still that of the page's
# last change (its MutationObserver), not of the check that saw it.
assert "setTimeout(r, 10)" in WAIT_SETTLED
WAIT_SETTLED = WAIT_SETTLED.replace("setTimeout(r, 10)", "setTimeout(r, 50)")
SIDEBAR = '[data-testid="stSidebar"]'
INDEX_BOX = f'{SIDEBAR} [data-testid="stNumberInput"] input'
TIMEOUT = 300_000  # ms a page may take to settle before it counts as an error
# The lightest page the checks below accept: the digit's index in the sidebar, its label
# in a metric, four pictures of it and the texts `wrong` looks for; nothing computed.
FLOOR = """
import numpy as np
import streamlit as st

from mnistlens.data import load_mnist


@st.cache_resource
def test_set():
    images, labels = load_mnist("test")
    return (images.numpy() * 255).astype(np.uint8), labels.numpy()


images, labels = test_set()
index = st.sidebar.number_input("Test index", 0, 9999, 42)
big = images[index].reshape(28, 28).repeat(6, 0).repeat(6, 1)
st.header("Explain a digit")
st.metric(f"True label {labels[index]}", f"predicted {labels[index]}")
for column, shift in zip(st.columns(4), range(0, 40, 10)):
    column.image(np.roll(big, shift, axis=1), output_format="PNG")
st.markdown(f"test image {index}: explaining class {labels[index]}")
st.caption("sanity: none checked, nothing computed")
"""


async def settle(page, selector: str, text: str) -> float:
    """Wait until the page has settled with `text` in `selector`: -> the settle time
    (performance.now() of the page's document)."""
    times = await page.evaluate(
        WAIT_SETTLED,
        {"selector": selector, "text": text, "absent": False, "quiet": 500, "timeout": TIMEOUT},
    )
    return times["settled"]


async def exception_on(page) -> str | None:
    error = page.locator('[data-testid="stException"]')
    if await error.count():
        return (await error.first.inner_text())[:300]
    return None


async def new_user(browser, url: str):
    """A new browser context and page on the explorer's first page, settled."""
    context = await browser.new_context(viewport={"width": 1500, "height": 1100})
    await context.add_init_script(TRACK_CHANGES)
    page = await context.new_page()
    await page.goto(url)
    settled = await settle(page, MAIN_TEXT, "True label 4")
    return context, page, settled


async def visit(page, title: str, text: str) -> float:
    """Click a page in the sidebar: -> ms until it has settled showing `text`."""
    start = await page.evaluate("performance.now()")
    await page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).click()
    settled = await settle(page, MAIN_TEXT, text)
    if error := await exception_on(page):
        raise RuntimeError(f"{title} shows an exception: {error}")
    return settled - start


async def first_visits(browser, url: str, began: float) -> dict[str, float]:
    """ms to settle: the first page from navigation, then Trust and Compare from the
    click; and the first page from the server's start (`began`, a perf_counter)."""
    context, page, settled = await new_user(browser, url)
    since_start = time.perf_counter() - began
    try:
        if error := await exception_on(page):
            raise RuntimeError(f"the first page shows an exception: {error}")
        found = {"first page (Explain, test image 42)": settled}
        found["first page, from the server's start"] = since_start * 1000
        found["Trust"] = await visit(page, "Trust", "Sanity check: model randomization")
        found["Compare models"] = await visit(page, "Compare models", "Where they disagree")
        return found
    finally:
        await context.close()


async def wrong(page, index: int, label: int) -> str | None:
    """Why the settled page is not test image `index` (true label `label`), or None."""
    if error := await exception_on(page):
        return f"exception: {error}"
    if (value := await page.locator(INDEX_BOX).input_value()) != str(index):
        return f"index box {value}, not {index}"
    main = await page.locator('[data-testid="stMain"]').inner_text()
    for text in (f"test image {index}: explaining", f"True label {label}", "sanity: "):
        if text not in main:
            return f"no {text!r} on the page of index {index}"
    return None


async def user(
    page, indices: list[int], labels, start: asyncio.Event, out: dict, think: float, per_round: int
) -> None:
    """Type each index in turn and wait for the page to settle on it (then `think`
    seconds, as a person looking at the page would, before the next); each settle time is
    kept with its round (`per_round` indices a round)."""
    await start.wait()
    for n, index in enumerate(indices):
        if n and think:
            await asyncio.sleep(think)
        try:
            begin = await page.evaluate("performance.now()")
            box = page.locator(INDEX_BOX)
            await box.fill(str(index))
            await box.press("Enter")
            settled = await settle(page, MAIN_TEXT, f"test image {index}: explaining")
            out["settle"].append((n // per_round, settled - begin))
            if why := await wrong(page, index, int(labels[index])):
                out["wrong"].append(why)
        except Exception as err:  # noqa: BLE001 - a page that never settled: counted
            out["errors"].append(f"index {index}: {type(err).__name__}: {str(err)[:200]}")


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) of this process's descendants by kind: the server (a
    Python process), the browser (Chromium's processes) and the rest (Playwright's
    driver). Empty without psutil."""
    try:
        import psutil
    except ImportError:
        return {}
    found: dict[str, float] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            name, times = child.name(), child.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        kind = "server" if "python" in name else "browser" if "chrom" in name else "other"
        found[kind] = found.get(kind, 0.0) + times.user + times.system
    return found


async def many_users(
    browser, url: str, users: int, changes: int, labels, think: float = 0.0, rounds: int = 1
) -> dict:
    opened = await asyncio.gather(*(new_user(browser, url) for _ in range(users)))
    pages = [page for _, page, _ in opened]
    indices = random.Random(0).sample(range(10000), users * changes)
    out = {"settle": [], "wrong": [], "errors": []}
    start = asyncio.Event()
    mine = [indices[u * changes : (u + 1) * changes] for u in range(users)]
    jobs = [
        user(page, mine[u] * rounds, labels, start, out, think, changes)
        for u, page in enumerate(pages)
    ]
    before = cpu_seconds()
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*jobs)
    out["wall"] = time.perf_counter() - began
    after = cpu_seconds()
    out["cpu"] = {k: after[k] - before.get(k, 0.0) for k in after}
    for context, _, _ in opened:
        await context.close()
    return out


async def run(args) -> None:
    from mnistlens.data import load_mnist

    labels = load_mnist("test")[1]
    data = os.environ.get("MNISTLENS_DATA", str(ROOT.parent / "shared" / "data" / "mnist"))
    with tempfile.TemporaryDirectory() as empty:
        if args.floor:
            args.app = Path(empty) / "floor" / "explore.py"
            shutil.copytree(ROOT / "apps" / ".streamlit", args.app.parent / ".streamlit")
            args.app.write_text(FLOOR)
        env = {"MNISTLENS_DATA": data, "XDG_CACHE_HOME": args.cache or empty}
        if args.no_shipped:
            env["MNISTLENS_SHIPPED_CACHE"] = ""
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            began = time.perf_counter()
            with serve_app(args.app, env=env, warm=not args.no_warm) as url:
                print(f"server answering after {time.perf_counter() - began:.1f} s", flush=True)
                if args.wait:
                    await asyncio.sleep(args.wait)
                if not args.no_first_visits:
                    for what, ms in (await first_visits(browser, url, began)).items():
                        print(f"first visit, fresh server: {what:<38} settled {ms:7.0f} ms")
                print(f"load average: {os.getloadavg()[0]:.1f}", flush=True)
                if not args.users:
                    return
                out = await many_users(
                    browser, url, args.users, args.changes, labels, args.think, args.rounds
                )
            await browser.close()
    print(
        f"{args.users} users x {args.changes} index changes at once"
        + (f" ({args.think:g} s between a user's changes)" if args.think else "")
        + f": {len(out['settle'])} settled in {out['wall']:.1f} s"
    )
    for r in range(args.rounds):
        times = [ms for round_, ms in out["settle"] if round_ == r]
        what = "new digits" if r == 0 else "the same digits again (cached)"
        print(
            f"  round {r + 1}, {what}: "
            + (
                f"settle median {statistics.median(times):.0f} ms, max {max(times):.0f} ms "
                f"(min {min(times):.0f})"
                if times
                else "none settled"
            )
        )
    if out["cpu"]:
        print(
            "CPU seconds meanwhile: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(out["cpu"].items()))
        )
    print(f"wrong pages: {len(out['wrong'])}, errors: {len(out['errors'])}")
    for why in out["wrong"] + out["errors"]:
        print("  ", why)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="sessions at once (8; 0: part 1 only)")
    parser.add_argument("--changes", type=int, default=5, help="index changes per user (5)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds between the server's start and the first page (0: at once)",
    )
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds a user waits after a page settled before typing the next index (0)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="type the same indices again (2: cached)"
    )
    parser.add_argument("--cache", help="the server's XDG_CACHE_HOME (default: an empty one)")
    parser.add_argument("--no-first-visits", action="store_true", help="skip part 1")
    parser.add_argument(
        "--no-shipped",
        action="store_true",
        help="the server reads no shipped results (checkpoints/cache): it computes them",
    )
    parser.add_argument(
        "--no-warm", action="store_true", help="no warm-up in the server (apps/warm.py)"
    )
    parser.add_argument(
        "--app",
        type=Path,
        default=ROOT / "apps" / "explore.py",
        help="the script to serve (default: apps/explore.py; e.g. a changed copy)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="serve a page that computes nothing instead (Streamlit's and the browsers' floor)",
    )
    args = parser.parse_args()
    if args.floor and not args.no_first_visits:
        parser.error("--floor has no Trust or Compare pages: add --no-first-visits")
    if args.cache:
        args.cache = str(Path(args.cache).expanduser())
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    asyncio.run(run(args))
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
