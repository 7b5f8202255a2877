"""Run the command line: ``python -m wsimito ...`` is ``wsimito ...``."""

from .cli import main

raise SystemExit(main())
