"""One module per `mnistlens` subcommand; `mnistlens/cli.py` lists and registers them.

Each module defines `add_parser(subparsers, parents)`, which declares the command's
options and help, and `run(args)`, which calls the library and prints. Modules import
only argparse-level code at the top; the library (torch, matplotlib, Captum) is imported
inside `run()`, so `--help` and usage errors answer without loading it. Helpers that
several commands use live in `_common.py`.
"""
