"""JupyterHub's scopes, as far as the api needs them today: expansion, filters, intersection, checks.

Pure functions over strings (no I/O). A scope is `name` or `name!kind=value` with kind `user`,
`server` (`user/server`) or `service`; a `user=u` filter covers u's servers too. Roles are fixed
until full RBAC: every user holds `self`, admins also the `admin` role; a token holds its own
scopes intersected with its owner's (`inherit` = all of the owner's).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

SUBSCOPES: dict[str, tuple[str, ...]] = {
    "admin:users": ("admin:auth_state", "users", "read:roles:users", "delete:users"),
    "users": ("read:users", "list:users", "users:activity"),
    "read:users": ("read:users:name", "read:users:groups", "read:users:activity"),
    "list:users": ("read:users:name",),
    "users:activity": ("read:users:activity",),
    "read:roles": ("read:roles:users", "read:roles:services", "read:roles:groups"),
    "admin:servers": ("admin:server_state", "servers"),
    # JupyterHub 6 split `start:servers` out of `servers`; a 5.x token with `servers` still starts
    "servers": ("read:servers", "start:servers", "delete:servers"),
    "read:servers": ("read:users:name",),
    "tokens": ("read:tokens",),
    "admin:groups": ("groups", "read:roles:groups", "delete:groups"),
    "groups": ("read:groups", "list:groups"),
    "read:groups": ("read:groups:name",),
    "list:groups": ("read:groups:name",),
    "admin:services": ("list:services", "read:services", "read:roles:services"),
    "list:services": ("read:services:name",),
    "read:services": ("read:services:name",),
    "shares": ("access:servers", "read:shares", "users:shares", "groups:shares"),
    "users:shares": ("read:users:shares",),
    "groups:shares": ("read:groups:shares",),
}
_LEAVES = {"admin-ui", "read:hub", "access:servers", "access:services", "proxy", "shutdown", "read:metrics"}
KNOWN: frozenset[str] = frozenset(SUBSCOPES) | {s for subs in SUBSCOPES.values() for s in subs} | _LEAVES

ADMIN_ROLE = (
    "admin-ui", "admin:users", "admin:servers", "admin:services", "tokens", "admin:groups", "list:services",
    "read:services", "read:hub", "proxy", "shutdown", "access:services", "access:servers", "read:roles",
    "read:metrics", "shares",
)
SELF = ("read:users", "users:shares", "read:shares", "users:activity", "servers", "tokens", "access:servers")
SERVER_ROLE = ("users:activity!user", "access:servers!server")
TOKEN_ROLE = ("inherit",)


CUSTOM_SCOPE = re.compile(r"^custom:[a-z0-9][a-z0-9_\-\*:]+[a-z0-9_\*]$")


class ScopeError(ValueError):
    """A scope string that is malformed or unknown."""


@dataclass(frozen=True)
class Scope:
    """One parsed scope: a name and an optional filter (`kind`, `value`)."""

    name: str
    kind: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.kind is None else f"{self.name}!{self.kind}={self.value}"

    def covers(self, user: str | None, server: str | None, group: str | None = None,
               service: str | None = None) -> bool:
        """Whether this (held) scope applies to a resource: hub-wide (all None), user `user`, server
        `server` (`"u/s"`, with `user` = u), group `group` or service `service`.

        A `user=u` filter covers u's servers; a `group=g` filter covers the group itself here, and its
        members through the `user=` scopes `expand_groups` derives from it.
        """
        if self.kind is None:
            return True
        if self.kind == "service":
            return service == self.value
        if self.kind == "group":
            return group == self.value
        if self.kind == "user":
            owner = user if user is not None else server.split("/", 1)[0] if server is not None else None
            return owner == self.value
        return server is not None and server == self.value


def parse(text: str, owner: str | None = None, server: str | None = None, service: str | None = None) -> Scope:
    """Parse `name[!kind[=value]]`; bare `!user` / `!server` / `!service` resolve to `owner` / `server` /
    `service`.

    Raises:
        ScopeError: unknown name or filter kind, or a bare filter with nothing to resolve it to.
    """
    name, bang, flt = text.partition("!")
    if name not in KNOWN and not CUSTOM_SCOPE.match(name):
        raise ScopeError(f"unknown scope {name!r}")
    if not bang:
        return Scope(name)
    kind, eq, value = flt.partition("=")
    if kind not in ("user", "server", "service", "group"):
        raise ScopeError(f"unsupported filter {flt!r} in scope {text!r}")
    if not eq:
        value = {"user": owner, "server": server, "service": service}.get(kind) or ""
        if not value:
            raise ScopeError(f"bare filter !{kind} in {text!r} has nothing to refer to")
    if not value or (kind == "server" and "/" not in value):
        raise ScopeError(f"bad filter value in scope {text!r}")
    return Scope(name, kind, value)


# a hub's `[custom_scopes]` subscopes: custom scope name -> the custom scopes it includes
CustomSubscopes = Mapping[str, Sequence[str]]


def allowed_scope_problem(text: str, declared_custom: AbstractSet[str]) -> str | None:
    """Why `text` can not be an OAuth client's allowed scope (None: it can). Bare filters (`!user`,
    `!server`, `!service`) are fine there: they refer to whoever the token is issued for."""
    if text in ("inherit", "identify", "self"):
        return None
    try:
        scope = parse(text, owner="user", server="user/server", service="service")
    except ScopeError as exc:
        return str(exc)
    if scope.name.startswith("custom:") and scope.name not in declared_custom:
        return f"custom scope {scope.name!r} is not declared in [custom_scopes]"
    return None


def expand(scopes: Iterable[Scope], custom: CustomSubscopes | None = None) -> set[Scope]:
    """Every scope implied by `scopes`, each subscope keeping its parent's filter (`custom`: the hub's
    custom scopes' subscopes)."""
    out: set[Scope] = set()
    todo = list(scopes)
    while todo:
        s = todo.pop()
        if s in out:
            continue
        out.add(s)
        subs = SUBSCOPES.get(s.name) or (custom.get(s.name, ()) if custom else ())
        for sub in subs:
            if sub == "read:users:name" and s.kind == "server":
                continue  # JupyterHub drops it under a server filter: a server does not name its owner
            todo.append(Scope(sub, s.kind, s.value))
    return out


