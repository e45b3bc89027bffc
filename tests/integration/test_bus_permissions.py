"""The bus permissions against a real auth-enabled nats-server (the `fleethub up` configuration): every
attack of the security review is tried with each identity's own credentials, refused by the server, and
the stream or bucket is checked (with an identity that may read it) to be unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from fleethub.shared.bus import Bus, BusError, Credentials, RoutesApplied, inbox_prefix
from fleethub.shared.bus.applied import applied_subject
from fleethub.shared.bus.natsconfig import new_seed, write_private
from fleethub.shared.bus.permissions import API_DURABLES, IDENTITIES, SERVICES, spawner_durable, webhook_durable
from fleethub.shared.events import (
    ActivityReported,
    RegistryEntry,
    Route,
    SpawnServer,
    StopServer,
    UserCreated,
    UserLoggedIn,
    commands_filter,
    events_filter,
)
from fleethub.shared.names import route_key
from tests.support.securenats import RawClient, SecureNats, close_all, raw_client, secure_nats

pytestmark = pytest.mark.integration
NS = "perm"
BOB = Route(routespec="/user/bob/", target="http://127.0.0.1:40100", data={"user": "bob", "server_name": ""})


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNats]:
    with secure_nats(tmp_path_factory.mktemp("securenats"), NS, webhooks=("audit",)) as server:
        yield server


@dataclass
class World:
    """Buses of the services (the api declared everything), raw clients of every identity, and bob's
    route, the registry's two entries and one spawn command in place."""

    secure: SecureNats
    bus: dict[str, Bus]
    raw: dict[str, RawClient]

    async def evt_last_seq(self) -> int:
        return int((await self.bus["api"].js.stream_info(self.bus["api"].names.evt_stream)).state.last_seq)

    async def cmd_messages(self) -> int:
        return int((await self.bus["api"].js.stream_info(self.bus["api"].names.cmd_stream)).state.messages)


@pytest.fixture
async def world(secure: SecureNats) -> AsyncIterator[World]:
    bus = {name: secure.bus(name) for name in SERVICES}
    raw: dict[str, RawClient] = {}
    try:
        for b in bus.values():
            await b.connect()
        await bus["api"].ensure_topology()
        for name in SERVICES:
            await bus[name].ensure_topology(timeout=10)
        await bus["spawner"].routes.put(route_key("bob"), BOB)
        await bus["auth"].registry.put(RegistryEntry(service="auth", replica="a1", url="http://127.0.0.1:40101"))
        await bus["api"].registry.put(RegistryEntry(service="api", replica="b1", url="http://127.0.0.1:40102"))
        # the spawner's durable on the command stream, and the api's on the events stream, as they bind them
        for stream, durable, who, filt in ((bus["api"].names.cmd_stream, spawner_durable("local"), "spawner",
                                            commands_filter(NS)),
                                           *((bus["api"].names.evt_stream, d, "api", events_filter(NS))
                                             for d in API_DURABLES)):
            sub = await bus[who].js.pull_subscribe(filt, durable=durable, stream=stream)
            await sub.unsubscribe()
        for name in IDENTITIES:
            raw[name] = await raw_client(secure, name)
        yield World(secure, bus, raw)
    finally:
        await close_all(raw)
        await close_all(bus)


# --- connecting ---------------------------------------------------------------------------------------


async def test_a_client_without_credentials_or_with_a_wrong_seed_is_refused(secure: SecureNats,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secure.url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
    wrong = tmp_path / "wrong.nk"
    write_private(wrong, new_seed())  # a valid seed the server was never told about
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secure.url, nkeys_seed=str(wrong), allow_reconnect=False, connect_timeout=2,
                           max_reconnect_attempts=0)
    # our own Bus says so at once rather than retrying for its whole timeout
    b = Bus(secure.url, NS, "wrong", Credentials(identity="api", nkey_file=wrong))
    with pytest.raises(BusError, match="refused"):
        await b.connect(timeout=30)
    assert any("authentication error" in line or "Authorization" in line
               for line in secure.server.log.read_text().splitlines())


# --- the route table: only the spawner writes it --------------------------------------------------------

ROUTE_WRITERS_REFUSED = ("proxy", "culler", "auth", "api", "events")


