"""CPU seconds of a hub's process tree by part, to see where a spawn storm's CPU goes (both hubs).

Parts by command line: the user servers (fake_singleuser.py), each fleethub service, NATS, PostgreSQL,
JupyterHub, configurable-http-proxy. A process counts its own time plus that of its reaped children.
"""

from __future__ import annotations

from pathlib import Path

from proctree import CLK_TCK, tree_pids

PARTS = (("fake_singleuser", "user servers"), (" run api", "api"), (" run spawner", "spawner"),
         (" run proxy", "proxy"), (" run auth", "auth"), (" run culler", "culler"), ("nats-server", "nats"),
         ("postgres", "postgres"), ("configurable-http-proxy", "chp"), ("jupyterhub", "jupyterhub"),
         (" up ", "fleethub up"))


def _part(cmd: str) -> str:
    for needle, part in PARTS:
        if needle in cmd:
            return part
    return "other"


def snapshot(root: int) -> dict[int, tuple[str, float]]:
    """pid → (part, CPU seconds) of `root`'s tree."""
    out = {}
    for pid in tree_pids(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        out[pid] = (_part(cmd), sum(int(x) for x in f[11:15]) / CLK_TCK)
    return out


def used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each part used between two snapshots (processes that ended in between are not counted)."""
    out: dict[str, float] = {}
    for pid, (part, cpu) in after.items():
        out[part] = out.get(part, 0.0) + cpu - before.get(pid, (part, 0.0))[1]
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
