"""A small asynchronous client of the Docker Engine API: the few endpoints the `docker` backend uses.

The engine is reached at a `DOCKER_HOST`-style address (`unix:///path/docker.sock`, `tcp://host:2375`,
plain HTTP; TLS is not supported) through httpx, the only module that imports it. Each call opens its own
connection (a Unix socket connect costs microseconds), so nothing outlives a call and no thread is used.
The API version is the engine's own (`GET /version`, asked once), so the client works with any engine
from API 1.24 on: the fields it sends and reads exist in all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

CONNECT_TIMEOUT = 5.0
"""Seconds to reach the engine; a socket that does not answer is an engine that cannot be reached."""
LOG_TAIL = 2000
"""Lines of a container's output kept when it is removed."""


class EngineError(Exception):
    """The engine refused a request (`status` its HTTP status, the message its own)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EngineUnreachable(EngineError):
    """The engine did not answer at its address. `sent`: the request may have reached it (a timeout after
    it was written) — False when no connection was made, so the engine did nothing."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(0, message)
        self.sent = sent


@dataclass(frozen=True)
class Address:
    """Where the engine listens: a Unix socket path, or an HTTP base URL (tcp://)."""

    text: str
    socket: str | None
    base_url: str

    @property
    def hostname(self) -> str | None:
        """The engine's host name for a tcp:// address (None for a local socket)."""
        return None if self.socket else urlsplit(self.base_url).hostname


def parse_address(text: str) -> Address:
    """An engine address as DOCKER_HOST takes it: `unix:///run/docker.sock`, `tcp://host:2375`
    (also `http://host:port`, or a bare socket path).

    Raises:
        ValueError: any other scheme (ssh://, npipe://).
    """
    parts = urlsplit(text)
    if parts.scheme == "unix" or (not parts.scheme and text.startswith("/")):
        path = parts.path if parts.scheme else text
        if not path:
            raise ValueError(f"{text!r}: a unix:// address needs a socket path (unix:///run/docker.sock)")
        return Address(text, path, "http://docker")
    if parts.scheme in ("tcp", "http"):
        if not parts.hostname:
            raise ValueError(f"{text!r}: a tcp:// address needs a host (tcp://host:2375)")
        return Address(text, None, f"http://{parts.hostname}:{parts.port or 2375}")
    raise ValueError(f"{text!r}: the engine address must be unix:///path or tcp://host:port "
                     "(ssh:// and TLS are not supported)")


class Engine:
    """The Engine API at one address. Every method raises `EngineUnreachable` when the engine does not
    answer and `EngineError` when it refuses."""

    def __init__(self, address: Address, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._version: str | None = None

    def _client(self, timeout: float | None = None) -> httpx.AsyncClient:
        # plain HTTP only: verify=False spares building a TLS context (loading the CA bundle, ~10 ms a
        # client) that no request would use
        transport = httpx.AsyncHTTPTransport(uds=self.address.socket, verify=False)
        limit = timeout or self.timeout
        return httpx.AsyncClient(transport=transport, base_url=self.address.base_url, trust_env=False, verify=False,
                                 timeout=httpx.Timeout(limit, connect=min(limit, CONNECT_TIMEOUT)))

    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None, timeout: float | None = None,
                       versioned: bool = True) -> httpx.Response:
        if versioned and self._version is None:
            self._version = str((await self.version())["ApiVersion"])
        url = f"/v{self._version}{path}" if versioned else path
        try:
            async with self._client(timeout) as client:
                response = await client.request(method, url, params=params, json=body)
        except httpx.TimeoutException as exc:
            raise EngineUnreachable(f"the Docker engine at {self.address.text} did not answer "
                                    f"{method} {path} in time ({type(exc).__name__})",
                                    sent=not isinstance(exc, httpx.ConnectTimeout)) from None
        except httpx.TransportError as exc:
            raise EngineUnreachable(f"cannot reach the Docker engine at {self.address.text}: {exc}",
                                    sent=not isinstance(exc, httpx.ConnectError)) from None
        if response.status_code >= 400:
            raise EngineError(response.status_code, _message(response))
        return response

    async def version(self) -> dict[str, Any]:
        """`GET /version` (unversioned): the engine's version and API version."""
        return dict((await self._request("GET", "/version", versioned=False)).json())

    async def create(self, name: str, config: dict[str, Any]) -> str:
        """Create the container `name` from `config` (the create request's body); its id."""
        response = await self._request("POST", "/containers/create", params={"name": name}, body=config)
        return str(response.json()["Id"])

    async def start(self, ref: str) -> None:
        await self._request("POST", f"/containers/{ref}/start")

    async def inspect(self, ref: str) -> dict[str, Any] | None:
        """The container `ref` (id or name) as `docker inspect` shows it; None if there is none."""
        try:
            return dict((await self._request("GET", f"/containers/{ref}/json")).json())
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    async def stop(self, ref: str, grace: int = 5) -> None:
        """Stop the container (SIGTERM, then SIGKILL after `grace` seconds); stopped or gone is no error."""
        try:
            await self._request("POST", f"/containers/{ref}/stop", params={"t": str(grace)},
                                timeout=self.timeout + grace)
        except EngineError as exc:
            if exc.status not in (304, 404):
                raise

    async def remove(self, ref: str) -> None:
        """Remove the container (killed if it runs) and its anonymous volumes (named ones, such as a user's
        `volumes` entry, stay); gone is no error."""
        try:
            await self._request("DELETE", f"/containers/{ref}", params={"force": "true", "v": "true"})
        except EngineError as exc:
            if exc.status != 404:
                raise

    async def logs(self, ref: str, tail: int = LOG_TAIL) -> bytes:
        """The last `tail` lines the container wrote (stdout and stderr, in order)."""
        response = await self._request("GET", f"/containers/{ref}/logs",
                                       params={"stdout": "true", "stderr": "true", "tail": str(tail)})
        if response.headers.get("content-type", "").startswith("application/vnd.docker.multiplexed-stream"):
            return demultiplex(response.content)
        info = await self.inspect(ref)  # older engines do not say: a container without a TTY multiplexes
        tty = bool(((info or {}).get("Config") or {}).get("Tty"))
        return response.content if tty else demultiplex(response.content)


def demultiplex(data: bytes) -> bytes:
    """The payload of the Engine's multiplexed log stream: frames of an 8-byte header (stream, 0, 0, 0,
    big-endian size) and that many bytes."""
    out, i = bytearray(), 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i + 4:i + 8], "big")
        out += data[i + 8:i + 8 + size]
        i += 8 + size
    return bytes(out)


def _message(response: httpx.Response) -> str:
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text.strip() or f"HTTP {response.status_code}")[:500]
