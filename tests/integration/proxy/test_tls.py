"""TLS on a node's public port (https and wss), HSTS on the hub's own answers, and the redirect port."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from fleethub.shared.net import free_port
from tests.integration.proxy.conftest import ProxyEnv
from tests.integration.proxy.rawclient import RawClient
from tests.integration.proxy.test_websocket import EchoServer
from tests.support.certs import Certs, make_certs
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration
YEAR = 365 * 86400


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


def _tls_node(env: ProxyEnv, certs: Certs, **proxy: object) -> tuple[int, str]:
    port = free_port()
    env.cluster.start("proxy", proxy={"port": port, "ssl_cert": str(certs.cert_file), "ssl_key": str(certs.key_file),
                                      **proxy})
    return port, f"https://127.0.0.1:{port}"


async def _ready(base: str, verify: ssl.SSLContext | bool, path: str = "/hub/api/") -> None:
    async def up() -> bool:
        try:
            async with httpx.AsyncClient(verify=verify, timeout=5) as c:
                return (await c.get(f"{base}{path}")).status_code == 200
        except (httpx.TransportError, ssl.SSLError):
            return False

    await wait_for(up, timeout=20, what=f"node at {base}")


async def test_https_and_wss_through_a_tls_node_with_hsts_on_hub_answers(env: ProxyEnv, certs: Certs) -> None:
    api = await env.backend("api")
    alice = await env.backend("alice")
    echo = await EchoServer().start()
    try:
        await env.replica("api", "a1", api.url)
        await env.route("alice", alice.url)
        await env.route("ws", f"http://127.0.0.1:{echo.port}")
        port, base = _tls_node(env, certs)
        ctx = certs.client_context()
        await _ready(base, ctx)
        async with httpx.AsyncClient(verify=ctx, timeout=10) as c:
            hub = await c.get(f"{base}/hub/api/")
            assert hub.status_code == 200 and hub.json()["backend"] == "api"
            # the upstream learns the scheme from the connection, not from the client
            assert hub.json()["headers"]["x-forwarded-proto"] == "https"
            assert hub.headers["strict-transport-security"] == f"max-age={YEAR}"
            user = await c.get(f"{base}/user/alice/x", headers={"X-Forwarded-Proto": "http"})
            assert user.json()["headers"]["x-forwarded-proto"] == "https"
            assert "strict-transport-security" not in user.headers  # a user server's answer is its own
        # the certificate is checked: a client that does not trust the CA is refused the handshake
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(verify=ssl.create_default_context(), timeout=5) as c:
                await c.get(f"{base}/hub/api/")
        # plain HTTP on the TLS port gets nothing served
        raw = await RawClient.open(port)
        try:
            await raw.send(b"GET /hub/api/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = await asyncio.wait_for(raw.reader.read(1024), 10)
            assert b"api" not in data and not data.startswith(b"HTTP/1.1 200")
        finally:
            await raw.close()
        # a websocket over wss: echoed both ways through the TLS port
        async with connect(f"wss://127.0.0.1:{port}/user/ws/", ssl=ctx, proxy=None, open_timeout=5,
                           ping_interval=None, close_timeout=2) as ws:
            for message in ("hello", "x" * 200_000):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 10) == message
    finally:
        await echo.stop()


async def test_a_plain_node_sends_no_hsts(env: ProxyEnv) -> None:
    api = await env.backend("api")
    await env.replica("api", "a1", api.url)
    _, base = env.node()
    await _ready(base, False)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{base}/hub/api/")
    assert r.status_code == 200 and "strict-transport-security" not in r.headers
    assert r.json()["headers"]["x-forwarded-proto"] == "http"


async def test_hsts_can_be_turned_off(env: ProxyEnv, certs: Certs) -> None:
    api = await env.backend("api")
    await env.replica("api", "a1", api.url)
    _, base = _tls_node(env, certs, hsts_max_age=0)
    ctx = certs.client_context()
    await _ready(base, ctx)
    async with httpx.AsyncClient(verify=ctx, timeout=10) as c:
        r = await c.get(f"{base}/hub/api/")
    assert r.status_code == 200 and "strict-transport-security" not in r.headers


async def test_the_redirect_port_sends_every_request_to_the_https_public_url(env: ProxyEnv, certs: Certs) -> None:
    api = await env.backend("api")
    await env.replica("api", "a1", api.url)
    redirect_port = free_port()
    port, base = _tls_node(env, certs, http_redirect_port=redirect_port)
    await _ready(base, certs.client_context())

    async def ask(request: bytes) -> tuple[int, str]:
        raw = await RawClient.open(redirect_port)
        try:
            await raw.send(request)
            r = await raw.response()
            assert r.headers["connection"] == "close" and r.body == b""
            return r.status, r.headers.get("location", "")
        finally:
            await raw.close()

    origin = f"https://127.0.0.1:{port}"
    # GET/HEAD: 301; the Host the client names is never reflected, the configured origin is used
    assert await ask(b"GET /hub/login?next=%2Fhub%2Fhome HTTP/1.1\r\nHost: evil.example\r\n\r\n") == \
        (301, f"{origin}/hub/login?next=%2Fhub%2Fhome")
    assert await ask(b"HEAD /user/a/tree HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == (301, f"{origin}/user/a/tree")
    # other methods: 308 keeps the method and body
    assert await ask(b"POST /hub/api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}") == \
        (308, f"{origin}/hub/api/users")
    # absolute-form and protocol-relative look-alikes go to the front page of our origin
    assert await ask(b"GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n") == (301, f"{origin}/")
    assert await ask(b"GET //evil.example/x HTTP/1.1\r\nHost: x\r\n\r\n") == (301, f"{origin}/")
    async with httpx.AsyncClient(timeout=10, verify=certs.client_context(), follow_redirects=True) as c:
        r = await c.get(f"http://127.0.0.1:{redirect_port}/hub/api/?a=1")
    assert r.status_code == 200 and r.json()["path"] == "/hub/api/?a=1" and str(r.url).startswith(origin)


async def test_a_node_with_a_key_it_can_not_read_refuses_to_start(env: ProxyEnv, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    proc = env.cluster.start("proxy", proxy={"port": free_port(), "ssl_cert": str(missing), "ssl_key": str(missing)})
    assert proc.wait(30) != 0
    assert "ssl_cert" in env.cluster.logs()
