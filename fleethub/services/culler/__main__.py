"""`python -m fleethub.services.culler`: the same as `fleethub run culler`."""

import sys

from fleethub.cli import main

raise SystemExit(main(["run", "culler", *sys.argv[1:]]))
