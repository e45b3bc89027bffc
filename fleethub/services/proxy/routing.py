"""Where one request goes: a user route, an auth or api replica, or an answer from the proxy itself."""

from __future__ import annotations

from dataclasses import dataclass

from fleethub.services.proxy.replicas import Replicas
from fleethub.services.proxy.table import Origin, RouteTable
from fleethub.shared.baseurl import inner_path

# served by auth replicas; every other /hub/ path is served by api replicas
AUTH_PREFIXES = ("/hub/login", "/hub/logout", "/hub/signup", "/hub/change-password", "/hub/oauth_login",
                 "/hub/oauth_callback", "/hub/api/oauth2/")


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to `origin`."""

    origin: Origin
    route_key: str | None = None  # the user route it matched (activity is counted per route)
    service: str | None = None  # the registry service it was chosen from (a failed replica is retried once)


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the request from the proxy: a redirect to `location`, a JSON `body`, or an error."""

    status: int
    message: str
    location: bytes | None = None
    body: bytes | None = None  # a complete JSON document (the health check)


HEALTH_PATH = "/_chp_healthz"  # configurable-http-proxy's health check, answered by the node itself
HEALTHY = Answer(200, "", body=b'{"status": "OK"}')
LOADING = Answer(503, "The proxy is loading its route table; try again in a moment.")


def hub_service(path: str) -> str:
    """`auth` or `api`: the service that serves a `/hub/` path (prefixes match whole segments)."""
    if path.startswith(AUTH_PREFIXES):
        for prefix in AUTH_PREFIXES:
            if path.startswith(prefix) and (
                prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"
            ):
                return "auth"
    return "api"


def _replica(replicas: Replicas, service: str) -> Forward | Answer:
    origin = replicas.choose(service)
    if origin is None:
        return Answer(503, f"No {service} service is available right now; try again shortly.")
    return Forward(origin, None, service)


def _user_name(path: str) -> str:
    """The `<name>` of `/user/<name>[/…]`, or "" when `path` is not under a user."""
    if not path.startswith("/user/"):
        return ""
    return path[6:].split("/", 1)[0]


def route(path: str, target: bytes, table: RouteTable | None, replicas: Replicas,
          base_url: str = "/") -> Forward | Answer:
    """Decide where a request for `path` (raw, without query; `target` is path + query) goes.

    Under a `base_url` such as `/jhub/`, `path` is routed with the prefix taken off (routes, hub paths and
    redirects are the same as at `/`, the redirects prefixed again); the request goes on unchanged. A path
    outside the prefix is not the hub's: `/` is sent to the hub, anything else is a 404 of the proxy.
    """
    root = base_url.rstrip("/").encode("ascii")
    if root and path != HEALTH_PATH:
        inner = inner_path(base_url, path)
        if inner is None:
            if path in ("/", ""):
                return _to_hub(target, root)
            return Answer(404, f"Not found: the hub is served under {base_url}")
        rest = target[len(root):]
        path, target = inner, rest if rest.startswith(b"/") else b"/" + rest
    return _route(path, target, table, replicas, root)


def _route(path: str, target: bytes, table: RouteTable | None, replicas: Replicas, root: bytes) -> Forward | Answer:
    """`route` for a path without the base_url's prefix (`root`, which redirects get back)."""
    if path.startswith("/hub/") or path == "/hub":
        service = hub_service(path)
        if table is None or replicas.has(service):
            return _replica(replicas, service)
        hit = table.lookup(path)
        return Forward(hit.origin, hit.key, None) if hit is not None else _replica(replicas, service)
    if table is None:
        if path == "/" or path == "":
            return _to_hub(target, root)
        return LOADING
    hit = table.lookup(path)
    if hit is not None:
        return Forward(hit.origin, hit.key, None)
    if path == HEALTH_PATH:
        return HEALTHY
    if path == "/" or path == "":
        return _to_hub(target, root)
    if _user_name(path):
        return Answer(302, "", root + b"/hub" + target)
    return _replica(replicas, "api")


def _to_hub(target: bytes, root: bytes = b"") -> Answer:
    query = target.partition(b"?")[2]
    return Answer(302, "", root + b"/hub/" + (b"?" + query if query else b""))
