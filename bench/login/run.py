"""Runs bench_login.py (every authenticator, one after the other, in one process) and writes results.md.

    python bench/login/run.py

Needs what the test suite needs (slapd, Node.js for oidc-provider, root for PAM users); a quiet machine
for figures worth comparing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> int:
    out = HERE / "results.jsonl"
    out.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-n", "0", "-p", "tests.conftest",
                          "-o", "python_files=bench_*.py", "-o", "python_functions=bench_*",
                          "--rootdir", str(ROOT), str(HERE / "bench_login.py")], cwd=ROOT)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    lines = ["# Login time per authenticator", "",
             f"One run of `bench/login/run.py` ({rows[0]['when'] if rows else '-'}; load average {load:.2f} "
             "before it). Each row: 1 warm-up, then 20 logins of one user through the hub's own pages, a fresh "
             "browser each time (the oauth row keeps the provider's session, as a returning user has).", "",
             "| authenticator | flow | median | min | max |", "|---|---|---|---|---|"]
    lines += [f"| {r['authenticator']} | {r['flow']} | {r['median_ms']} ms | {r['min_ms']} ms | {r['max_ms']} ms |"
              for r in rows]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rc


if __name__ == "__main__":
    sys.exit(main())
