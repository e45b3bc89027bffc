"""The in-memory route table: longest-prefix lookup in O(path depth) dictionary probes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fleethub.shared.events import Route

Origin = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a route sends requests."""

    key: str  # route key in the bucket (activity is counted per key)
    origin: Origin
    routespec: str
    target: str = ""  # the target URL as written
    data: dict[str, Any] = field(default_factory=dict)  # the route's data (configurable-http-proxy API)
    created: float = 0.0  # when the value was written (epoch seconds; 0: unknown)


def parse_origin(url: str) -> Origin:
    """`http://host:port[/…]` → `(host, port)`; IPv6 hosts in brackets; port 80 when absent.

    Raises:
        ValueError: not an http URL with a host and a valid port.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "http":
        raise ValueError(f"not an http:// origin: {url!r}")
    authority = rest.split("/", 1)[0]
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = int(port_text) if port_text else 80
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {url!r}")
    return host, port


def prefix_of(routespec: str) -> str:
    """The dictionary key of a routespec: `/user/alice/` → `/user/alice` (whole segments match)."""
    return "/" + routespec.strip("/")


class RouteTable:
    """Routes by path prefix. One table is filled by a watch, then swapped in whole on (re)sync."""

    __slots__ = ("_by_key", "_by_prefix", "max_depth", "root")

    def __init__(self) -> None:
        self._by_prefix: dict[str, Target] = {}
        self._by_key: dict[str, Target] = {}
        self.max_depth = 0  # segments of the deepest prefix: lookups never probe deeper
        self.root: Target | None = None  # the route of `/` (a catch-all), if any

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Target]:
        return iter(list(self._by_key.values()))

    def get(self, key: str) -> Target | None:
        """The target of route `key`, if present."""
        return self._by_key.get(key)

    def at_prefix(self, routespec: str) -> Target | None:
        """The route whose prefix is exactly that of `routespec` (trailing slash or not)."""
        return self._by_prefix.get(prefix_of(routespec))

    def put(self, key: str, route: Route, created: float = 0.0) -> Target | None:
        """Add or replace route `key`; returns the target it replaced (if any).

        Raises:
            ValueError: the route is not a path route (`/…`) to an http origin.
        """
        if not route.routespec.startswith("/"):
            raise ValueError(f"host-based routespec {route.routespec!r} is not supported")
        target = Target(key, parse_origin(route.target), route.routespec, route.target, route.data, created)
        old = self.delete(key)
        prefix = prefix_of(route.routespec)
        self._by_prefix[prefix] = target
        self._by_key[key] = target
        self.max_depth = max(self.max_depth, prefix.count("/"))
        if prefix == "/":
            self.root = target
        return old

    def delete(self, key: str) -> Target | None:
        """Remove route `key`; returns its target (if it was there)."""
        old = self._by_key.pop(key, None)
        if old is not None:
            prefix = prefix_of(old.routespec)
            if self._by_prefix.get(prefix) is old:
                del self._by_prefix[prefix]
                if prefix == "/":
                    self.root = None
        return old

    def lookup(self, path: str) -> Target | None:
        """The route with the longest prefix of `path`, matching whole segments only.

        `/user/alice/` matches `/user/alice`, `/user/alice/` and `/user/alice/lab`, never `/user/alicex`;
        a route of `/` matches every path no longer route does. The raw path is matched as received (no
        decoding), so the route chosen is the one for the very path the upstream receives.
        """
        by_prefix = self._by_prefix
        best = self.root
        end = 0
        for _ in range(self.max_depth):
            end = path.find("/", end + 1)
            hit = by_prefix.get(path if end == -1 else path[:end])
            if hit is not None:
                best = hit
            if end == -1:
                break
        return best
