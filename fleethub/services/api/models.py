"""JupyterHub's user, server and token models, built from rows (no I/O here)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from fleethub.shared.baseurl import public_path
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import ApiToken
from fleethub.shared.http import iso
from fleethub.shared.lifecycle import ACTIVE, DesiredState, ServerStatus
from fleethub.shared.names import server_prefix, url_escape


class UserLike(Protocol):
    """What the User model is built from: a `users` row (ORM object or `queries.UserRow`)."""

    @property
    def name(self) -> str: ...
    @property
    def admin(self) -> bool: ...
    @property
    def created(self) -> datetime | None: ...
    @property
    def last_activity(self) -> datetime | None: ...
    @property
    def auth_state(self) -> dict[str, Any] | None: ...


class ServerLike(Protocol):
    """A `servers` row (desired state): ORM object or `queries.ServerRow`."""

    @property
    def name(self) -> str: ...
    @property
    def display_name(self) -> str | None: ...
    @property
    def desired(self) -> str: ...
    @property
    def spawn_id(self) -> str | None: ...
    @property
    def user_options(self) -> dict[str, Any] | None: ...
    @property
    def last_activity(self) -> datetime | None: ...


class StateLike(Protocol):
    """A `server_states` row (actual state): ORM object or `queries.StateRow`."""

    @property
    def spawn_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def started(self) -> datetime | None: ...
    @property
    def state(self) -> dict[str, Any] | None: ...


class Pending(enum.StrEnum):
    """JupyterHub's `pending` of a server: which transition is under way (None: neither)."""

    SPAWN = "spawn"
    STOP = "stop"


class ReportedStatus(NamedTuple):
    """A server's status in JupyterHub's words: `active` (`stopped` is its negation), `ready`, `pending`."""

    active: bool
    ready: bool
    pending: Pending | None


INACTIVE = ReportedStatus(False, False, None)
_READY = ReportedStatus(True, True, None)
_SPAWNING = ReportedStatus(True, False, Pending.SPAWN)
_STOPPING = ReportedStatus(True, False, Pending.STOP)

# (status of the current spawn, desired state) → what JupyterHub reports; a done spawn is inactive. A table
# built once: `status` runs for every server of every user model, and branching on enum members there
# (~40 ns per member lookup on Python 3.11) made it 1.7x slower than with string literals; this is within 10 % of them.
_REPORTED: Mapping[tuple[str, str], ReportedStatus] = {
    (ServerStatus.RUNNING, DesiredState.RUNNING): _READY,
    (ServerStatus.RUNNING, DesiredState.STOPPED): ReportedStatus(True, True, Pending.STOP),  # stop not done yet
    (ServerStatus.PENDING, DesiredState.RUNNING): _SPAWNING,
    (ServerStatus.PENDING, DesiredState.STOPPED): _STOPPING,
    (ServerStatus.STOPPING, DesiredState.RUNNING): _STOPPING,
    (ServerStatus.STOPPING, DesiredState.STOPPED): _STOPPING,
}
_REQUESTED = DesiredState.RUNNING

_S = TypeVar("_S", covariant=True)
_T = TypeVar("_T", covariant=True)
_St = TypeVar("_St", bound=StateLike)
# Not bounded by the row protocols: mypy refuses the ORM classes for such a bound where the class is
# subscripted (though it takes them as the protocols everywhere else); the properties ask for the protocols.


@dataclass(frozen=True)
class ServerView(Generic[_S, _T]):
    """A server's desired state (api) joined with its actual state (spawner): ORM rows (which the api may
    change) or the columns `queries` reads for the models (`ServerLike`, `StateLike`)."""

    server: _S
    state: _T | None

    @property
    def current_state(self: ServerView[ServerLike, _St]) -> _St | None:
        """The actual state, if it is about the current spawn."""
        s = self.state
        return s if s is not None and s.spawn_id == self.server.spawn_id else None

    @property
    def status(self: ServerView[ServerLike, StateLike]) -> ReportedStatus:
        """The lifecycle's statuses as JupyterHub reports them: the one place its words are derived."""
        st = self.current_state
        if st is not None:
            return _REPORTED.get((st.status, self.server.desired), INACTIVE)
        if self.server.desired == _REQUESTED and self.server.spawn_id:
            return _SPAWNING  # requested, not yet taken by a worker
        if self.state is not None and self.state.status in ACTIVE:
            return _STOPPING  # an older spawn still winding down
        return INACTIVE


AnyView = ServerView[ServerLike, StateLike]


