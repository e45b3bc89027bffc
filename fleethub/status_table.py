"""`fleethub status` as readable tables: services and replicas, queues, dead letters, servers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from fleethub.shared.lifecycle import ServerStatus
from fleethub.status import REQUESTED, SERVICES, Status


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, a header line first."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _when(dt: datetime | None, now: float) -> str:
    return "-" if dt is None else f"{_age(now - dt.timestamp())} ago"


def render(status: Status, now: float) -> str:
    """The report as text; `now` (epoch seconds) for ages."""
    out = [f"fleethub status (namespace {status.namespace})", ""]
    out.append("SERVICES")
    if status.nats_ok:
        rows: list[tuple[object, ...]] = []
        for service, replicas in status.services.items():
            note = "" if replicas or service not in SERVICES else "none answering"
            rows.append((service, len(replicas), note))
            rows += [("", "", f"{r.replica} on {r.host} (pid {r.pid}), up {_age(now - r.started)}") for r in replicas]
        out.append(table(("service", "replicas", "replica"), rows))
    else:
        out.append("unknown: NATS unreachable")
    out += ["", "QUEUES"]
    if status.nats_ok:
        depths = [(c.stream, c.consumer, c.pending, c.ack_pending, c.redelivered, c.waiting) for c in status.consumers]
        out.append(", ".join(f"{s.stream}: {s.messages} messages" for s in status.streams))
        out.append(table(("stream", "consumer", "pending msgs", "ack pending", "redelivered", "waiting"), depths)
                   if depths else "no durable consumers")
    else:
        out.append("unknown: NATS unreachable")
    out += ["", "DEAD LETTERS"]
    if status.database_ok:
        out.append(f"{status.dead_letters} recorded")
        if status.recent_dead_letters:
            out.append(table(("when", "consumer", "subject", "reason"),
                             [(_when(d.created, now), d.consumer, d.subject, d.reason[:80])
                              for d in status.recent_dead_letters]))
    else:
        out.append("unknown: PostgreSQL unreachable")
    out += ["", "SERVERS"]
    if status.database_ok:
        running = sum(1 for s in status.servers if s.status == ServerStatus.RUNNING)
        pending = sum(1 for s in status.servers if s.status in (ServerStatus.PENDING, REQUESTED))
        out.append(f"{running} running, {pending} pending, {len(status.servers)} in all")
        if status.servers:
            out.append(table(("user", "server", "status", "backend", "worker", "started", "url"),
                             [(s.user, s.server or "(default)", s.status, s.backend or "local", s.worker,
                               _when(s.started, now) if s.started else None, s.url) for s in status.servers]))
    else:
        out.append("unknown: PostgreSQL unreachable")
    return "\n".join(out)
