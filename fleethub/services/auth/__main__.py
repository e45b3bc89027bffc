"""`python -m fleethub.services.auth`: the same as `fleethub run auth`."""

import sys

from fleethub.cli import main

raise SystemExit(main(["run", "auth", *sys.argv[1:]]))
