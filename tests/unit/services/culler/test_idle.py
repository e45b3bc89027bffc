"""The idle policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleethub.services.culler.idle import RunningServer, idle_servers, merge_activity

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def srv(started_ago: float | None, active_ago: float | None, name: str = "a") -> RunningServer:
    started = NOW - timedelta(seconds=started_ago) if started_ago is not None else None
    active = NOW - timedelta(seconds=active_ago) if active_ago is not None else None
    return RunningServer(name, "", f"spawn-{name}", started, active)


def test_idle_by_activity_or_start() -> None:
    servers = [srv(1000, 900, "old"), srv(1000, 5, "busy"), srv(1000, None, "never"), srv(10, None, "new")]
    names = {s.user for s in idle_servers(servers, NOW, 60)}
    assert names == {"old", "never"}


def test_activity_seen_on_the_bus_keeps_a_server() -> None:
    server = srv(1000, 900)
    fresh = merge_activity(server, NOW - timedelta(seconds=1))
    assert idle_servers([fresh], NOW, 60) == []
    # older bus activity never moves last_activity backwards
    assert merge_activity(fresh, NOW - timedelta(seconds=500)).last_activity == fresh.last_activity
