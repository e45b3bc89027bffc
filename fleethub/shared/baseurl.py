"""`base_url`: the whole hub under a URL prefix such as `/jhub/` (JupyterHub's `c.JupyterHub.base_url`).

The hub's own apps (auth, api) keep their routes at `/hub/...`: `BasePrefix`, an ASGI middleware at their
edge, takes the prefix off every request path and puts it back on what leaves as a URL (`Location`, a
`next` in it, a cookie's `Path`). What an app writes into a body (pages, JSON fields that are URLs) it
prefixes itself with `public_path`. Routes on the bus stay unprefixed (`/user/alice/`); the proxy matches
them against the request path with the prefix taken off, and forwards the path unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")
# the hub's own top-level segments: a prefix named like one would make `/hub/…` ambiguous inside the apps
_RESERVED = ("hub", "user", "users", "services")


def check_base_url(value: str) -> str:
    """`value` as a base URL: a path starting and ending with `/` (a missing trailing `/` is added).

    Raises:
        ValueError: not a plain path (a scheme, host, query, fragment, `.`/`..`, an empty segment, a
            character other than letters, digits and `-._~`), or its first segment is one of the hub's own.
    """
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must be a URL path starting with '/', such as '/jhub/' (got {value!r})")
    if value == "/":
        return value
    segments = value.strip("/").split("/") if not value.startswith("//") else [""]
    for seg in segments:
        if seg in (".", "..") or not _SEGMENT.fullmatch(seg):
            raise ValueError(f"must be a plain path such as '/jhub/': segments of letters, digits and '-._~', "
                             f"no '.' or '..', no query or fragment (got {value!r})")
    if segments[0] in _RESERVED:
        raise ValueError(f"cannot start with /{segments[0]}/, a path of the hub itself (got {value!r})")
    return "/" + "/".join(segments) + "/"


BaseUrl = Annotated[str, AfterValidator(check_base_url)]
"""The type of the `base_url` setting."""


def root(base_url: str) -> str:
    """`base_url` without its trailing slash: `/jhub` for `/jhub/`, `` for `/` (what paths are glued to)."""
    return base_url.rstrip("/")


def public_path(base_url: str, path: str) -> str:
    """The public form of one of the hub's own paths (`/hub/home` → `/jhub/hub/home`); a path already
    under the prefix, or anything that is not a path, is returned as it is."""
    prefix = root(base_url)
    if not prefix or not path.startswith("/") or path.startswith("//") or under(base_url, path):
        return path
    return prefix + path


def under(base_url: str, path: str) -> bool:
    """Whether `path` is inside the prefix (`/jhub`, `/jhub/…`)."""
    prefix = root(base_url)
    return not prefix or path == prefix or path.startswith(prefix + "/")


def inner_path(base_url: str, path: str) -> str | None:
    """`path` with the prefix taken off (`/jhub/hub/home` → `/hub/home`), None when outside it."""
    if not under(base_url, path):
        return None
    return path[len(root(base_url)):] or "/"


def public_location(base_url: str, location: str) -> str:
    """A redirect target as the browser must see it: the path prefixed and, when its query carries a
    `next` that is one of the hub's own paths, that too."""
    if not root(base_url) or not location.startswith("/") or location.startswith("//"):
        return location
    parts = urlsplit(location)
    query = parts.query
    if "next=" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, public_path(base_url, v) if k == "next" else v) for k, v in pairs],
                          quote_via=quote, safe="/")
    return urlunsplit(("", "", public_path(base_url, parts.path), query, parts.fragment))


def inner_next(base_url: str, value: str) -> str | None:
    """A `next` as the apps take it: a path under the prefix without it; None (refused: the page goes to its
    default) for a URL whose path is outside the prefix, so a `next` never leaves it. An absolute URL under
    the prefix stays as it is (its host is checked by `validate_next`)."""
    if not value or not root(base_url):
        return value
    parts = urlsplit(value)
    if not under(base_url, parts.path or "/") or (not parts.netloc and not value.startswith("/")):
        return None
    if not parts.scheme and not parts.netloc:
        return inner_path(base_url, value) or "/"
    return value


def _inner_query(base_url: str, query: bytes) -> bytes:
    """The query with its `next` taken into the apps' form (`inner_next`), dropped when refused."""
    if b"next=" not in query:
        return query
    out: list[tuple[str, str]] = []
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "next":
            inner = inner_next(base_url, value)
            if inner is None:
                continue
            value = inner
        out.append((key, value))
    return urlencode(out, quote_via=quote, safe="/").encode("latin-1")


def _cookie_path(base_url: str, header: bytes) -> bytes:
    parts = header.split(b";")
    for i, part in enumerate(parts):
        name, sep, value = part.strip().partition(b"=")
        if sep and name.lower() == b"path":
            parts[i] = b" Path=" + public_path(base_url, value.decode("latin-1")).encode("latin-1")
    return b";".join(parts)


# a replica's liveness and readiness probes stay at the root, as on the ops listeners: a probe is configured
# per replica, not per hub (`fleethub.shared.health.probe_router`)
PROBE_PATHS = frozenset({"/health/live", "/health/ready"})


class BasePrefix:
    """ASGI middleware: serves an app made for `/` under `base_url` (see the module's docstring).

    A request outside the prefix is answered 404 here; the app never sees it.
    """

    def __init__(self, app: ASGIApp, base_url: str) -> None:
        self.app = app
        self.base_url = base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.base_url == "/" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        inner = inner_path(self.base_url, scope["path"])
        if inner is None:
            await _outside(self.base_url, send, websocket=scope["type"] == "websocket")
            return
        outer, scope = scope, dict(scope)
        scope["path"] = inner
        raw, prefix = scope.get("raw_path"), root(self.base_url).encode("ascii")
        if raw is not None and raw.startswith(prefix):
            scope["raw_path"] = raw[len(prefix):] or b"/"
        elif raw is not None:  # the prefix %-encoded as sent: no raw form to keep (raw_path is optional)
            del scope["raw_path"]
        scope["query_string"] = _inner_query(self.base_url, scope.get("query_string", b""))
        host = next((v.decode("latin-1") for n, v in scope.get("headers", ()) if n == b"host"), "")

        async def send_public(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        location = _own_origin_path(value.decode("latin-1"), host)
                        value = public_location(self.base_url, location).encode("latin-1")
                    elif name.lower() == b"set-cookie":
                        value = _cookie_path(self.base_url, value)
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_public)
        finally:  # the matched route, for middleware in front that names the handler (request metrics)
            if "route" in scope:
                outer["route"] = scope["route"]


def _own_origin_path(location: str, host: str) -> str:
    """An absolute `location` on the request's own host as a path (`http://h/hub/api/users` → `/hub/api/users`),
    so it is prefixed like any other: the router's trailing-slash redirect names the inner path, absolute,
    on whatever host the request named. Any other location is returned as it is."""
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not host or parts.netloc.lower() != host.lower():
        return location
    return urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))


async def _outside(base_url: str, send: Send, *, websocket: bool) -> None:
    if websocket:
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"status": 404, "message": f"Not found: the hub is served under {base_url}"}).encode()
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
