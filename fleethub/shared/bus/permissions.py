"""Who may do what on the bus, as plain data: one identity per service, plus `events` (read-only, for
external consumers of the events stream) and `status` (read-only, for `fleethub status`), each with the
subjects it may publish and subscribe to.

Deny by default: nothing outside a grant is allowed, and no grant is `>`. The table is derived from
what each service does (what it publishes, consumes, which buckets it reads and writes) and renders
both nats-server's `authorization` block (`natsconfig.py`) and the table in docs/architecture.md
(`markdown_table`). Patterns hold placeholders filled per namespace by `grants`:
`{ns}` the namespace, `{CMD}`/`{EVT}` the command and event streams, `{ROUTES}`/`{REGISTRY}` the buckets,
`{inbox}` the identity's own inbox prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleethub.shared.bus.applied import APPLIED_SUBJECT
from fleethub.shared.bus.connection import inbox_prefix
from fleethub.shared.bus.presence import PING_SUBJECT
from fleethub.shared.bus.topology import Names
from fleethub.shared.events import (
    AccessChanged,
    ActivityReported,
    GroupChanged,
    HubShutdown,
    Message,
    ServerFailed,
    ServerProgress,
    ServerReady,
    ServerStopped,
    SpawnServer,
    StopServer,
    TokenRevoked,
    UserCreated,
    UserDeleted,
    UserLoggedIn,
    UserLoggedOut,
    UserUpdated,
    backend_token,
    subject_filter,
)

SERVICES = ("auth", "api", "spawner", "proxy", "culler")
EVENTS_IDENTITY = "events"
STATUS_IDENTITY = "status"
IDENTITIES = (*SERVICES, EVENTS_IDENTITY, STATUS_IDENTITY)

# the api's durable consumers on the events stream and the spawner's on the command stream: nobody
# else may bind, change, pull from or delete them (the api's consumers table is checked against these)
API_DURABLES = ("api-activity", "api-server-events")
LEGACY_SPAWNER_DURABLE = "spawner"
"""The one durable of every command before commands were routed per backend: deleted by a worker at start
(its filter, every command, overlaps the per-backend ones, which a work-queue stream refuses)."""


def spawner_durable(backend: str) -> str:
    """The durable consumer of the commands of `backend` (shared by every worker serving it)."""
    return f"spawner-{backend_token(backend)}"


def webhook_durable(name: str) -> str:
    """The durable consumer on the events stream from which the api replicas deliver webhook `name`."""
    return f"webhook-{name}"


# the core request the api sends for `POST /hub/api/proxy`; a spawner worker answers it
RECONCILE_SUBJECT = "{ns}.rpc.routes.reconcile"


def reconcile_subject(namespace: str) -> str:
    """The subject of the api's request that a spawner worker reconcile the route table now."""
    return RECONCILE_SUBJECT.format(ns=namespace)


def _events(*models: type[Message]) -> tuple[str, ...]:
    return tuple(subject_filter(m, "{ns}") for m in models)


def _stream_info(stream: str) -> tuple[str, ...]:
    return (f"$JS.API.STREAM.INFO.{stream}",)


def _kv_read(bucket: str) -> tuple[str, ...]:
    """Get, list and watch a bucket: stream info, direct and stored gets, ordered consumers (their
    creation, info and deletion) and their flow control."""
    s = f"KV_{bucket}"
    return (f"$JS.API.STREAM.INFO.{s}", f"$JS.API.DIRECT.GET.{s}", f"$JS.API.DIRECT.GET.{s}.>",
            f"$JS.API.STREAM.MSG.GET.{s}", f"$JS.API.CONSUMER.CREATE.{s}", f"$JS.API.CONSUMER.CREATE.{s}.>",
            f"$JS.API.CONSUMER.INFO.{s}.>", f"$JS.API.CONSUMER.DELETE.{s}.>", f"$JS.FC.{s}.>")


