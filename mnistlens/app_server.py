"""Start the explorer app (Streamlit) as a child process: the command, and a served app.

`mnistlens app` replaces itself with `streamlit_command()`; tests and benchmarks use
`serve_app()`, which starts the server on a free local port, waits until Streamlit
answers its health check, yields the URL and stops the server however the block ends.

    >>> with serve_app() as url:  # "http://127.0.0.1:PORT/"
    ...     ...  # open url in a browser

The command is `python -m mnistlens.app_server run SCRIPT ...`, which is `streamlit run
SCRIPT ...` (`main`) plus one thing: with a warm.py beside the script (the explorer's),
its warm-up starts as soon as the server runs, not at the first visit (apps/warm.py).

Torch-free at import time (the command line imports it too); no Streamlit import.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mnistlens.errors import MnistlensError

HOST = "127.0.0.1"
WARM = "MNISTLENS_APP_WARM"  # "0" in the server's environment: no warm-up (apps/warm.py)
# For the page tests and bench_app.py: Debian's chromium, driven by Playwright (its own
# browser download does not work offline), with what a headless run in a container needs.
# Debian's chromium-headless-shell (Chrome's old headless mode, what Playwright itself
# runs headless) when installed: it takes less CPU per page than the full browser's
# headless mode (benchmarks/README.md).
CHROMIUM = (
    shutil.which("chromium-headless-shell") or shutil.which("chromium") or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def streamlit_command(
    script: str | Path | None = None,
    *,
    port: int | None = None,
    headless: bool = False,
    options: Sequence[str] = (),
) -> list[str]:
    """The command that serves `script` (default: the explorer, `paths.app_path()`):
    `streamlit run` through `main` below.

    port: None keeps Streamlit's default (8501); headless: do not open a browser;
    options: further Streamlit options, e.g. ["--server.address", "127.0.0.1"].
    """
    if script is None:
        from mnistlens.paths import app_path  # imports torch: only when needed

        script = app_path()
    command = [sys.executable, "-m", "mnistlens.app_server", "run", str(script)]
    if port:
        command += ["--server.port", str(port)]
    if headless:
        command += ["--server.headless", "true"]
    return command + list(options)


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(
    script: str | Path | None = None,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    warm: bool = False,
) -> Iterator[str]:
    """Serve `script` (default: the explorer) on 127.0.0.1 while the block runs.

    port: None picks a free one; env: variables added to this process's environment
    for the server; timeout: seconds to wait for /_stcore/health to answer "ok";
    warm: let the explorer compute its pages' first views in the background from the
    start, as `mnistlens app` does (apps/warm.py). Off by default: a test pays only for
    the pages it opens, and its server computes nothing in its back.
    Yields the URL, "http://127.0.0.1:PORT/". Raises MnistlensError if the server
    exits or does not answer in time (with the end of its output).

    The server runs in its own process group (start_new_session), and only that group
    is signalled on exit: a test run or a benchmark never kills anything it did not
    start (cf. the CI fix in 2555c71, where `kill 0` took the whole shell down).
    """
    port = port or free_port()
    url = f"http://{HOST}:{port}/"
    options = ["--server.address", HOST, "--browser.gatherUsageStats", "false"]
    command = streamlit_command(script, port=port, headless=True, options=options)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **({} if warm else {WARM: "0"}), **(env or {})},
            start_new_session=True,
        )
        try:
            _wait_healthy(url, process, log, timeout)
            yield url
        finally:
            _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen, log, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MnistlensError(
                f"the app server exited with code {process.returncode}: {_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as answer:
                if answer.read().strip() == b"ok":
                    return
        except OSError:  # not listening yet (URLError is an OSError)
            pass
        time.sleep(0.2)
    raise MnistlensError(f"the app server did not answer within {timeout:.0f} s: {_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s; reaps the server."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)  # the group's id is the server's pid (own session)
        except ProcessLookupError:  # the group is gone already
            break
        try:
            process.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _tail(log, chars: int = 1500) -> str:
    log.seek(0)
    text = log.read().decode(errors="replace").strip()
    return text[-chars:] or "(no output)"


# ---------------------------------------------------------------- the server process


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m mnistlens.app_server run SCRIPT [streamlit options]`: `streamlit run`;
    with a warm.py beside SCRIPT, its `start()` is called once the server runs."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "run" and os.environ.get(WARM, "1") != "0":
        warm = Path(args[1]).absolute().parent / "warm.py"
        if warm.is_file():
            threading.Thread(target=_warm_up, args=(warm,), name="warm-start", daemon=True).start()
    sys.argv = ["streamlit", *args]
    from streamlit.web.cli import main as streamlit_main

    streamlit_main(prog_name="streamlit")


def _warm_up(path: Path, timeout: float = 300.0) -> None:
    """Once Streamlit's runtime exists (it has read its configuration, imported its
    server, and put the script's folder on sys.path), import what the pages import
    (`warm.preload`) and start the warm-up. Until then nothing is imported here: two
    threads importing the same packages at once is what this waits out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exists = getattr(sys.modules.get("streamlit.runtime"), "exists", None)
        if exists is not None and exists():
            break
        time.sleep(0.05)
    else:
        return  # the server never ran: nothing to warm
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import importlib

    warm = importlib.import_module(path.stem)  # the module the app's runs will import
    warm.preload()
    warm.start()


