"""The Host a node answers for, X-Forwarded-Host from a trusted hop, and Connection naming end-to-end fields."""

from __future__ import annotations

import pytest

from fleethub.shared.net import free_port
from tests.integration.proxy.conftest import ProxyEnv, answers, get, port_of
from tests.integration.proxy.rawclient import RawClient
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


async def _refused(base: str, path: str, **headers: str) -> None:
    r = await get(f"{base}{path}", headers={"Accept": "application/json", **headers})
    assert r.status_code == 400, (path, headers, r.status_code)
    assert r.json()["message"] == "The Host header does not name this hub"


async def test_a_foreign_host_is_refused_before_any_upstream(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    api = await env.backend("api")
    await env.route("alice", alice.url)
    await env.replica("api", "a1", api.url)
    _, base = env.node()
    port = port_of(base)
    await wait_for(lambda: answers(f"{base}/user/alice/", "alice"), timeout=20, what="node")
    seen = len(alice.seen), len(api.seen)
    # DNS rebinding: a hostile name resolving to us; an API client gets JSON, a browser a page
    await _refused(base, "/hub/api/users", Host="evil.example")
    await _refused(base, "/user/alice/", Host=f"evil.example:{port}", Accept="application/json")
    r = await get(f"{base}/user/alice/", headers={"Host": "evil.example", "Accept": "text/html"})
    assert r.status_code == 400 and "text/html" in r.headers["content-type"] and "evil" not in r.text
    await _refused(base, "/hub/api/", Host=f"127.0.0.1:{port + 1}")  # our address, another port
    await _refused(base, "/hub/api/", Host="127.0.0.1")  # no port: not the port we serve
    assert (len(alice.seen), len(api.seen)) == seen  # nothing reached an upstream
    # a websocket handshake is checked the same way
    raw = await RawClient.open(port)
    try:
        await raw.send(b"GET /user/alice/ws HTTP/1.1\r\nHost: evil.example\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        assert (await raw.response()).status == 400
    finally:
        await raw.close()
    # the bound address and the loopback names with our port (any case), and the configured extras
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "hub.example"):
        r = await get(f"{base}/user/alice/h", headers={"Host": host})
        assert r.status_code == 200 and r.json()["headers"]["host"] == host
    # the node's own health check answers whatever the Host (load balancer probes use addresses)
    r = await get(f"{base}/_chp_healthz", headers={"Host": "10.1.2.3:8000"})
    assert r.status_code == 200
    # HTTP/1.0 without Host: nothing to check, nothing reflected
    raw = await RawClient.open(port)
    try:
        await raw.send(b"GET /user/alice/old HTTP/1.0\r\n\r\n")
        assert (await raw.response()).status == 200
    finally:
        await raw.close()


async def test_a_node_with_a_public_url_answers_for_its_host_only(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    port = free_port()
    env.cluster.start("proxy", proxy={"port": port, "allowed_hosts": []}, public_url="https://hub.example.test",
                      spawner={"hub_api_url": f"http://proxy.internal:{port}/hub/api"})
    base = f"http://127.0.0.1:{port}"

    async def named() -> bool:
        try:
            return (await get(f"{base}/user/alice/", headers={"Host": "hub.example.test"})).status_code == 200
        except OSError:
            return False

    await wait_for(named, timeout=20, what="node")
    for host in ("hub.example.test", "HUB.example.test:443", f"proxy.internal:{port}"):
        assert (await get(f"{base}/user/alice/", headers={"Host": host})).status_code == 200, host
    # with a public URL, the loopback names no longer pass: the hub is not reachable by another name
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "hub.example.test:80", "hub.example.test.evil"):
        await _refused(base, "/user/alice/", Host=host)
    # an untrusted client can not pass with X-Forwarded-Host
    await _refused(base, "/user/alice/", Host="evil.example", **{"X-Forwarded-Host": "hub.example.test"})


async def test_a_trusted_hop_is_checked_on_its_x_forwarded_host(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    port = free_port()
    env.cluster.start("proxy", proxy={"port": port, "trusted_proxies": ["127.0.0.0/8"]},
                      public_url="https://hub.example.test")
    base = f"http://127.0.0.1:{port}"
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.test"}

    async def named() -> bool:
        try:
            return (await get(f"{base}/user/alice/", headers=fwd)).status_code == 200
        except OSError:
            return False

    # a TLS terminator that dials us by address and says which host the client named
    await wait_for(named, timeout=20, what="node")
    h = (await get(f"{base}/user/alice/", headers=fwd)).json()["headers"]
    assert (h["host"], h["x-forwarded-host"], h["x-forwarded-proto"]) == (f"127.0.0.1:{port}", "hub.example.test",
                                                                         "https")
    await _refused(base, "/user/alice/", **{"X-Forwarded-Host": "evil.example"})
    await _refused(base, "/user/alice/", Host="hub.example.test", **{"X-Forwarded-Host": "evil.example"})
    # a trusted hop that sends no X-Forwarded-Host is checked on Host
    assert (await get(f"{base}/user/alice/", headers={"Host": "hub.example.test"})).status_code == 200
    await _refused(base, "/user/alice/", Host="evil.example")


async def test_connection_can_not_strip_end_to_end_fields(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    _, base = env.node()
    port = port_of(base)
    await wait_for(lambda: answers(f"{base}/user/alice/", "alice"), timeout=20, what="node")
    raw = await RawClient.open(port)
    try:
        # "Connection: Host" would have the proxy drop Host (and with it the Host check upstream)
        await raw.send(b"GET /user/alice/c HTTP/1.1\r\nHost: hub.example\r\n"
                       b"Connection: Host, Cookie, Authorization, keep-alive, X-Drop-Me\r\n"
                       b"Cookie: a=b\r\nAuthorization: token t\r\nX-Drop-Me: 1\r\n\r\n")
        r = await raw.response()
        assert r.status == 200
        seen = alice.seen[-1].headers
        assert (seen["host"], seen["cookie"], seen["authorization"]) == ("hub.example", "a=b", "token t")
        assert "x-drop-me" not in seen  # an ordinary field named in Connection is still hop-by-hop
        # "Connection: Content-Length" would make the body pass for a second request upstream (smuggling)
        smuggled = b"GET /user/alice/smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        await raw.send(b"POST /user/alice/p HTTP/1.1\r\nHost: hub.example\r\nConnection: Content-Length\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        r = await raw.response()
        assert r.status == 200 and alice.seen[-1].received == len(smuggled)
        assert alice.seen[-1].headers["content-length"] == str(len(smuggled))
        assert not any("smuggled" in s.target for s in alice.seen)
    finally:
        await raw.close()
