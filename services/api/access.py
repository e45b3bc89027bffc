"""Who may do what, until full RBAC: admins everything, users their own resources, server tokens little.

Answers follow JupyterHub: a scope held only for other resources hides the target (404); a scope not
held at all is a 403 naming the scopes that would do.
"""

from __future__ import annotations

from shared.errors import Forbidden, NotFound
from shared.identity import Identity


def _denied(scopes: list[str]) -> Forbidden:
    return Forbidden(f"Action is not authorized with current scopes; requires any of {scopes}")


def require_admin(ident: Identity, scope: str) -> None:
    """Hub-wide actions (listing or creating users, the proxy table)."""
    if ident.admin and ident.token_kind != "server":
        return
    raise _denied([scope])


def require_user_access(ident: Identity, user_name: str, scope: str) -> None:
    """Actions on one user's resources: that user (with a full token or cookie) or an admin."""
    if ident.token_kind == "server":
        raise _denied([scope])
    if ident.admin or ident.name == user_name:
        return
    raise NotFound("No access to resources or resources not found")


def scopes_of(ident: Identity) -> list[str]:
    """The request's expanded scopes, as `GET /hub/api/user` reports them."""
    u = ident.name
    if ident.token_kind == "server":
        return sorted(ident.token_scopes) or [f"users:activity!user={u}"]
    own = [
        f"access:servers!user={u}", f"delete:servers!user={u}", f"read:servers!user={u}", f"read:tokens!user={u}",
        f"read:users!user={u}", f"read:users:activity!user={u}", f"read:users:groups!user={u}",
        f"read:users:name!user={u}", f"servers!user={u}", f"start:servers!user={u}", f"tokens!user={u}",
        f"users:activity!user={u}",
    ]
    if not ident.admin:
        return sorted(own)
    admin = [
        "access:servers", "access:services", "admin-ui", "admin:auth_state", "admin:groups", "admin:server_state",
        "admin:servers", "admin:services", "admin:users", "delete:groups", "delete:servers", "delete:users",
        "groups", "list:groups", "list:services", "list:users", "proxy", "read:groups", "read:groups:name",
        "read:hub", "read:metrics", "read:roles", "read:roles:groups", "read:roles:services", "read:roles:users",
        "read:servers", "read:services", "read:services:name", "read:tokens", "read:users", "read:users:activity",
        "read:users:groups", "read:users:name", "servers", "shares", "shutdown", "start:servers", "tokens",
        "users", "users:activity",
    ]
    return sorted(set(admin) | set(own))
