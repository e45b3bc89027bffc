"""configurable-http-proxy 5.x, installed with npm into a cache directory on first use, and what the report
says about the machine and the programs compared (versions, commit)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from common import ROOT, say
from loadgen import wrk_binary

CHP_SPEC = "configurable-http-proxy@5"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleethub-bench" / "chp"
BINARY = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"


def ensure_chp() -> str:
    """Install CHP 5 into the cache directory unless it is there; returns its version."""
    if not BINARY.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise SystemExit("node and npm are needed for configurable-http-proxy: install Node.js (≥ 20) with npm")
        CACHE.mkdir(parents=True, exist_ok=True)
        say(f"installing {CHP_SPEC} into {CACHE} …")
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), CHP_SPEC],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not BINARY.exists():
            raise SystemExit(f"npm install {CHP_SPEC} failed (status {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    r = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=60)
    version = r.stdout.strip()
    if r.returncode != 0 or not version.startswith("5."):
        raise SystemExit(f"{BINARY} --version answered {r.returncode} {version!r} {r.stderr[-500:]!r}; "
                         f"remove {CACHE} to reinstall")
    return version


def _first_line(args: list[str]) -> str:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def machine_info(chp: str) -> dict[str, str]:
    """The machine and the versions of everything compared (`chp`: what `ensure_chp` returned)."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import uvloop

    from fleethub.shared.embedded import nats_server_binary

    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout
    return {
        "nproc": str(os.cpu_count()), "cpu": model, "kernel": platform.release(),
        "python": platform.python_version(), "uvloop": uvloop.__version__,
        "node": _first_line(["node", "--version"]), "chp": chp,
        "wrk": _first_line([wrk_binary(), "-v"]).split(" [")[0],
        "nats-server": _first_line([str(nats_server_binary()), "--version"]).removeprefix("nats-server: "),
        "fleethub": f"{commit}{' (uncommitted changes)' if dirty.strip() else ''}",
    }