def _within(inner: Scope, outer: Scope) -> bool:
    """Whether everything `inner` grants is granted by `outer` (same name, wider or equal filter)."""
    if inner.name != outer.name:
        return False
    if outer.kind is None:
        return True
    if inner.kind is None:
        return False
    if outer.kind in ("service", "group") or inner.kind in ("service", "group"):
        return inner.kind == outer.kind and inner.value == outer.value
    if outer.kind == "user":
        user = inner.value if inner.kind == "user" else (inner.value or "").split("/", 1)[0]
        return user == outer.value
    return inner.kind == "server" and inner.value == outer.value


def intersect(a: AbstractSet[Scope], b: AbstractSet[Scope]) -> set[Scope]:
    """Scopes held under both `a` and `b` (a filtered scope is the narrower of a pair)."""
    out = {s for s in a if any(_within(s, t) for t in b)}
    out |= {t for t in b if any(_within(t, s) for s in a)}
    return out


@functools.lru_cache(maxsize=4096)
def owner_scopes(user: str | None, admin: bool) -> frozenset[Scope]:
    """A principal's scopes from the default roles: `self` for a user (None: a service, which has no
    `self`), plus the `admin` role for admins."""
    held = [Scope(s, "user", user) for s in SELF] if user is not None else []
    if admin:
        held += [Scope(s) for s in ADMIN_ROLE]
    return frozenset(expand(held))


