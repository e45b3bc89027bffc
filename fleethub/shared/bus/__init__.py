"""The one adapter between fleethub and NATS JetStream; nothing outside this package imports `nats`.

- `connection`: connect with unlimited reconnects and a short ping interval, every background callback
  wired to logs and to `Bus.healthy`; drain on close.
- `topology`: the streams and KV buckets of a namespace, from one table, declared idempotently; which
  stream takes a subject, and whether it takes atomic batches.
- `publish`: one message or an atomic batch, with `Nats-Msg-Id` (a retry is never a second message).
- `consume`: pull consumers whose handlers say ack, nak or term in their return value (`Decision`), and
  core subscriptions to events.
- `kv`, `routestore`, `registrystore`: the route table and the service registry as our models
  (`Route`, `RegistryEntry`), raising `BusError`, never a nats exception.
- `applied`: proxy nodes' acknowledgements of the route revision they serve (core NATS).
- `presence`: replicas answering `fleethub status`'s ping, and the streams' and consumers' backlogs.
- `permissions`: who may do what on the bus (one identity per service, plus read-only `events`), as data;
  `natsconfig`: nkey seeds and the nats-server `authorization` block rendered from it.
- `facade`: `Bus`, what a service holds, delegating to the above.
"""

import fleethub.shared.bus._lean  # noqa: F401  (first: nats without aiohttp)
from fleethub.shared.bus.applied import RoutesApplied
from fleethub.shared.bus.connection import Connection, Credentials, bus_unavailable, inbox_prefix
from fleethub.shared.bus.consume import (
    DeadLetter,
    DeadLetterSink,
    Decision,
    Delivery,
    GiveUp,
    Handler,
    Outcome,
    PullConsumer,
    Retry,
)
from fleethub.shared.bus.facade import Bus
from fleethub.shared.bus.kv import Apply, BusTimeout, ModelBucket, Version
from fleethub.shared.bus.permissions import reconcile_subject, relays_for
from fleethub.shared.bus.presence import ConsumerDepth, ReplicaInfo, StreamDepth, replica_info
from fleethub.shared.bus.publish import BATCH_MAX, BatchRefused
from fleethub.shared.bus.registrystore import RegistryStore, registry_key
from fleethub.shared.bus.routestore import RouteStore
from fleethub.shared.bus.topology import DUPLICATE_WINDOW, EVENTS_MAX_AGE, REGISTRY_TTL, Names, Topology
from fleethub.shared.errors import BusError

# BATCHES_RETRY stays in `topology` only: a copy here would be a second value that patching misses
__all__ = [
    "BATCH_MAX",
    "DUPLICATE_WINDOW",
    "EVENTS_MAX_AGE",
    "REGISTRY_TTL",
    "Apply",
    "BatchRefused",
    "Bus",
    "BusError",
    "BusTimeout",
    "Connection",
    "ConsumerDepth",
    "Credentials",
    "DeadLetter",
    "DeadLetterSink",
    "Decision",
    "Delivery",
    "GiveUp",
    "Handler",
    "ModelBucket",
    "Names",
    "Outcome",
    "PullConsumer",
    "RegistryStore",
    "ReplicaInfo",
    "Retry",
    "RouteStore",
    "RoutesApplied",
    "StreamDepth",
    "Topology",
    "Version",
    "bus_unavailable",
    "inbox_prefix",
    "reconcile_subject",
    "registry_key",
    "relays_for",
    "replica_info",
]
