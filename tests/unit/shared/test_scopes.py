"""The scope model: expansion, filters, intersection, who may grant what."""

from __future__ import annotations

import pytest

from fleethub.shared.scopes import (
    Scope,
    ScopeError,
    expand,
    grantable,
    held_for,
    intersect,
    owner_scopes,
    parse,
    render,
    scopes_of_roles,
    token_scopes,
    user_filter,
)


def test_parse() -> None:
    assert parse("read:users") == Scope("read:users")
    assert parse("servers!user=bob") == Scope("servers", "user", "bob")
    assert parse("access:servers!server=bob/") == Scope("access:servers", "server", "bob/")
    assert parse("users:activity!user", owner="bob") == Scope("users:activity", "user", "bob")
    assert parse("access:servers!server", owner="bob", server="bob/gpu") == Scope("access:servers", "server", "bob/gpu")
    for bad in ("nope", "all", "read:users!team=g", "read:users!user=", "servers!server=bob", "read:users!user",
                "read:users!", "custom:Thing", "custom:"):
        with pytest.raises(ScopeError):
            parse(bad)


def test_expansion_keeps_filters() -> None:
    got = render(expand([parse("servers!user=bob")]))
    assert got == ["delete:servers!user=bob", "read:servers!user=bob", "read:users:name!user=bob", "servers!user=bob",
                   "start:servers!user=bob"]
    # JupyterHub drops read:users:name under a server filter
    assert render(expand([parse("read:servers!server=bob/")])) == ["read:servers!server=bob/"]
    assert "read:users:activity" in render(expand([Scope("admin:users")]))


def test_users_and_admins() -> None:
    bob = owner_scopes("bob", False)
    assert all(s.kind == "user" and s.value == "bob" for s in bob)
    assert {"access:servers!user=bob", "start:servers!user=bob", "tokens!user=bob", "read:tokens!user=bob",
            "users:activity!user=bob", "read:users!user=bob"} <= set(render(bob))
    admin = owner_scopes("root", True)
    assert {"admin:users", "list:users", "proxy", "admin:server_state", "delete:users"} <= set(render(admin))


def test_filters_cover_resources() -> None:
    held = expand([parse("servers!user=bob"), parse("access:servers!server=carol/gpu")])
    assert held_for(held, "start:servers", "bob", "bob/") and held_for(held, "start:servers", "bob", "bob/x")
    assert held_for(held, "start:servers", "bob") and not held_for(held, "start:servers")
    assert not held_for(held, "start:servers", "bobby", "bobby/")
    assert held_for(held, "access:servers", "carol", "carol/gpu") and not held_for(held, "access:servers", "carol")
    assert not held_for(held, "access:servers", "carol", "carol/")
    assert held_for({Scope("proxy")}, "proxy") and held_for({Scope("proxy")}, "proxy", "anyone", "anyone/")
    assert user_filter(held, "start:servers") == {"bob"} and user_filter({Scope("list:users")}, "list:users") is None
    assert user_filter(held, "list:users") == set()


def test_tokens_never_hold_more_than_their_owner() -> None:
    bob = owner_scopes("bob", False)
    assert token_scopes(["inherit"], bob, "bob") == set(bob)
    assert token_scopes([], bob, "bob") == set()
    # an unfiltered scope narrows to what the owner holds
    assert render(token_scopes(["read:users"], bob, "bob")) == [
        "read:users!user=bob", "read:users:activity!user=bob", "read:users:groups!user=bob", "read:users:name!user=bob"]
    assert token_scopes(["admin:users!user=carol", "proxy", "garbage"], bob, "bob") == set()
    server = token_scopes(["users:activity!user", "access:servers!server=bob/"], bob, "bob")
    assert render(server) == ["access:servers!server=bob/", "read:users:activity!user=bob", "users:activity!user=bob"]
    assert intersect({Scope("x", "server", "bob/a")}, {Scope("x", "user", "bob")}) == {Scope("x", "server", "bob/a")}


def test_grantable() -> None:
    bob = owner_scopes("bob", False)
    assert grantable(["inherit"], "bob", [("user bob", bob)]) == ["inherit"]
    assert grantable(["read:users!user", "read:users!user=bob"], "bob", [("user bob", bob)]) == ["read:users!user=bob"]
    with pytest.raises(ScopeError, match="not held by user bob"):
        grantable(["read:users"], "bob", [("user bob", bob)])
    narrow = expand([parse("tokens!user=bob")])
    with pytest.raises(ScopeError, match="not held by the requester"):
        grantable(["servers!user=bob"], "bob", [("user bob", bob), ("the requester", narrow)])
    with pytest.raises(ScopeError):
        grantable(["nope"], "bob", [("user bob", bob)])
    assert scopes_of_roles(["token"]) == ["inherit"] and "servers!user" in scopes_of_roles(["user"])
    with pytest.raises(ScopeError):
        scopes_of_roles(["admin"])


def test_service_filters_cover_that_service_only() -> None:
    svc = parse("access:services!service=whoami")
    assert (svc.kind, svc.value) == ("service", "whoami")
    assert not svc.covers("whoami", None) and not svc.covers(None, "whoami/")
    admin = owner_scopes("root", True)
    token = token_scopes(["access:services!service=whoami", "read:users:name!user=root"], admin, "root")
    assert "access:services!service=whoami" in render(token)
    # a user without access:services keeps nothing of it, and a user filter never matches a service
    assert "access:services!service=whoami" not in render(token_scopes(["access:services!service=whoami"],
                                                                        owner_scopes("alice", False), "alice"))
    assert user_filter({svc, parse("read:users!user=bob")}, "read:users") == {"bob"}
    with pytest.raises(ScopeError):
        parse("access:services!service")


def test_group_filters_and_custom_scopes() -> None:
    held = {parse("read:groups!group=team"), parse("custom:data:read")}
    assert held_for(held, "read:groups", group="team") and not held_for(held, "read:groups", group="other")
    assert not held_for(held, "read:groups")  # a filtered scope is not hub-wide
    assert not held_for(held, "read:groups", user="team")  # a group filter names a group, not a user
    assert held_for(held, "custom:data:read")
    # a token's group-filtered scope is within its owner's only for the same group
    assert intersect({parse("read:groups!group=team")}, {parse("read:groups!group=team")}) == {
        parse("read:groups!group=team")}
    assert intersect({parse("read:groups!group=team")}, {parse("read:groups!group=other")}) == set()
    assert intersect({parse("read:groups!group=team")}, {parse("read:groups")}) == {parse("read:groups!group=team")}
    for bad in ("custom:Upper", "custom:a", "custom:ends-", "read:groups!group"):
        with pytest.raises(ScopeError):
            parse(bad)


def test_custom_subscopes_expand_with_their_filter() -> None:
    custom = {"custom:grades:write": ("custom:grades:read",), "custom:grades:read": ("custom:grades:list",)}
    held = expand({parse("custom:grades:write!group=course")}, custom)
    assert render(held) == ["custom:grades:list!group=course", "custom:grades:read!group=course",
                            "custom:grades:write!group=course"]
    assert render(expand({parse("custom:grades:write")})) == ["custom:grades:write"]  # without the hub's table
    # a token asking for the parent scope holds its subscopes too, within its owner's
    owner = frozenset(expand({parse("custom:grades:write")}, custom))
    assert render(token_scopes(["custom:grades:write"], owner, "ta", custom=custom)) == [
        "custom:grades:list", "custom:grades:read", "custom:grades:write"]
    assert render(token_scopes(["custom:grades:read"], owner, "ta", custom=custom)) == [
        "custom:grades:list", "custom:grades:read"]
