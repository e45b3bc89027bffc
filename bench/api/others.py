"""CPU time used by processes that are not the benchmark's (other people's work on a shared machine).

"Ours" is this process and every descendant of it (the hubs, their services, NATS, PostgreSQL, wrk).
Kernel threads are left out too: the kernel work our own traffic causes (loopback softirqs, journal
and writeback threads) is not someone else's load.
"""

from __future__ import annotations

import os
from pathlib import Path

from proctree import CLK_TCK

PF_KTHREAD = 0x00200000


def _snapshot() -> dict[tuple[int, int], float]:
    """(pid, start time) → CPU seconds (own + reaped children) of every user-space process not ours."""
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        stats[int(entry.name)] = raw[raw.rindex(")") + 2 :].split()
    children: dict[int, list[int]] = {}
    for pid, f in stats.items():
        children.setdefault(int(f[1]), []).append(pid)
    ours, todo = {os.getpid()}, [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            ours.add(child)
            todo.append(child)
    out = {}
    for pid, f in stats.items():
        if pid in ours or int(f[6]) & PF_KTHREAD:
            continue
        out[(pid, int(f[19]))] = sum(int(x) for x in f[11:15]) / CLK_TCK  # utime stime cutime cstime
    return out


class Others:
    """CPU seconds other processes used since this object was made."""

    def __init__(self) -> None:
        self.start = _snapshot()

    def used(self) -> float:
        # Totals, not per-process differences: a process that ended moved its time into its parent's
        # cutime when it was reaped, and must not count twice.
        return max(0.0, sum(_snapshot().values()) - sum(self.start.values()))