def _durable(stream: str, durable: str) -> tuple[str, ...]:
    """Bind and pull from one durable consumer of `stream`, and settle what it delivers."""
    return (f"$JS.API.CONSUMER.INFO.{stream}.{durable}", f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>")


def _declare(stream: str, *, update: bool) -> tuple[str, ...]:
    """Create (and, with `update`, change: that can destroy data) a stream or bucket."""
    out = (f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.CREATE.{stream}")
    return (*out, f"$JS.API.STREAM.UPDATE.{stream}") if update else out


@dataclass(frozen=True)
class Grant:
    """What one identity may do.

    Attributes:
        does: one line for the docs.
        publish: subjects it may publish to (requests to the JetStream API included).
        subscribe: subjects it may subscribe to (its inbox is added by `grants`).
        deny_publish: carved out of `publish` (the server applies deny first).
        responses: it may answer the requests it receives (once each).
        declares: streams/buckets it creates if missing ("cmd", "evt", "routes", "registry").
        updates: whether it also updates existing streams/buckets to the declared config.
        needs: streams/buckets it waits for at start (those it does not declare).
    """

    does: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    responses: bool = False
    declares: tuple[str, ...] = ()
    updates: bool = False
    needs: tuple[str, ...] = ()


SHUTDOWN = _events(HubShutdown)
# every service replica answers `fleethub status`'s ping (hence `responses` on every service)
PING = (PING_SUBJECT,)

TABLE: dict[str, Grant] = {
    "auth": Grant(
        does="publishes its login events; writes its own registry keys; re-creates the in-memory registry",
        publish=(*_events(UserLoggedIn, UserLoggedOut), *_stream_info("{EVT}"), "$KV.{REGISTRY}.auth.>",
                 *_declare("KV_{REGISTRY}", update=False)),
        subscribe=(*SHUTDOWN, *PING),
        responses=True,
        declares=("registry",),
        needs=("evt",),
    ),
    "api": Grant(
        does="declares every stream and bucket; sends spawn/stop commands and its events; writes its own "
             "registry keys; reads routes; consumes activity and server events; asks a spawner to reconcile",
        publish=(
            *_events(SpawnServer, StopServer),
            *_events(UserCreated, UserDeleted, UserUpdated, TokenRevoked, GroupChanged, AccessChanged, HubShutdown),
            *_declare("{CMD}", update=True), *_declare("{EVT}", update=True),
            *_declare("KV_{ROUTES}", update=True), *_declare("KV_{REGISTRY}", update=True),
            "$KV.{REGISTRY}.api.>", *_kv_read("{ROUTES}"),
            *(g for d in API_DURABLES for g in _durable("{EVT}", d)),
            RECONCILE_SUBJECT,
        ),
        subscribe=(
            "{ns}.evt.server.>",
            *_events(TokenRevoked, UserDeleted, UserUpdated, AccessChanged, GroupChanged, HubShutdown), *PING,
        ),
        responses=True,
        declares=("cmd", "evt", "routes", "registry"),
        updates=True,
    ),
    "spawner": Grant(
        does="consumes commands; publishes server events; the only writer of routes; answers reconciliation "
             "requests; follows the proxy nodes' acknowledgements of the routes they serve",
        publish=(*_events(ServerProgress, ServerReady, ServerStopped, ServerFailed), *_stream_info("{CMD}"),
                 *_stream_info("{EVT}"), *_durable("{CMD}", "*"),
                 f"$JS.API.CONSUMER.DELETE.{{CMD}}.{LEGACY_SPAWNER_DURABLE}", "$KV.{ROUTES}.>",
                 *_kv_read("{ROUTES}")),
        subscribe=(RECONCILE_SUBJECT, APPLIED_SUBJECT, *SHUTDOWN, *PING),
        responses=True,
        needs=("cmd", "evt", "routes"),
    ),
    "proxy": Grant(
        does="reads routes and the registry; publishes activity and which route revision it serves; its route "
             "API writes `path.` routes only",
        publish=(*_events(ActivityReported), *_stream_info("{EVT}"), *_kv_read("{ROUTES}"),
                 *_kv_read("{REGISTRY}"), "$KV.{ROUTES}.path", "$KV.{ROUTES}.path.>", APPLIED_SUBJECT),
        subscribe=(*_events(ActivityReported), *SHUTDOWN, *PING),
        responses=True,
        needs=("evt", "routes", "registry"),
    ),
    "culler": Grant(
        does="sends stop commands; follows activity",
        publish=(*_events(StopServer), *_stream_info("{CMD}")),
        subscribe=(*_events(ActivityReported), *SHUTDOWN, *PING),
        responses=True,
        needs=("cmd",),
    ),
    EVENTS_IDENTITY: Grant(
        does="external event consumers (read-only): its own consumers on the events stream, their "
             "deliveries and acks",
        publish=(*_stream_info("{EVT}"), "$JS.API.CONSUMER.CREATE.{EVT}", "$JS.API.CONSUMER.CREATE.{EVT}.>",
                 "$JS.API.CONSUMER.DURABLE.CREATE.{EVT}.>", "$JS.API.CONSUMER.INFO.{EVT}.>",
                 "$JS.API.CONSUMER.DELETE.{EVT}.>", "$JS.API.CONSUMER.MSG.NEXT.{EVT}.>", "$JS.ACK.{EVT}.>",
                 "$JS.FC.{EVT}.>"),
        subscribe=(),
        # the api's own durables: not to be re-created, pulled from, acked for or deleted by anyone else
        deny_publish=tuple(
            s for d in API_DURABLES for s in (
                f"$JS.API.CONSUMER.CREATE.{{EVT}}.{d}", f"$JS.API.CONSUMER.CREATE.{{EVT}}.{d}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{{EVT}}.{d}", f"$JS.API.CONSUMER.DELETE.{{EVT}}.{d}",
                f"$JS.API.CONSUMER.MSG.NEXT.{{EVT}}.{d}", f"$JS.ACK.{{EVT}}.{d}.>")),
    ),
    STATUS_IDENTITY: Grant(
        does="`fleethub status` (read-only): asks every replica who it is; reads the streams' and their "
             "consumers' counts",
        publish=(PING_SUBJECT, *_stream_info("{CMD}"), *_stream_info("{EVT}"), "$JS.API.CONSUMER.LIST.{CMD}",
                 "$JS.API.CONSUMER.LIST.{EVT}"),
        subscribe=(),
    ),
}


@dataclass(frozen=True)
class Permissions:
    """One identity's grants with the namespace filled in."""

    identity: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...]
    responses: bool


def _fill(pattern: str, identity: str, names: Names | None) -> str:
    if names is None:  # the docs: placeholders spelled as in docs/events.md
        values = {"ns": "<ns>", "CMD": "<NS>_CMD", "EVT": "<NS>_EVENTS", "ROUTES": "<ns>_routes",
                  "REGISTRY": "<ns>_registry"}
    else:
        values = {"ns": names.namespace, "CMD": names.cmd_stream, "EVT": names.evt_stream,
                  "ROUTES": names.routes_bucket, "REGISTRY": names.registry_bucket}
    return pattern.format(inbox=inbox_prefix(identity), **values)


def _webhook_grants(webhooks: tuple[str, ...]) -> tuple[str, ...]:
    """Binding, pulling from and settling the durables of the configured webhooks (the api delivers them).

    A durable name is one subject token, so no wildcard can grant "every `webhook-` durable" alone: the
    names are listed, and the server's configuration is rendered again when the webhooks change."""
    return tuple(s for w in webhooks for s in _durable("{EVT}", webhook_durable(w)))


def grants(identity: str, names: Names | None, webhooks: tuple[str, ...] = ()) -> Permissions:
    """The permissions of `identity` in the namespace of `names` (None: with `<ns>` placeholders), with
    the durables of the webhooks named `webhooks`: the api's, and refused to the `events` identity."""
    g = TABLE[identity]
    publish, deny = g.publish, g.deny_publish
    if identity == "api":
        publish = (*publish, *_webhook_grants(webhooks))
    elif identity == EVENTS_IDENTITY:
        deny = (*deny, *(s for s in _webhook_grants(webhooks) if "CONSUMER.INFO" not in s),
                *(f"$JS.API.CONSUMER.DELETE.{{EVT}}.{webhook_durable(w)}" for w in webhooks))

    def fill(patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_fill(p, identity, names) for p in patterns))

    return Permissions(identity, fill(publish), (*fill(g.subscribe), f"{inbox_prefix(identity)}.>"),
                       fill(deny), g.responses)