def server_model(user: UserLike, view: AnyView, *, with_state: bool, base_url: str) -> dict[str, Any]:
    """The Server model (its URLs under `base_url`)."""
    srv = view.server
    active, ready, pending = view.status
    prefix = public_path(base_url, server_prefix(user.name, srv.name))
    st = view.current_state
    progress = f"{base_url}hub/api/users/{url_escape(user.name)}/" + (
        f"servers/{url_escape(srv.name)}/progress" if srv.name else "server/progress"
    )
    model: dict[str, Any] = {
        "name": srv.name,
        # JupyterHub 6: named servers get their name unless given one; the default server's is ""
        "display_name": srv.display_name if srv.display_name is not None else srv.name,
        "full_name": f"{user.name}/{srv.name}",
        "last_activity": iso(srv.last_activity or (st.started if st else None)),
        "started": iso(st.started) if st is not None and active else None,
        "pending": pending,
        "ready": ready,
        "stopped": not active,
        "url": prefix,
        "user_options": srv.user_options or {},
        "progress_url": progress,
        "full_url": None,
        "full_progress_url": None,
    }
    if with_state:
        model["state"] = dict(st.state or {}) if st is not None else {}
    return model


# which fields of the User model each scope reveals (JupyterHub's vertical filtering)
USER_FIELDS: dict[str, tuple[str, ...]] = {
    "read:users": ("kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity"),
    "read:users:name": ("kind", "name", "admin"),
    "read:users:groups": ("kind", "name", "groups"),
    "read:users:activity": ("kind", "name", "last_activity"),
    "read:servers": ("kind", "name", "servers"),
    "read:roles:users": ("kind", "name", "roles", "admin"),
    "admin:auth_state": ("kind", "name", "auth_state"),
}
READ_USER_SCOPES = tuple(USER_FIELDS)
MODEL_SCOPES = (*READ_USER_SCOPES, "admin:server_state")  # every scope `user_model` asks about

# can(scope, server_name): whether the requester holds `scope` for this user (server_name None) or server
Can = Callable[[str, str | None], bool]


@dataclass(frozen=True)
class UserLinks:
    """A user's group names and custom role names (the default roles follow from the admin flag)."""

    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


def role_names(user: UserLike, links: UserLinks) -> list[str]:
    """The `roles` of the User model (sorted): `user`, `admin` for admins, and custom roles."""
    return sorted({"user", *(["admin"] if user.admin else []), *links.roles})


def user_model(user: UserLike, views: Sequence[AnyView], can: Can, *, crypt: AuthStateCrypt, base_url: str,
               include_stopped: bool = False, links: UserLinks | None = None) -> dict[str, Any] | None:
    """The User model as far as `can` lets the requester see it; None if nothing is visible.

    `auth_state` is decrypted with `crypt` only for a requester who may see it.

    `servers` is keyed by server name ("" = default) and holds active servers only, unless
    `include_stopped`.
    """
    fields = {f for scope, names in USER_FIELDS.items() if can(scope, None) for f in names}
    may_read_servers = "servers" in fields or any(can("read:servers", n) for n in {"", *(v.server.name for v in views)})
    if not fields and not may_read_servers:
        return None
    servers = {}
    default_url = None
    default_pending = None
    for view in views:
        active, ready, pending = view.status
        if view.server.name == "":
            default_pending = pending
            default_url = public_path(base_url, server_prefix(user.name)) if ready else None
        if (active or include_stopped) and can("read:servers", view.server.name):
            servers[view.server.name] = server_model(user, view, with_state=can("admin:server_state", view.server.name),
                                                     base_url=base_url)
    full: dict[str, Any] = {
        "kind": "user",
        "name": user.name,
        "admin": user.admin,
        "roles": role_names(user, links or UserLinks()),
        "groups": list((links or UserLinks()).groups),
        "server": default_url,
        "pending": default_pending,
        "created": iso(user.created),
        "last_activity": iso(user.last_activity),
        "auth_state": crypt.open(user.auth_state, user.name) if "auth_state" in fields else None,
        "servers": servers,
    }
    if may_read_servers:
        fields |= {"kind", "name", "servers"}
    return {key: value for key, value in full.items() if key in fields}


def token_model(token: ApiToken, owner: str) -> dict[str, Any]:
    """The Token model (without the token itself)."""
    return {
        "id": f"a{token.id}",
        "kind": "api_token",
        "user": owner,
        "roles": [],
        "scopes": list(token.scopes or []),
        "note": token.note,
        "created": iso(token.created),
        "expires_at": iso(token.expires_at),
        "last_activity": iso(token.last_activity),
        "session_id": token.session_id,
        "oauth_client": token.client_id,
    }
