"""Which Host a request may name: the public URL's host, or (with none configured) the bound address.

A Host the hub does not answer as is refused before routing: it would otherwise reach the upstreams,
which build absolute URLs and redirects from it (DNS rebinding, poisoned links). The allowed names
are computed once at start; a request costs one set lookup (two if its Host is not lower-case).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fleethub.shared.settings import ServiceSettings

WILDCARDS = ("", "0.0.0.0", "::")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def url_hosts(url: str) -> set[str]:
    """The Host values that name the origin of `url`: `host:port`, and `host` alone for the scheme's port."""
    parts = urlsplit(url)
    if not parts.hostname:
        return set()
    host = _bracket(parts.hostname.lower())
    default = 443 if parts.scheme.lower() in ("https", "wss") else 80
    port = parts.port or default
    out = {f"{host}:{port}"}
    if port == default:
        out.add(host)
    return out


def _with_port(names: tuple[str, ...] | list[str], port: int, default: int) -> set[str]:
    out = {f"{name}:{port}" for name in names}
    if port == default:
        out.update(names)
    return out


class Hosts:
    """The Host values a node accepts (lower-case bytes); `local` adds the address a client connected to."""

    __slots__ = ("local", "names", "port")

    def __init__(self, names: set[str], *, local: bool, port: int) -> None:
        self.names = frozenset(n.encode("ascii") for n in names)
        self.local = local  # bound to every interface with no public URL: the address dialled is accepted too
        self.port = port

    def allows(self, host: bytes, local: bytes | None = None) -> bool:
        """Whether `host` (a Host or X-Forwarded-Host value) names us; `local`: the connection's own address."""
        names = self.names
        if host in names or host == local:
            return True
        low = host.lower()
        return low != host and (low in names or low == local)

    def local_name(self, sockname: tuple[str, int] | None) -> bytes | None:
        """The `host:port` a client reached (for a node bound to every interface), computed once per connection."""
        if not self.local or not sockname:
            return None
        return f"{_bracket(str(sockname[0]))}:{self.port}".encode("ascii")


def allowed_hosts(settings: ServiceSettings, bound_host: str, port: int, *, tls: bool) -> Hosts:
    """The Hosts of a node bound to `bound_host`:`port`.

    With `public_url`: its host, and the host of `spawner.hub_api_url` (user servers call the hub API
    there). Without: the bound address and the loopback names with the bound port (every interface:
    the address each client dialled). `proxy.allowed_hosts` are added in both cases.
    """
    names = set(settings.proxy.allowed_hosts)
    default = 443 if tls else 80
    local = False
    if settings.public_url:
        names |= url_hosts(settings.public_url)
        if settings.spawner.hub_api_url:
            names |= url_hosts(settings.spawner.hub_api_url)
    else:
        names |= _with_port(LOOPBACK_NAMES, port, default)
        if bound_host in WILDCARDS:
            local = True
        else:
            names |= _with_port([_bracket(bound_host.lower())], port, default)
        if settings.spawner.hub_api_url:
            names |= url_hosts(settings.spawner.hub_api_url)
    return Hosts(names, local=local, port=port)
