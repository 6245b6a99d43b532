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
    p.add_argument(
        "--precompute",
        nargs="?",
        const="",
        metavar="DIR",
        help="instead of serving: compute the pages' first views now and keep their "
        "model-level results in DIR (default: the shipped cache beside the checkpoints, "
        "which a fresh server reads), as for a release",
    )
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
    if args.precompute is not None:
        from mnistlens.app_server import precompute

        files = precompute(args.precompute or None, script)
        size = sum(f.stat().st_size for f in files)
        where = files[0].parent.parent if files else args.precompute
        print(f"kept {len(files)} results ({size / 1e6:.1f} MB) in {where}")
        return
    options = [a for a in args.streamlit_args if a != "--"]
    command = streamlit_command(script, port=args.port, headless=args.headless, options=options)
    # Become streamlit (same process): Ctrl-C and signals reach the server directly.
    os.execv(command[0], command)
