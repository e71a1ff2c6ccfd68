"""`python -m kag.cli ...` runs the `kag` command line (as the `kag` console script does)."""

from kag.cli import main

raise SystemExit(main())
