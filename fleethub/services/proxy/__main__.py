"""`python -m fleethub.services.proxy`: the same as `fleethub run proxy`."""

import sys

from fleethub.cli import main

raise SystemExit(main(["run", "proxy", *sys.argv[1:]]))