def _messages(identity: str) -> set[str]:
    """The command and event subjects `identity` may publish (what an outbox row of it holds)."""
    return {p for p in TABLE[identity].publish
            if p.startswith("{ns}.") and p not in (RECONCILE_SUBJECT, APPLIED_SUBJECT)}


def relays_for(identity: str) -> tuple[str, ...]:
    """The other services whose outbox rows `identity` may publish as well (every message they may send,
    it may too): the api relays the culler's stop requests when no culler is running."""
    mine = _messages(identity)
    return tuple(s for s in SERVICES if s != identity and _messages(s) and _messages(s) <= mine)


def markdown_table() -> str:
    """The permission table of docs/architecture.md (generated; a test keeps the doc current)."""
    lines = ["| identity | what it does | may publish to | may subscribe to |", "|---|---|---|---|"]
    for identity in IDENTITIES:
        p = grants(identity, None, ("<name>",))
        pub = ", ".join(f"`{s}`" for s in p.publish)
        if p.deny_publish:
            pub += "; **not** " + ", ".join(f"`{s}`" for s in p.deny_publish)
        if p.responses:
            pub += "; replies to requests it receives"
        sub = ", ".join(f"`{s}`" for s in p.subscribe)
        lines.append(f"| {identity} | {TABLE[identity].does} | {pub} | {sub} |")
    return "\n".join(lines) + "\n"
