"""Every message fleethub puts on NATS: the envelope, commands, events and KV values, with subjects.

One pydantic model per message is its single payload type: fields are only ever added (with
defaults), never renamed; consumers ignore unknown fields. `subject_of(message, namespace)` derives
the subject, so no subject literal appears anywhere else. `docs/events/` holds the exported JSON
Schemas (kept current by a test); they are the contract for external consumers.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleethub.shared.logging import current_request_id
from fleethub.shared.names import encode_token, server_key


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new message or spawn id (32 hex characters)."""
    return uuid.uuid4().hex


class Message(BaseModel):
    """Base of commands and events: `TYPE` names the message, `VERSION` its schema version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "evt"

    def subject_tail(self) -> str:
        """The part of the subject after `<namespace>.<kind>.`; events use their TYPE."""
        return self.TYPE


LEGACY_BACKEND = "local"
"""The backend of a command that names none (written before commands carried one): the only one then."""


def backend_token(backend: str) -> str:
    """The subject token of backend `backend` (its name encoded; an import path has dots)."""
    return encode_token(backend or LEGACY_BACKEND)


class ServerCommand(Message):
    """A command addressed to one server; its subject carries the backend that runs the server and the
    encoded user and server names: `<ns>.cmd.<backend>.<type>.<user>.<server>`, so the workers of one
    backend take only its commands (`backend_commands_filter`)."""

    KIND: ClassVar[str] = "cmd"

    user: str = Field(description="Owner of the server.")
    server_name: str = Field("", description="Server name; empty for the default server.")
    backend: str = Field("", description="The spawner backend that runs (or is to run) the server; "
                                         "empty: 'local'.")

    def subject_tail(self) -> str:
        return f"{backend_token(self.backend)}.{self.TYPE}.{server_key(self.user, self.server_name)}"


class SpawnServer(ServerCommand):
    """Start a server: the api recorded desired state 'running' under a new spawn id."""

    TYPE: ClassVar[str] = "spawn"

    spawn_id: str = Field(description="Identifies this start; handlers are idempotent by it.")
    user_options: dict[str, Any] = Field(default_factory=dict, description="Options chosen for this spawn.")
    requested_at: datetime = Field(default_factory=utcnow, description="When the start was requested.")


class StopServer(ServerCommand):
    """Stop a server (whatever spawn runs, or only `spawn_id` when given)."""

    TYPE: ClassVar[str] = "stop"

    spawn_id: str | None = Field(None, description="Only stop this spawn; None stops whatever runs.")
    reason: str = Field("api", description="Who asked: 'api', 'culler', 'user-deleted', …")


class ServerEvent(Message):
    """Base of events about one server spawn."""

    user: str = Field(description="Owner of the server.")
    server_name: str = Field("", description="Server name; empty for the default server.")
    spawn_id: str = Field(description="The spawn this event belongs to.")


class ServerProgress(ServerEvent):
    """A spawn made progress (JupyterHub's progress events)."""

    TYPE: ClassVar[str] = "server.progress"

    progress: int = Field(0, ge=0, le=100, description="Percent done.")
    message: str = Field("", description="Human-readable step.")


class ServerReady(ServerEvent):
    """The server answers HTTP and its route is in the route table."""

    TYPE: ClassVar[str] = "server.ready"

    url: str = Field(description="Path prefix of the server, e.g. /user/alice/.")
    target: str = Field(description="Origin the proxy forwards to, e.g. http://127.0.0.1:51234.")
    started: datetime = Field(default_factory=utcnow, description="When the server started.")


class ServerStopped(ServerEvent):
    """The server is no longer running and its route is gone."""

    TYPE: ClassVar[str] = "server.stopped"

    reason: str = Field("api", description="Why it stopped: 'api', 'culler', 'exited', …")


class ServerFailed(ServerEvent):
    """The spawn failed; nothing runs and no route exists."""

    TYPE: ClassVar[str] = "server.failed"

    message: str = Field(description="Why the spawn failed.")


class UserCreated(Message):
    """A user was created."""

    TYPE: ClassVar[str] = "user.created"

    name: str = Field(description="User name.")
    admin: bool = Field(False, description="Whether the user is an admin.")


class UserDeleted(Message):
    """A user was deleted."""

    TYPE: ClassVar[str] = "user.deleted"

    name: str = Field(description="User name.")


class UserLoggedIn(Message):
    """A user logged in through the hub's login page."""

    TYPE: ClassVar[str] = "user.logged_in"

    name: str = Field(description="User name.")
    authenticator: str = Field(description="Authenticator that accepted the login.")


class UserLoggedOut(Message):
    """A user logged out."""

    TYPE: ClassVar[str] = "user.logged_out"

    name: str = Field(description="User name.")


class TokenRevoked(Message):
    """An API token stopped being valid; replicas drop it from their caches."""

    TYPE: ClassVar[str] = "token.revoked"

    token_id: int = Field(description="Database id of the token.")
    user: str | None = Field(None, description="Owner, if a user.")
    service: str | None = Field(None, description="Owner, if a service.")


class UserUpdated(Message):
    """A user's name, admin flag, groups or roles changed (`PATCH /users/{name}`)."""

    TYPE: ClassVar[str] = "user.updated"

    name: str = Field(description="User name (the new one after a rename).")
    admin: bool = Field(False, description="Whether the user is an admin.")
    renamed_from: str | None = Field(None, description="The old name, if the user was renamed.")


class GroupChanged(Message):
    """A group was created, deleted, or changed its members, properties or roles."""

    TYPE: ClassVar[str] = "group.changed"

    name: str = Field(description="Group name.")
    change: str = Field(description="'created', 'deleted', 'members', 'properties' or 'roles'.")
    users: list[str] = Field(default_factory=list, description="Users added or removed, for 'members'.")


class HubShutdown(Message):
    """`POST /hub/api/shutdown`: the hub's services stop (the proxies too when `proxy`)."""

    TYPE: ClassVar[str] = "hub.shutdown"

    servers: bool = Field(True, description="Whether user servers were told to stop first.")
    proxy: bool = Field(True, description="Whether proxy nodes stop too.")


class AccessChanged(Message):
    """Scopes held by some principals may have changed (roles, groups, shares, admin flags).

    Every api replica forgets the cached scopes of the named principals (all of them with `everyone`).
    """

    TYPE: ClassVar[str] = "access.changed"

    users: list[str] = Field(default_factory=list, description="Users whose scopes may have changed.")
    services: list[str] = Field(default_factory=list, description="Services whose scopes may have changed.")
    everyone: bool = Field(False, description="Every principal's scopes may have changed.")


class RouteActivity(BaseModel):
    """Last request time seen for one route by one proxy node."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str = Field(description="Route key in the route bucket, e.g. user.alice._")
    last_activity: datetime = Field(description="Time of the newest request on the route.")
    requests: int = Field(0, ge=0, description="Requests counted since the previous batch.")


class ActivityReported(Message):
    """A proxy node's batch of per-route activity since its previous batch."""

    TYPE: ClassVar[str] = "activity.reported"

    node: str = Field(description="Id of the proxy node.")
    routes: list[RouteActivity] = Field(default_factory=list, description="One entry per active route.")


class Route(BaseModel):
    """Value of one key of the route bucket: where the proxy sends a path prefix."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    routespec: str = Field(description="Path prefix, with leading and trailing slash.")
    target: str = Field(description="Origin to forward to, e.g. http://127.0.0.1:51234.")
    data: dict[str, Any] = Field(default_factory=dict, description="JupyterHub route data (user, server_name).")
    spawn_id: str | None = Field(None, description="Spawn that owns the route, for user servers.")


class RegistryEntry(BaseModel):
    """Value of one key of the service registry: a live auth or api replica."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str = Field(description="'auth' or 'api'.")
    replica: str = Field(description="Replica id.")
    url: str = Field(description="Base URL the proxy forwards /hub/ traffic to.")


class Envelope(BaseModel):
    """The JSON envelope around every command and event on the bus."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="Unique message id; also sent as Nats-Msg-Id so JetStream drops duplicates.")
    type: str = Field(description="Message type, e.g. server.ready or spawn.")
    version: int = Field(description="Schema version of `data`.")
    time: datetime = Field(description="When the message was created (UTC).")
    data: dict[str, Any] = Field(description="The message payload.")
    request_id: str | None = Field(
        None, description="The id of the HTTP request that caused the message (its `X-Request-Id`), carried from "
                          "the request to its command and on to the events the command causes; null: none.")


COMMANDS: tuple[type[ServerCommand], ...] = (SpawnServer, StopServer)
EVENTS: tuple[type[Message], ...] = (
    ServerProgress,
    ServerReady,
    ServerStopped,
    ServerFailed,
    UserCreated,
    UserDeleted,
    UserLoggedIn,
    UserLoggedOut,
    TokenRevoked,
    ActivityReported,
    UserUpdated,
    GroupChanged,
    AccessChanged,
    HubShutdown,
)
KV_VALUES: tuple[type[BaseModel], ...] = (Route, RegistryEntry)
_BY_KIND_TYPE: dict[tuple[str, str], type[Message]] = {(m.KIND, m.TYPE): m for m in (*COMMANDS, *EVENTS)}


def subject_of(message: Message, namespace: str) -> str:
    """The subject `message` is published on."""
    return f"{namespace}.{message.KIND}.{message.subject_tail()}"


def subject_filter(model: type[Message], namespace: str) -> str:
    """The subject filter matching every message of `model`."""
    if issubclass(model, ServerCommand):
        return f"{namespace}.{model.KIND}.*.{model.TYPE}.*.*"
    return f"{namespace}.{model.KIND}.{model.TYPE}"


def events_filter(namespace: str) -> str:
    """The filter matching every event."""
    return f"{namespace}.evt.>"


def server_events_filter(namespace: str) -> str:
    """The filter matching every event about server spawns (`server.progress`, `.ready`, `.stopped`, `.failed`)."""
    return f"{namespace}.evt.server.>"


def commands_filter(namespace: str) -> str:
    """The filter matching every command."""
    return f"{namespace}.cmd.>"


def backend_commands_filter(namespace: str, backend: str) -> str:
    """The filter matching every command for the servers of `backend`."""
    return f"{namespace}.cmd.{backend_token(backend)}.>"


def wrap(message: Message, msg_id: str | None = None) -> Envelope:
    """Put `message` in an envelope (with a new id unless one is given), with the request id of the request
    or command being handled (`fleethub.shared.logging.request_scope`)."""
    return Envelope(
        id=msg_id or new_id(),
        type=message.TYPE,
        version=message.VERSION,
        time=utcnow(),
        data=message.model_dump(mode="json"),
        request_id=current_request_id(),
    )


class UnknownMessage(ValueError):
    """A message whose envelope or type this code does not know."""


def unwrap(raw: bytes, kind: str) -> tuple[Envelope, Message]:
    """Parse and validate an envelope and its payload.

    Args:
        raw: the message body.
        kind: "cmd" or "evt".

    Raises:
        UnknownMessage: malformed JSON, unknown type or version, or a payload that fails validation.
    """
    try:
        env = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise UnknownMessage(f"bad envelope: {exc.error_count()} error(s)") from None
    model = _BY_KIND_TYPE.get((kind, env.type))
    if model is None:
        raise UnknownMessage(f"unknown {kind} type {env.type[:100]!r}")
    if not 1 <= env.version <= model.VERSION:  # a newer schema than this code knows: its meaning may differ
        raise UnknownMessage(f"unknown version {env.version} of {env.type}")
    try:
        return env, model.model_validate(env.data)
    except ValidationError as exc:
        raise UnknownMessage(f"bad {env.type} payload: {exc.error_count()} error(s)") from None


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of the envelope and of every message and KV value, keyed by file stem."""
    out: dict[str, dict[str, Any]] = {"envelope": Envelope.model_json_schema()}
    for model in (*COMMANDS, *EVENTS):
        schema = model.model_json_schema()
        schema["$id"] = f"fleethub:{model.KIND}:{model.TYPE}:v{model.VERSION}"
        schema["x-fleethub-kind"] = model.KIND
        schema["x-fleethub-type"] = model.TYPE
        schema["x-fleethub-version"] = model.VERSION
        out[f"{model.KIND}.{model.TYPE}"] = schema
    for kv in KV_VALUES:
        out[f"kv.{kv.__name__.lower()}"] = kv.model_json_schema()
    return out
