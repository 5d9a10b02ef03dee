"""`python -m avionics ...` runs the `avionics` command line (see `avionics.cli`)."""

from .cli import main

raise SystemExit(main())
