"""`python -m fleethub.services.api`: the same as `fleethub run api`."""

import sys

from fleethub.cli import main

raise SystemExit(main(["run", "api", *sys.argv[1:]]))
