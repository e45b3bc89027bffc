"""The bus package's pure parts: its boundary (nothing else imports nats), error mapping, the declaration
table, batch headers and registry keys."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

import fleethub.shared.bus as bus_package
from fleethub.shared.bus import BusError, BusTimeout, Names, registry_key
from fleethub.shared.bus.kv import nats_errors
from fleethub.shared.bus.publish import _batch_headers
from fleethub.shared.bus.topology import REGISTRY_TTL, buckets, streams

FLEETHUB = Path(bus_package.__file__).resolve().parents[2]
BUS = FLEETHUB / "shared" / "bus"


def _imports_nats(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "nats" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "nats":
            return True
    return False


def test_only_the_bus_package_imports_nats() -> None:
    outside = [p.relative_to(FLEETHUB) for p in FLEETHUB.rglob("*.py") if BUS not in p.parents and _imports_nats(p)]
    assert outside == []
    assert _imports_nats(BUS / "connection.py")  # the scan does see an import


def test_bus_modules_stay_small_and_init_only_reexports() -> None:
    for path in BUS.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
    tree = ast.parse((BUS / "__init__.py").read_text())
    for node in tree.body[1:]:  # after the docstring: imports and __all__ only
        assert isinstance(node, ast.ImportFrom | ast.Assign), ast.dump(node)[:100]
    assert all(hasattr(bus_package, name) for name in bus_package.__all__)


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
