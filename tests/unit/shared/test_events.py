"""Event schemas: envelopes, subjects, validation, tolerance of unknown fields, exported docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleethub.shared.eventdocs import render
from fleethub.shared.events import (
    COMMANDS,
    EVENTS,
    ActivityReported,
    RouteActivity,
    ServerReady,
    SpawnServer,
    StopServer,
    UnknownMessage,
    backend_commands_filter,
    backend_token,
    subject_filter,
    subject_of,
    unwrap,
    utcnow,
    wrap,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_subjects_are_derived() -> None:
    spawn = SpawnServer(user="a.b", server_name="", spawn_id="s1")
    assert subject_of(spawn, "fh") == "fh.cmd.local.spawn.a_2Eb._"  # no backend named: the legacy one
    assert subject_of(StopServer(user="x", server_name="gpu", backend="batch"), "t1") == "t1.cmd.batch.stop.x.gpu"
    # a backend named by import path is one token
    plugin = SpawnServer(user="a", spawn_id="s1", backend="my.pkg:Spawner")
    assert subject_of(plugin, "fh").split(".")[2] == backend_token("my.pkg:Spawner") == "my_2Epkg_3ASpawner"
    assert subject_of(plugin, "fh").startswith(backend_commands_filter("fh", "my.pkg:Spawner")[:-1])
    ready = ServerReady(user="a", spawn_id="s", url="/user/a/", target="http://x")
    assert subject_of(ready, "fh") == "fh.evt.server.ready"
    assert subject_filter(SpawnServer, "fh") == "fh.cmd.*.spawn.*.*"


def test_round_trip_every_message_type() -> None:
    spawn = SpawnServer(user="alice", spawn_id="s1", user_options={"a": 1})
    env, msg = unwrap(wrap(spawn).model_dump_json().encode(), "cmd")
    assert msg == spawn and env.type == "spawn" and env.version == 1
    batch = ActivityReported(node="n1", routes=[RouteActivity(key="user.alice._", last_activity=utcnow(), requests=3)])
    _, again = unwrap(wrap(batch).model_dump_json().encode(), "evt")
    assert again == batch
    assert len({m.TYPE for m in (*COMMANDS, *EVENTS)}) == len(COMMANDS) + len(EVENTS)


def test_consumers_tolerate_unknown_fields() -> None:
    env = wrap(SpawnServer(user="alice", spawn_id="s1")).model_dump(mode="json")
    env["data"]["future_field"] = {"x": 1}
    env["extra_envelope_field"] = 1
    _, msg = unwrap(json.dumps(env).encode(), "cmd")
    assert isinstance(msg, SpawnServer) and msg.spawn_id == "s1"


def _envelope(kind: str, data: dict[str, str]) -> bytes:
    return json.dumps({"id": "1", "type": kind, "version": 1, "time": "2020-01-01T00:00:00Z", "data": data}).encode()


@pytest.mark.parametrize(
    "raw,kind",
    [
        (b"not json", "cmd"),
        (b"{}", "cmd"),
        (_envelope("nope", {}), "cmd"),
        (_envelope("spawn", {}), "cmd"),
        (_envelope("spawn", {"user": "a", "spawn_id": "s"}), "evt"),
    ],
)
def test_malformed_messages_are_rejected(raw: bytes, kind: str) -> None:
    with pytest.raises(UnknownMessage):
        unwrap(raw, kind)


def test_exported_schemas_are_current() -> None:
    for rel, content in render().items():
        path = DOCS / rel
        assert path.exists(), f"{path} missing: run python -m fleethub.shared.eventdocs"
        assert path.read_text() == content, f"{path} is stale: run python -m fleethub.shared.eventdocs"