@pytest.mark.parametrize("who", ROUTE_WRITERS_REFUSED)
@pytest.mark.parametrize("op", ["put", "delete"])
async def test_only_the_spawner_writes_a_route(world: World, who: str, op: str) -> None:
    # the review: a process rewrote bob's key to its own listener and received his requests and cookies
    subject = f"$KV.{NS}_routes.user.bob._"
    evil = Route(routespec="/user/bob/", target="http://127.0.0.1:9", data={"user": "bob", "server_name": ""})
    headers = {"KV-Operation": "DEL"} if op == "delete" else None
    payload = b"" if op == "delete" else evil.model_dump_json().encode()
    assert await world.raw[who].try_publish(subject, payload, headers)
    assert await world.bus["proxy"].routes.get(route_key("bob")) == BOB


async def test_the_proxys_route_api_writes_only_path_routes(world: World) -> None:
    assert not await world.raw["proxy"].try_publish(f"$KV.{NS}_routes.path.jupyterhub",
                                                    BOB.model_dump_json().encode())
    assert await world.bus["spawner"].routes.get("path.jupyterhub") == BOB


# --- the registry: auth and api, each only its own keys --------------------------------------------------

REGISTRY_REFUSED = [(who, key) for who in ("proxy", "spawner", "culler", "events") for key in ("auth", "api")]
REGISTRY_REFUSED += [("auth", "api"), ("api", "auth")]


@pytest.mark.parametrize(("who", "service"), REGISTRY_REFUSED)
async def test_registry_keys_are_written_only_by_their_own_service(world: World, who: str, service: str) -> None:
    # the review: fake auth/api entries made the proxy send /hub/ traffic (login passwords) elsewhere
    evil = RegistryEntry(service=service, replica="evil", url="http://127.0.0.1:9")
    assert await world.raw[who].try_publish(f"$KV.{NS}_registry.{service}.evil", evil.model_dump_json().encode())
    assert sorted(await world.bus["proxy"].registry.keys()) == ["api.b1", "auth.a1"]


# --- commands: the api and the culler send them, the spawner alone consumes them --------------------------


@pytest.mark.parametrize("who", ["proxy", "spawner", "auth", "events"])
@pytest.mark.parametrize("command", ["spawn", "stop"])
async def test_only_the_api_and_the_culler_send_commands(world: World, who: str, command: str) -> None:
    # the review: a stop command for bob's server was published by a stranger
    before = await world.cmd_messages()
    body = SpawnServer(user="bob", spawn_id="evil").model_dump_json().encode()
    assert await world.raw[who].try_publish(f"{NS}.cmd.{command}.bob._", body)
    assert await world.cmd_messages() == before


async def test_the_culler_may_send_a_stop_but_not_a_spawn(world: World) -> None:
    before = await world.cmd_messages()
    assert await world.raw["culler"].try_publish(f"{NS}.cmd.local.spawn.bob._")
    assert not await world.raw["culler"].try_publish(f"{NS}.cmd.local.stop.bob._", headers={"Nats-Msg-Id": "c1"})
    assert await world.cmd_messages() == before + 1


@pytest.mark.parametrize("who", [i for i in IDENTITIES if i != "spawner"])
async def test_nobody_but_the_spawner_pulls_commands(world: World, who: str) -> None:
    names = world.bus["api"].names
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{names.cmd_stream}.{spawner_durable('local')}"
    assert await world.raw[who].try_publish(subject, json.dumps({"batch": 1, "expires": 100_000_000}).encode())
    # nor bind a consumer of its own on the command stream
    assert await world.raw[who].try_publish(f"$JS.API.CONSUMER.DURABLE.CREATE.{names.cmd_stream}.mine")


# --- events: each type published only by the service that emits it -----------------------------------------

FOREIGN_EVENTS = [("auth", "server.ready"), ("proxy", "user.created"), ("culler", "server.stopped"),
                  ("spawner", "user.logged_in"), ("api", "server.ready"), ("auth", "activity.reported"),
                  ("spawner", "hub.shutdown"), ("proxy", "access.changed")]
FOREIGN_EVENTS += [("events", t) for t in ("server.ready", "user.created", "activity.reported", "hub.shutdown")]


