"""What a scope lets its holder do, in words, for the OAuth consent page (our own wording)."""

from __future__ import annotations

# a scope's name -> what a token holding it may do
WORDS: dict[str, str] = {
    "admin-ui": "use the admin panel",
    "admin:users": "create, change and delete users",
    "admin:auth_state": "read and change users' authentication state",
    "users": "change users and their activity",
    "read:users": "read users' models",
    "read:users:name": "know user names",
    "read:users:groups": "know which groups users are in",
    "read:users:activity": "read when users were last active",
    "list:users": "list users",
    "users:activity": "update users' activity",
    "delete:users": "delete users",
    "read:roles": "read role assignments",
    "read:roles:users": "read the roles of users",
    "read:roles:services": "read the roles of services",
    "read:roles:groups": "read the roles of groups",
    "admin:servers": "start, stop and change servers, including their state",
    "admin:server_state": "read and change servers' state",
    "servers": "start and stop servers",
    "read:servers": "read servers' models",
    "start:servers": "start servers",
    "delete:servers": "stop and delete servers",
    "access:servers": "use servers",
    "tokens": "create, read and revoke API tokens",
    "read:tokens": "read API tokens' models",
    "admin:groups": "create, change and delete groups",
    "groups": "change group memberships",
    "read:groups": "read groups' models",
    "read:groups:name": "know group names",
    "list:groups": "list groups",
    "delete:groups": "delete groups",
    "admin:services": "manage services",
    "list:services": "list services",
    "read:services": "read services' models",
    "read:services:name": "know service names",
    "access:services": "use services",
    "shares": "share servers and manage their shares",
    "read:shares": "read who servers are shared with",
    "users:shares": "manage the servers shared with users",
    "read:users:shares": "read the servers shared with users",
    "groups:shares": "manage the servers shared with groups",
    "read:groups:shares": "read the servers shared with groups",
    "read:hub": "read the hub's version and settings",
    "read:metrics": "read the hub's metrics",
    "proxy": "read and change the proxy's routes",
    "shutdown": "shut the hub down",
}
_KINDS = {"user": "the user", "server": "the server", "service": "the service", "group": "the members of the group"}


def describe(scope: str, custom: dict[str, str] | None = None) -> str:
    """`scope` in words (`custom`: the descriptions of a hub's custom scopes); a filter says whose (a bare one
    such as `!user`: the user's own). An unknown name is shown as it is."""
    name, bang, flt = scope.partition("!")
    known = (custom or {}).get(name) or WORDS.get(name)
    words = known[:1].upper() + known[1:] if known else name
    kind, _, value = flt.partition("=")
    if not bang or kind not in _KINDS:
        return words
    return f"{words} (only {_KINDS[kind]} {value})" if value else f"{words} (only yours)"
