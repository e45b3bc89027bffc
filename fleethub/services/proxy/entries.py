"""What a proxy node accepts from its KV buckets: a route or registry entry must agree with its own key.

Whoever can write a bucket could otherwise point `/user/alice/` at their own server (a `user.bob._` key
whose routespec is alice's), or `/hub/` at a listener of theirs. So a route's prefix must be the one its
key implies, a registry entry's service the one its key names, and every target a bare
`http://host:port` origin. An entry that fails is logged (WARNING, with its key) and not served.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from fleethub.shared.events import RegistryEntry, Route
from fleethub.shared.names import decode_token, parse_route_key, server_prefix, url_escape
from fleethub.shared.paths import has_dot_segment

HUB_SERVICES = ("auth", "api")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")  # `_`: container names


def check_origin(url: str) -> str:
    """`url` if it is a bare `http://host[:port]` origin (a trailing `/` allowed); IPv6 hosts in brackets.

    Raises:
        ValueError: another scheme, userinfo, a path, query or fragment, or a bad host or port.
    """
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("control character or space in target")
    parts = urlsplit(url)
    if parts.scheme != "http":  # nodes speak plain HTTP to upstreams
        raise ValueError(f"target is not http://host:port: {url[:200]!r}")
    if "@" in parts.netloc:
        raise ValueError("userinfo in target")
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        raise ValueError("target has a path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in target {url[:200]!r}") from None
    if port is not None and not 0 < port < 65536:  # no port: 80, as for any http URL
        raise ValueError(f"bad port in target {url[:200]!r}")
    host = parts.netloc.rsplit(":", 1)[0] if parts.netloc.endswith(f":{port}") else parts.netloc
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"bad IPv6 host in target {url[:200]!r}") from None
    elif not _HOSTNAME.match(host):
        raise ValueError(f"bad host in target {url[:200]!r}")
    return url


def implied_prefix(key: str) -> str:
    """The routespec a route key stands for: `user.<u>.<s>` → `/user/<u>/[<s>/]`, `service.<n>` →
    `/services/<n>/`, `path[.<seg>…]` (the route API's) → `/<seg>/…/` (or `/`).

    Raises:
        ValueError: a key of no known form, or one whose names do not decode.
    """
    kind, _, rest = key.partition(".")
    if kind == "user":
        user, server = parse_route_key(key)
        if not user:
            raise ValueError("empty user name in route key")
        prefix = server_prefix(user, server)
    elif kind == "service" and rest and "." not in rest:
        prefix = f"/services/{url_escape(decode_token(rest))}/"
    elif kind == "path":
        segments = [decode_token(tok) for tok in rest.split(".")] if rest else []
        if any(not seg or "/" in seg for seg in segments):
            raise ValueError("empty segment or '/' in route key")
        prefix = "/" + "".join(f"{seg}/" for seg in segments)
    else:
        raise ValueError("not a user, service or path route key")
    if has_dot_segment(prefix):
        raise ValueError("'.' or '..' segment in route key")
    return prefix


def check_route(key: str, route: Route) -> Route:
    """`route` if it may be served under `key`.

    Raises:
        ValueError: the key does not decode, the routespec is not the key's prefix, or the target is not
            a bare http origin.
    """
    prefix = implied_prefix(key)
    if route.routespec != prefix:
        raise ValueError(f"routespec {route.routespec[:200]!r} is not {prefix[:200]!r}, the prefix of its key")
    check_origin(route.target)
    return route


def check_registry(key: str, entry: RegistryEntry) -> RegistryEntry:
    """`entry` if it may be served under `key` (`<service>.<replica>`).

    Raises:
        ValueError: the key's service is not auth or api, the entry names another service or replica,
            or its URL is not a bare http origin.
    """
    service, _, token = key.partition(".")
    if service not in HUB_SERVICES:
        raise ValueError(f"registry key of unknown service {service[:50]!r}")
    if entry.service != service:
        raise ValueError(f"entry for {entry.service[:50]!r} under a key of {service!r}")
    if not token or "." in token or decode_token(token) != entry.replica:
        raise ValueError("entry's replica is not the one its key names")
    check_origin(entry.url)
    return entry