@pytest.mark.parametrize(("who", "event"), FOREIGN_EVENTS)
async def test_an_event_is_published_only_by_its_service(world: World, who: str, event: str) -> None:
    before = await world.evt_last_seq()
    assert await world.raw[who].try_publish(f"{NS}.evt.{event}")
    assert await world.evt_last_seq() == before


# --- route acknowledgements: proxy nodes say what they serve, spawners listen ---------------------------


@pytest.mark.parametrize("who", [i for i in IDENTITIES if i != "proxy"])
async def test_only_a_proxy_node_acknowledges_routes(world: World, who: str) -> None:
    # a forged acknowledgement would make a spawner announce a server before the nodes serve it
    assert await world.raw[who].try_publish(applied_subject(NS))


@pytest.mark.parametrize("who", [i for i in IDENTITIES if i != "spawner"])
async def test_only_the_spawner_follows_route_acknowledgements(world: World, who: str) -> None:
    assert await world.raw[who].try_subscribe(applied_subject(NS))


# --- streams and buckets: the api alone changes them; nobody else deletes them --------------------------

STREAM_CHANGES = [(who, op, target) for who in IDENTITIES if who != "api"
                  for op in ("UPDATE", "DELETE", "PURGE") for target in ("evt", "cmd", "routes", "registry")]


@pytest.mark.parametrize(("who", "op", "target"), STREAM_CHANGES)
async def test_only_the_api_changes_a_stream_or_bucket(world: World, who: str, op: str, target: str) -> None:
    names = world.bus["api"].names
    stream = {"evt": names.evt_stream, "cmd": names.cmd_stream, "routes": f"KV_{names.routes_bucket}",
              "registry": f"KV_{names.registry_bucket}"}[target]
    before = await world.bus["api"].js.stream_info(stream)
    config = before.config.as_dict() | {"max_age": 1_000_000_000}  # 1 s: would age out every event
    assert await world.raw[who].try_publish(f"$JS.API.STREAM.{op}.{stream}", json.dumps(config).encode())
    after = await world.bus["api"].js.stream_info(stream)
    assert after.config.max_age == before.config.max_age and after.state.messages == before.state.messages


# --- inboxes: nobody reads another's replies -----------------------------------------------------------


@pytest.mark.parametrize("who", IDENTITIES)
async def test_nobody_subscribes_to_another_identitys_inbox(world: World, who: str) -> None:
    for other in IDENTITIES:
        if other != who:
            assert await world.raw[who].try_subscribe(f"{inbox_prefix(other)}.>"), other
    assert await world.raw[who].try_subscribe("_INBOX.>")  # nor to the default inbox of any client
    assert await world.raw[who].try_subscribe(">")


# --- the events identity: read-only, the events stream only ---------------------------------------------


async def test_the_events_identity_reads_nothing_but_the_events_stream(world: World) -> None:
    ev, names = world.raw["events"], world.bus["api"].names
    for subject in (f"$JS.API.DIRECT.GET.KV_{names.routes_bucket}.$KV.{NS}_routes.user.bob._",
                    f"$JS.API.STREAM.MSG.GET.KV_{names.routes_bucket}",
                    f"$JS.API.STREAM.INFO.KV_{names.registry_bucket}",
                    f"$JS.API.CONSUMER.CREATE.KV_{names.routes_bucket}",
                    f"$JS.API.STREAM.MSG.GET.{names.cmd_stream}",
                    f"$JS.API.CONSUMER.CREATE.{names.cmd_stream}"):
        assert await ev.try_publish(subject), subject
    for subject in (f"{NS}.cmd.>", f"{NS}.evt.>", f"$KV.{NS}_routes.>"):
        assert await ev.try_subscribe(subject), subject
    # nor touch the api's own durables (steal its activity, re-create or delete them)
    for durable in API_DURABLES:
        for subject in (f"$JS.API.CONSUMER.DELETE.{names.evt_stream}.{durable}",
                        f"$JS.API.CONSUMER.MSG.NEXT.{names.evt_stream}.{durable}",
                        f"$JS.API.CONSUMER.DURABLE.CREATE.{names.evt_stream}.{durable}"):
            assert await ev.try_publish(subject), subject
        assert (await world.bus["api"].js.consumer_info(names.evt_stream, durable)).name == durable


