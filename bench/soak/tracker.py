"""Findings over time: which were transient and which persisted, and how long the hub took to converge after
each kill.

A finding is *persistent* (a failure) when it is still there at a check at least `grace` seconds after it
was first seen and at least `grace` seconds after the last kill; anything shorter is *transient* (the
oracle's sources read while the churn moves, or a kill being healed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from invariants import Finding, finding_key


@dataclass
class Episode:
    """One finding, present at consecutive checks from `first` to `last` (seconds into the run)."""

    key: str
    kind: str
    first: float
    last: float
    checks: int
    detail: str
    persistent_at: float | None = None


@dataclass
class Tracker:
    """Oracle checks and kills, turned into episodes and convergence times."""

    grace: float = 10.0
    checks: list[tuple[float, list[Finding], dict[str, Any]]] = field(default_factory=list)
    kills: list[tuple[float, str, int]] = field(default_factory=list)  # (t, slot, pid)
    open: dict[str, Episode] = field(default_factory=dict)
    done: list[Episode] = field(default_factory=list)

    def kill(self, t: float, slot: str, pid: int) -> None:
        self.kills.append((t, slot, pid))

    def last_kill(self, t: float) -> float | None:
        before = [k for k, _, _ in self.kills if k <= t]
        return before[-1] if before else None

    def check(self, t: float, findings: list[Finding], counts: dict[str, Any]) -> list[Episode]:
        """Record one check; returns the episodes that became persistent at it."""
        self.checks.append((t, findings, counts))
        seen = {finding_key(f): f for f in findings}
        for key in list(self.open):
            if key not in seen:
                self.done.append(self.open.pop(key))
        newly = []
        last_kill = self.last_kill(t)
        for key, f in seen.items():
            ep = self.open.get(key)
            if ep is None:
                ep = self.open[key] = Episode(key, f.invariant, t, t, 0, f.detail)
            ep.last = t
            ep.checks += 1
            ep.detail = f.detail
            quiet = last_kill is None or t - last_kill >= self.grace
            if ep.persistent_at is None and t - ep.first >= self.grace and quiet:
                ep.persistent_at = t
                newly.append(ep)
        return newly

    def episodes(self) -> list[Episode]:
        return [*self.done, *self.open.values()]

    def convergence(self) -> list[dict[str, Any]]:
        """Per kill: seconds until the first check with no finding at all, and until the first check with no
        finding first seen after the kill (None: never, before the next kill or the end)."""
        out = []
        for i, (tk, slot, pid) in enumerate(self.kills):
            nxt = self.kills[i + 1][0] if i + 1 < len(self.kills) else float("inf")
            clean = new_clean = None
            for t, findings, _ in self.checks:
                if t < tk or t > nxt:
                    continue
                firsts = [self._first_seen(finding_key(f), t) for f in findings]
                if new_clean is None and all(ft is not None and ft < tk for ft in firsts):
                    new_clean = t - tk
                if not findings:
                    clean = t - tk
                    break
            out.append({"t": tk, "slot": slot, "pid": pid, "clean_after": clean, "new_clean_after": new_clean,
                        "next_kill_after": nxt - tk})
        return out

    def _first_seen(self, key: str, t: float) -> float | None:
        for ep in self.episodes():
            if ep.key == key and ep.first <= t <= ep.last:
                return ep.first
        return None
