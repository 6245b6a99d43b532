"""`python -m mnistlens` runs the command-line interface."""

from mnistlens.cli import main

raise SystemExit(main())
