"""The bus package's pure parts: error mapping, the declaration table, batch headers and registry keys (its
boundary, nothing else importing nats, is checked by tests/unit/test_layout.py)."""

from __future__ import annotations

import asyncio

import pytest

from fleethub.shared.bus import BusError, BusTimeout, Names, registry_key
from fleethub.shared.bus.kv import nats_errors
from fleethub.shared.bus.publish import _batch_headers
from fleethub.shared.bus.topology import REGISTRY_TTL, buckets, streams


def test_nats_errors_become_ours() -> None:
    with pytest.raises(BusTimeout) as timeout, nats_errors("put x"):
        raise TimeoutError  # nats' own TimeoutError subclasses it
    # still a timeout (an OSError) for callers that handle one as such, and a 503 where rendered
    assert isinstance(timeout.value, TimeoutError | OSError) and timeout.value.status == 503
    assert str(timeout.value).startswith("put x: ")
    with pytest.raises(BusError) as other, nats_errors("get y"):
        raise RuntimeError("no responders")
    assert not isinstance(other.value, TimeoutError) and str(other.value) == "get y: no responders"
    ours = BusError("not connected")
    with pytest.raises(BusError) as same, nats_errors("z"):
        raise ours
    assert same.value is ours
    with pytest.raises(asyncio.CancelledError), nats_errors("w"):
        raise asyncio.CancelledError


def test_declaration_table() -> None:
    names = Names("t1")
    cmd, evt = streams(names)
    assert (cmd.name, cmd.subjects, evt.name, evt.subjects) == ("T1_CMD", ["t1.cmd.>"], "T1_EVENTS", ["t1.evt.>"])
    assert cmd.allow_atomic and evt.allow_atomic and cmd.duplicate_window == evt.duplicate_window == 120.0
    routes, registry = buckets(names)
    assert (routes.bucket, routes.ttl) == ("t1_routes", None)
    assert (registry.bucket, registry.ttl) == ("t1_registry", REGISTRY_TTL)


def test_batch_headers_commit_on_the_last_message_only() -> None:
    assert _batch_headers("b1", 1, 3, "m1") == {"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "1", "Nats-Msg-Id": "m1"}
    assert "Nats-Batch-Commit" not in _batch_headers("b1", 2, 3, "m2")
    assert _batch_headers("b1", 3, 3, "m3")["Nats-Batch-Commit"] == "1"


def test_registry_keys() -> None:
    assert registry_key("api", "api-1f") == "api.api-1f"
    assert registry_key("auth", "a.b") == "auth.a_2Eb"  # a replica id never adds a key segment
