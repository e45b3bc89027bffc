"""The local backend never plans one port for two servers, although the kernel may name the same free port
twice while nothing listens on it yet (a storm: two servers planned one port, one could not bind it, and
its readiness check was answered by the other's server)."""

from __future__ import annotations

import itertools
import time

import pytest

from fleethub.services.spawner.backends import local
from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.shared.names import server_prefix
from fleethub.shared.settings import load_settings


def _spec(user: str) -> ServerSpec:
    return ServerSpec(user=user, server_name="", spawn_id=f"spawn-{user}", prefix=server_prefix(user, ""), env={})


def test_a_port_the_kernel_names_again_is_not_planned_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    named = iter([41001, 41001, 41001, 41002, 41001, 41003])  # what the kernel answered, port 0 bound each time
    monkeypatch.setattr(local, "free_port", lambda ip: next(named))
    backend = local.LocalBackend(load_settings(None))
    ports = [backend.identity(_spec(user))["port"] for user in ("alice", "bob", "carol")]
    assert ports == [41001, 41002, 41003]


def test_a_planned_port_is_free_again_after_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "free_port", lambda ip: 41001)
    clock = itertools.count(1000.0, local.PORT_HOLD + 1)
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    backend = local.LocalBackend(load_settings(None))
    assert backend.identity(_spec("alice"))["port"] == 41001
    assert backend.identity(_spec("bob"))["port"] == 41001  # alice's server has long bound it, or failed


def test_no_port_left_to_plan_is_an_error_naming_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "free_port", lambda ip: 41001)
    backend = local.LocalBackend(load_settings(None))
    backend.identity(_spec("alice"))
    with pytest.raises(OSError, match=r"127\.0\.0\.1"):
        backend.identity(_spec("bob"))