def parse_held(texts: Iterable[str], user: str | None = None, service: str | None = None) -> list[Scope]:
    """The scopes of a role or token: bare filters resolved to its `user` or `service` owner, `self`
    expanded for a user; `inherit`, `identify` and scopes this hub does not know grant nothing here."""
    parsed: list[Scope] = []
    for text in texts:
        if text in ("inherit", "identify"):
            continue
        if text == "self":
            parsed += [Scope(s, "user", user) for s in SELF] if user is not None else []
            continue
        try:
            parsed.append(parse(text, owner=user, service=service))
        except ScopeError:
            continue
    return parsed


def token_scopes(stored: Iterable[str], owner: AbstractSet[Scope], user: str | None,
                 service: str | None = None, custom: CustomSubscopes | None = None) -> set[Scope]:
    """A token's effective scopes: its own (bare filters resolved to its owner) within its owner's."""
    stored = list(stored)
    if "inherit" in stored:
        return set(owner)
    return intersect(expand(parse_held(stored, user, service), custom), owner)


def render(scopes: Iterable[Scope]) -> list[str]:
    """Sorted strings, as `GET /hub/api/user` reports them."""
    return sorted(str(s) for s in scopes)


def held_for(held: AbstractSet[Scope], name: str, user: str | None = None, server: str | None = None,
             group: str | None = None, service: str | None = None) -> bool:
    """Whether `name` is held for the resource (hub-wide when all are None)."""
    return any(s.name == name and s.covers(user, server, group, service) for s in held)


def held_anywhere(held: AbstractSet[Scope], name: str) -> bool:
    """Whether `name` is held at all, for some resource."""
    return any(s.name == name for s in held)


def user_filter(held: AbstractSet[Scope], name: str) -> set[str] | None:
    """For list endpoints: None if `name` is held hub-wide, else the user names it is held for (a
    `server=u/s` filter names u)."""
    users = name_filter(held, name, "user")
    if users is None:
        return None
    return users | {value.split("/", 1)[0] for value in name_filter(held, name, "server") or ()}


def name_filter(held: AbstractSet[Scope], name: str, kind: str) -> set[str] | None:
    """For list endpoints: None if `name` is held hub-wide, else the values of its `kind` filters
    ("user", "server", "group" or "service") it is held with."""
    names: set[str] = set()
    for s in held:
        if s.name != name:
            continue
        if s.kind is None:
            return None
        if s.kind == kind and s.value:
            names.add(s.value)
    return names


ROLE_SCOPES: dict[str, tuple[str, ...]] = {"token": TOKEN_ROLE, "user": tuple(f"{s}!user" for s in SELF)}


def scopes_of_roles(roles: Iterable[str]) -> list[str]:
    """The scopes of the roles a token may be given by name (JupyterHub's deprecated `roles` field).

    Raises:
        ScopeError: a role this hub does not define for tokens.
    """
    out: list[str] = []
    for role in roles:
        if role not in ROLE_SCOPES:
            raise ScopeError(f"Role {role!r} does not exist or can not be given to a token")
        out.extend(ROLE_SCOPES[role])
    return out


def grantable(requested: Iterable[str], owner: str, holders: Iterable[tuple[str, AbstractSet[Scope]]]) -> list[str]:
    """The scopes to store on a new token of `owner` (bare filters resolved), each within every holder's.

    `inherit` is kept as is: it always means the owner's own scopes.

    Raises:
        ScopeError: an unknown scope, or one that a holder (the owner, the requester) does not hold.
    """
    out: list[str] = []
    holders = list(holders)
    for text in requested:
        if text == "inherit":
            out.append(text)
            continue
        scope = parse(text, owner=owner)
        for who, held in holders:
            if not any(_within(scope, h) for h in held):
                raise ScopeError(f"Not assigning requested scope {text}: not held by {who}")
        if str(scope) not in out:
            out.append(str(scope))
    return out
