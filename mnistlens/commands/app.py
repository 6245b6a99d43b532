"""`mnistlens app`: launch the explorer (Streamlit) from any directory."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "app",
        help="open the explorer app in the browser (Streamlit)",
        description="Run the explorer app (the same as `streamlit run apps/explore.py` in the "
        "source tree), wherever mnistlens is installed. Options after -- go to streamlit, "
        "e.g. `mnistlens app -- --server.port 8502`.",
    )
    p.add_argument("--port", type=int, help="port to serve on (streamlit's default 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import os

    from mnistlens.app_server import streamlit_command
    from mnistlens.errors import MnistlensError
    from mnistlens.paths import app_path

    script = app_path()
    if not script.is_file():
        raise MnistlensError(f"the app is missing from this installation ({script}); reinstall")
    options = [a for a in args.streamlit_args if a != "--"]
    command = streamlit_command(script, port=args.port, headless=args.headless, options=options)
    # Become streamlit (same process): Ctrl-C and signals reach the server directly.
    os.execv(command[0], command)
