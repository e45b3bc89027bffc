"""`python -m fleethub.services.spawner`: the same as `fleethub run spawner`."""

import sys

from fleethub.cli import main

raise SystemExit(main(["run", "spawner", *sys.argv[1:]]))
