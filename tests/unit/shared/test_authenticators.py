"""Authenticators without a database: choice by name, the dummy one, name checks, allow/block lists."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

from fleethub.shared.authenticators import (
    ENTRY_POINT_GROUP,
    DummyAuthenticator,
    PasswordAuthenticator,
    allowed,
    load_authenticator,
)
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import load_settings


class _NoSession:
    """Any use of the database is a failure: these paths must decide without it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"database used: {name}")


def test_the_entry_points_name_the_shared_classes() -> None:
    found = {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found["password"] is PasswordAuthenticator and found["dummy"] is DummyAuthenticator


def test_chosen_by_name_through_entry_points() -> None:
    assert isinstance(load_authenticator(load_settings(None)), PasswordAuthenticator)
    dummy = load_settings(None, auth={"authenticator": "dummy", "dummy_password": "long-enough"})
    assert isinstance(load_authenticator(dummy), DummyAuthenticator)
    with pytest.raises(ConfigError, match="unknown authenticator 'ldapx'"):
        load_authenticator(load_settings(None, auth={"authenticator": "ldapx"}))


async def test_dummy_authenticator() -> None:
    auth = DummyAuthenticator(load_settings(None, auth={"authenticator": "dummy", "dummy_password": "long-enough"}))
    session: Any = _NoSession()
    assert await auth.authenticate(session, "Alice", "long-enough") == "alice"
    assert await auth.authenticate(session, " Alice ", "long-enough") is None  # refused, as JupyterHub does
    assert await auth.authenticate(session, "alice", "long-enougH") is None
    assert await auth.authenticate(session, "alice", "") is None
    assert await auth.authenticate(session, "a/b", "long-enough") is None
    assert await auth.authenticate(session, "", "long-enough") is None


async def test_password_authenticator_refuses_bad_names_without_a_lookup() -> None:
    auth = PasswordAuthenticator(load_settings(None))
    for name in ("", "a b", "a/b", "x" * 256, "a\x00b", "..", "%2e%2e", "a\u200db", " alice"):
        assert await auth.authenticate(_NoSession(), name, "whatever-password") is None  # type: ignore[arg-type]


def test_allow_and_block_lists() -> None:
    s = load_settings(None, auth={"blocked_users": ["Mallory"], "admin_users": ["root"]})
    assert allowed(s, "alice") and not allowed(s, "mallory") and allowed(s, "root")
    s = load_settings(None, auth={"allowed_users": ["bob"], "admin_users": ["root"], "blocked_users": ["root"]})
    assert allowed(s, "bob") and not allowed(s, "alice") and not allowed(s, "root")  # blocked beats admin
    s = load_settings(None, auth={"allowed_users": ["bob"], "admin_users": ["root"]})
    assert allowed(s, "root")