# ---------------------------------------------------------------- release time


def precompute(out: str | Path | None = None, script: str | Path | None = None) -> list[Path]:
    """Compute the explorer's first views (its warm-up's steps, apps/warm.py) here and
    now, on an empty cache, and put the results it keeps on disk (apps/kept.py, the
    digit verdict's detector fits) in `out` (default: the shipped cache,
    `checkpoint_dir()/cache`), replacing what was there: -> the files written.

    Run at release time: a fresh server then finds its pages' model-level results on
    disk (mnistlens.results) instead of computing them while its first visitors wait.
    Raises what a step raised (then `out` is left as it was)."""
    import importlib

    import torch
    from streamlit.logger import set_log_level
    from tqdm import tqdm

    from mnistlens import results
    from mnistlens.paths import SHIPPED_CACHE_ENV_VAR, app_path, checkpoint_dir

    script = Path(script) if script is not None else app_path()
    out = Path(out) if out is not None else checkpoint_dir() / "cache"
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", SHIPPED_CACHE_ENV_VAR)}
    with tempfile.TemporaryDirectory() as tmp:
        # An empty user cache and no shipped one: every result is computed, none is
        # copied from an older release.
        os.environ["XDG_CACHE_HOME"], os.environ[SHIPPED_CACHE_ENV_VAR] = tmp, ""
        set_log_level("error")  # not "no runtime" and "missing ScriptRunContext" each step
        torch.set_num_threads(1)  # as the server computes (apps/runtime.py): the same numbers
        try:
            if str(script.parent) not in sys.path:
                sys.path.insert(0, str(script.parent))
            warm = importlib.import_module("warm")
            for _, step in tqdm(warm.steps(), desc="first views", unit="step"):
                step()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        made = Path(tmp) / "mnistlens"
        kept = sorted(made.glob("results/*.pt")) + sorted(made.glob("index/typicality-*.pt"))
        staged = out.with_name(f".{out.name}.new")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for path in kept:
            target = staged / path.relative_to(made)
            if path.parent.name == "results":  # named without the code's part
                target = target.with_name(results.as_shipped(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            before = out / target.relative_to(staged)
            # The same value as before: the file as it was (a release changes only the
            # results that changed, not every file's recorded compute time).
            same = before.is_file() and _value_bytes(before) == _value_bytes(path)
            shutil.copyfile(before if same else path, target)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staged.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(out.rglob("*.pt"))


def _value_bytes(path: Path) -> bytes:
    """A kept file's payload but the time it took to compute, serialized: equal
    results, equal bytes (a detector fit: its state and its calibration both)."""
    import io

    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.pop("seconds", None)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
