"""The in-memory route table: longest-prefix lookup in O(path depth) dictionary probes."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import Route


@dataclass(frozen=True)
class Target:
    """Where a route sends requests."""

    key: str  # route key in the bucket (for activity)
    host: str
    port: int
    routespec: str


def _origin(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
        return host, int(port or 80)
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, 80
    return host, int(port)


def _norm(prefix: str) -> str:
    return "/" + prefix.strip("/")


class RouteTable:
    """Routes keyed by their prefix without trailing slash; replaced wholesale on resync."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, Target] = {}
        self._by_key: dict[str, str] = {}
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._by_prefix)

    def put(self, key: str, route: Route) -> None:
        self.delete(key)
        host, port = _origin(route.target)
        prefix = _norm(route.routespec)
        self._by_prefix[prefix] = Target(key, host, port, route.routespec)
        self._by_key[key] = prefix
        self.max_depth = max(self.max_depth, prefix.count("/"))

    def delete(self, key: str) -> None:
        prefix = self._by_key.pop(key, None)
        if prefix is not None:
            self._by_prefix.pop(prefix, None)

    def lookup(self, path: str) -> Target | None:
        """The route with the longest prefix of `path` (whole segments only)."""
        by_prefix = self._by_prefix
        if not by_prefix:
            return None
        best = None
        # walk the segments from the shortest prefix up to the deepest route we hold
        end = 0
        for _ in range(self.max_depth):
            end = path.find("/", end + 1)
            prefix = path if end == -1 else path[:end]
            hit = by_prefix.get(prefix)
            if hit is not None:
                best = hit
            if end == -1:
                break
        return best
