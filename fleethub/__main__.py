"""`python -m fleethub` is the `fleethub` command."""

from fleethub.cli import main

raise SystemExit(main())
