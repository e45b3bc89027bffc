"""What the home page shows of a user's servers: one row per server, its state in the words a user reads
(home.js derives the same words from the REST API's Server model)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fleethub.services.api.models import INACTIVE, AnyView, Pending, ReportedStatus
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.names import server_prefix, url_escape


class RowState(enum.StrEnum):
    """A server's state on the home page; its words are the lifecycle's, and "starting" for a spawn under
    way (requested or pending)."""

    RUNNING = ServerStatus.RUNNING.value
    STARTING = "starting"
    STOPPING = ServerStatus.STOPPING.value
    STOPPED = ServerStatus.STOPPED.value


def row_state(status: ReportedStatus) -> RowState:
    """JupyterHub's (active, ready, pending) of a server, as one word."""
    active, ready, pending = status
    if pending is Pending.SPAWN:
        return RowState.STARTING
    if pending is Pending.STOP:
        return RowState.STOPPING
    if ready:
        return RowState.RUNNING
    return RowState.STARTING if active else RowState.STOPPED


@dataclass(frozen=True)
class ServerRow:
    """One server of the home page."""

    name: str
    """"" for the default server."""
    state: RowState
    last_activity: datetime | None
    url: str
    """Where the server is reached (its prefix)."""
    pending_url: str
    """Its spawn-pending page."""


@dataclass(frozen=True)
class HomeServers:
    """The default server and the named ones (sorted by name)."""

    default: ServerRow
    named: list[ServerRow]


def pending_url(user: str, server_name: str = "") -> str:
    """The spawn-pending page of a server."""
    return f"/hub/spawn-pending/{url_escape(user)}" + (f"/{url_escape(server_name)}" if server_name else "")


def _row(user: str, name: str, view: AnyView | None) -> ServerRow:
    state = row_state(view.status if view is not None else INACTIVE)
    activity = None
    if view is not None:
        current = view.current_state
        activity = view.server.last_activity or (current.started if current is not None else None)
    return ServerRow(name=name, state=state, last_activity=activity, url=server_prefix(user, name),
                     pending_url=pending_url(user, name))


def home_servers(user: str, views: Sequence[AnyView]) -> HomeServers:
    """The rows of `user`'s servers (the default one even before its first start)."""
    default = next((v for v in views if v.server.name == ""), None)
    named = sorted((v for v in views if v.server.name), key=lambda v: v.server.name)
    return HomeServers(_row(user, "", default), [_row(user, v.server.name, v) for v in named])


PLACEHOLDER = "{server}"
"""The name in the row that home.js copies for a server it learns of (never a valid server name)."""


def placeholder_row(user: str) -> ServerRow:
    """A stopped server named `PLACEHOLDER`: the row home.js copies and renames."""
    return _row(user, PLACEHOLDER, None)


def ago(when: datetime | None, now: datetime) -> str:
    """How long ago `when` was, roughly ("never" for None)."""
    if when is None:
        return "never"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"
