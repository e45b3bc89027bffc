"""docs/faults.md lists every crash point of `fleethub.shared.faults.POINTS`, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from fleethub.shared.faults import POINTS


def test_docs_list_every_crash_point_and_no_other(repo_root: Path) -> None:
    text = (repo_root / "docs" / "faults.md").read_text()
    table = text.split("<!-- crash points:", 1)[1].split("<!-- end of the crash points -->", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)
    missing = "\n".join(f"| `{p}` | {d} |" for p, d in POINTS.items() if p not in documented)
    assert not missing, f"docs/faults.md lacks crash points; add these rows to its table:\n{missing}"
    unknown = sorted(set(documented) - set(POINTS))
    assert not unknown, f"docs/faults.md lists points that fleethub.shared.faults.POINTS does not: {unknown}"
    assert len(documented) == len(set(documented)), "docs/faults.md lists a crash point twice"
