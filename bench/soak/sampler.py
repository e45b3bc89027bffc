"""Samples over time: RSS and open fds of every service process (from /proc), and JetStream consumers per stream."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS


@dataclass
class ProcSeries:
    """The samples of one process instance (a slot's pid between two restarts)."""

    slot: str
    pid: int
    started: float  # monotonic seconds since the run's start
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss bytes, fds)


def rss_and_fds(pid: int) -> tuple[int, int] | None:
    """Resident set size in bytes and the number of open fds of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError, ValueError):
        return None
    return rss, fds


class Sampler:
    """Keeps a `ProcSeries` per process instance, and consumer counts per stream."""

    def __init__(self) -> None:
        self.series: dict[int, ProcSeries] = {}
        self.consumers: list[tuple[float, dict[str, int]]] = []
        self.nc = NATS()

    async def connect(self, nats_url: str) -> None:
        await self.nc.connect(nats_url, name="soak-sampler", max_reconnect_attempts=-1)

    def sample_processes(self, t: float, slots: list[tuple[str, int, float]]) -> None:
        """`slots`: (slot name, live pid, started at) of every service process now."""
        for name, pid, started in slots:
            got = rss_and_fds(pid)
            if got is None:
                continue
            series = self.series.setdefault(pid, ProcSeries(name, pid, started))
            series.samples.append((t, *got))

    async def sample_consumers(self, t: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            for info in await self.nc.jetstream().streams_info():
                counts[info.config.name or "?"] = info.state.consumer_count
        except Exception:  # NATS busy or reconnecting: a missing sample, not a failure
            counts = {"error": -1}
        self.consumers.append((t, counts))
        return counts

    async def close(self) -> None:
        await self.nc.close()


def growth(series: ProcSeries, baseline: float) -> dict[str, Any] | None:
    """RSS and fds after `baseline` (seconds into the run: the end of the warm-up): the median of the first three
    samples against the median of the last three (one sample can catch a burst of requests); None if the
    process was not sampled six times after it."""
    after = [s for s in series.samples if s[0] >= baseline]
    if len(after) < 6:
        return None
    first, last = after[:3], after[-3:]
    rss0, rss1 = statistics.median(s[1] for s in first), statistics.median(s[1] for s in last)
    fd0, fd1 = statistics.median(s[2] for s in first), statistics.median(s[2] for s in last)
    return {"slot": series.slot, "pid": series.pid, "minutes": (after[-1][0] - after[0][0]) / 60,
            "rss0": rss0, "rss1": rss1, "rss_pct": (rss1 - rss0) / rss0 * 100 if rss0 else 0.0,
            "fd0": fd0, "fd1": fd1, "fd_pct": (fd1 - fd0) / fd0 * 100 if fd0 else 0.0,
            "rss_max": max(s[1] for s in after), "fd_max": max(s[2] for s in after)}
