"""Authenticators without a database: choice by name, the dummy one, name checks, allow/block lists."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

from fleethub.shared.authenticators import (
    ENTRY_POINT_GROUP,
    Authenticator,
    AuthUser,
    DummyAuthenticator,
    PasswordAuthenticator,
    decide,
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
    with pytest.raises(ConfigError, match=r"unknown authenticator 'ldapx'; known: .*github.*ldap.*oauth.*pam"):
        load_authenticator(load_settings(None, auth={"authenticator": "ldapx"}))


async def test_dummy_authenticator() -> None:
    auth = DummyAuthenticator(load_settings(None, auth={"authenticator": "dummy", "dummy_password": "long-enough"}))
    session: Any = _NoSession()
    assert await auth.authenticate(session, "Alice", "long-enough") == AuthUser("alice")
    assert await auth.authenticate(session, " Alice ", "long-enough") is None  # refused, as JupyterHub does
    assert await auth.authenticate(session, "alice", "long-enougH") is None
    assert await auth.authenticate(session, "alice", "") is None
    assert await auth.authenticate(session, "a/b", "long-enough") is None
    assert await auth.authenticate(session, "", "long-enough") is None


async def test_password_authenticator_refuses_bad_names_without_a_lookup() -> None:
    auth = PasswordAuthenticator(load_settings(None))
    for name in ("", "a b", "a/b", "x" * 256, "a\x00b", "..", "%2e%2e", "a\u200db", " alice"):
        assert await auth.authenticate(_NoSession(), name, "whatever-password") is None  # type: ignore[arg-type]


def _allowed(settings: Any, name: str, *, exists: bool = False, cls: type[Authenticator] = Authenticator,
             **user: Any) -> bool:
    return decide(cls(settings), AuthUser(name, **user), exists=exists).allowed


def test_allow_and_block_lists() -> None:
    # JupyterHub 5: without an allow rule, nobody but the admins
    s = load_settings(None, auth={"blocked_users": ["Mallory"], "admin_users": ["root"]})
    assert not _allowed(s, "alice") and not _allowed(s, "mallory") and _allowed(s, "root")
    assert not _allowed(s, "alice", exists=True)  # allow_existing_users defaults to false without allowed_users
    s = load_settings(None, auth={"allowed_users": ["bob"], "admin_users": ["root"], "blocked_users": ["root"]})
    assert _allowed(s, "bob") and not _allowed(s, "alice") and not _allowed(s, "root")  # blocked beats admin
    assert _allowed(s, "alice", exists=True)  # with allowed_users, existing users are allowed (JupyterHub 5)
    s = load_settings(None, auth={"allowed_users": ["bob"], "allow_existing_users": False})
    assert not _allowed(s, "alice", exists=True)
    s = load_settings(None, auth={"allow_all": True, "blocked_users": ["eve"]})
    assert _allowed(s, "anyone") and not _allowed(s, "eve")


def test_dummy_and_password_defaults() -> None:
    dummy = {"authenticator": "dummy", "dummy_password": "long-enough"}
    assert _allowed(load_settings(None, auth=dummy), "anyone", cls=DummyAuthenticator)  # allow_all by default
    s = load_settings(None, auth={**dummy, "allowed_users": ["bob"]})
    assert not _allowed(s, "anyone", cls=DummyAuthenticator) and _allowed(s, "bob", cls=DummyAuthenticator)
    s = load_settings(None, auth={**dummy, "allow_all": False})
    assert not _allowed(s, "anyone", cls=DummyAuthenticator)
    # an approved password account is an allow rule of its own; the block list still wins
    s = load_settings(None, auth={"blocked_users": ["eve"]})
    assert _allowed(s, "alice", cls=PasswordAuthenticator, allowed=True)
    assert not _allowed(s, "eve", cls=PasswordAuthenticator, allowed=True)


def test_groups_decide_access_and_admin() -> None:
    s = load_settings(None, auth={"allowed_groups": ["staff"], "admin_groups": ["ops"], "admin_users": ["root"]})
    a = Authenticator(s)
    assert decide(a, AuthUser("x", groups=["staff"]), exists=False) .allowed
    assert not decide(a, AuthUser("x", groups=["guests"]), exists=False).allowed
    v = decide(a, AuthUser("x", groups=["ops"]), exists=False)
    assert v.allowed and v.admin is True
    # with admin groups configured, someone outside them is no admin (unless in admin_users)
    assert decide(a, AuthUser("x", groups=["staff"]), exists=False).admin is False
    assert decide(a, AuthUser("root", groups=[]), exists=False).admin is True
    # an authenticator that knows no groups leaves the admin flag alone
    assert decide(a, AuthUser("x", allowed=True), exists=False).admin is None