async def test_the_events_identity_consumes_events_with_a_durable_of_its_own(world: World) -> None:
    names = world.bus["api"].names
    await world.bus["api"].publish(SpawnServer(user="x", spawn_id="y"))  # a command: not for it
    await world.bus["api"].publish(UserCreated(name="carol"))
    js = world.raw["events"].nc.jetstream()
    sub = await js.pull_subscribe(events_filter(NS), durable="external-audit", stream=names.evt_stream)
    try:
        msgs = await sub.fetch(10, timeout=2)
        data = [json.loads(m.data) for m in msgs]
        assert any(d["type"] == "user.created" and d["data"]["name"] == "carol" for d in data)
        for m in msgs:
            await m.ack_sync()  # acknowledged by the server before the consumer is inspected
        info = await js.consumer_info(names.evt_stream, "external-audit")
        assert info.num_ack_pending == 0
    finally:
        await sub.unsubscribe()
    await js.delete_consumer(names.evt_stream, "external-audit")
    assert world.raw["events"].errors == []


# --- webhooks: the api delivers the configured ones; the events identity may not steal their events -------


async def test_only_the_api_binds_a_configured_webhooks_durable(world: World) -> None:
    evt = world.bus["api"].names.evt_stream
    durable = webhook_durable("audit")
    sub = await world.bus["api"].js.pull_subscribe(events_filter(NS), durable=durable, stream=evt)
    await sub.unsubscribe()
    for subject in (f"$JS.API.CONSUMER.MSG.NEXT.{evt}.{durable}", f"$JS.API.CONSUMER.DELETE.{evt}.{durable}",
                    f"$JS.API.CONSUMER.DURABLE.CREATE.{evt}.{durable}", f"$JS.ACK.{evt}.{durable}.1.1.1.1.1"):
        assert await world.raw["events"].try_publish(subject), subject
    # a webhook that is not configured has no durable the api may bind
    assert await world.raw["api"].try_publish(f"$JS.API.CONSUMER.DURABLE.CREATE.{evt}.{webhook_durable('other')}")
    assert (await world.bus["api"].js.consumer_info(evt, durable)).name == durable


# --- what each service does is allowed: the permissions fit the code ---------------------------------------


async def test_services_do_their_own_work_without_a_violation(world: World) -> None:
    def own_violations() -> list[str]:  # the services' buses (raw clients provoke violations on purpose)
        return [v for v in world.secure.violations() if ":test-" in v]

    before = own_violations()
    b = world.bus
    await b["spawner"].routes.put(route_key("carl"), BOB)
    await b["spawner"].routes.delete(route_key("carl"))
    assert route_key("bob") in await b["api"].routes.keys()
    assert set(await b["proxy"].registry.keys()) >= {"auth.a1", "api.b1"}
    await b["auth"].registry.delete("auth", "a1")
    await b["proxy"].publish(ActivityReported(node="n1"))
    await b["culler"].publish(StopServer(user="bob", reason="culler"))
    await b["auth"].publish(UserLoggedIn(name="bob", authenticator="password"))
    heard: list[RoutesApplied] = []
    sub = await b["spawner"].follow_applied(heard.append)
    await b["spawner"].nc.flush()
    await b["proxy"].publish_applied(RoutesApplied(node="n1", revision=7))
    await b["proxy"].nc.flush()
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.02)
    await sub.unsubscribe()
    assert heard == [RoutesApplied(node="n1", revision=7)]
    assert own_violations() == before


async def test_a_refused_write_is_logged_at_error_with_its_subject(world: World,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    caplog.set_level(logging.WARNING, "fleethub.shared.bus.connection")
    with pytest.raises((BusError, asyncio.TimeoutError)):
        await asyncio.wait_for(world.bus["proxy"].routes.put(route_key("bob"), BOB), 1.5)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"$kv.{NS}_routes.user.bob._" in r.getMessage().lower() for r in errors), caplog.text
    # and the server's own log names the identity and the subject
    assert any("Publish Violation" in v and f"$KV.{NS}_routes.user.bob._" in v and ":test-proxy" in v
               for v in world.secure.violations())
