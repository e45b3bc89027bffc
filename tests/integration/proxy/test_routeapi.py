"""The configurable-http-proxy-compatible route API of proxy nodes, against real nodes and real NATS."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.integration.proxy.conftest import ProxyEnv, answers, get
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration

TOKEN = "route-api-token-0123456789"


class Api:
    """A CHP client, as JupyterHub's ConfigurableHTTPProxy talks to the API."""

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.base = f"http://127.0.0.1:{port}/api/routes"
        self.client = httpx.AsyncClient(timeout=10, headers={"Authorization": f"token {token}"})

    async def call(self, method: str, path: str = "", body: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.request(method, self.base + path, json=body, **kw)

    async def close(self) -> None:
        await self.client.aclose()


async def _node_with_api(env: ProxyEnv, **proxy: Any) -> tuple[str, Api]:
    api_port = free_port()
    _, base = env.node(api_port=api_port, auth_token=TOKEN, **proxy)

    async def healthy() -> bool:
        try:
            return (await get(f"{base}/_chp_healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(healthy, timeout=20, interval=0.02, what=f"node health\n{env.cluster.logs()}")
    return base, Api(api_port)


def _iso(value: str) -> datetime:
    assert value.endswith("Z") and len(value) == len("2026-01-01T00:00:00.000Z"), value
    return datetime.fromisoformat(value)


async def test_routes_added_listed_served_and_deleted_as_chp_does(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    base, api = await _node_with_api(env)
    try:
        assert (await api.call("GET")).json() == {}
        before = datetime.now(UTC) - timedelta(milliseconds=5)
        data = {"target": alice.url, "user": "alice", "server_name": "", "jupyterhub": True}
        r = await api.call("POST", "/user/alice", data)
        assert r.status_code == 201 and r.content == b""
        # answered once served here: the very next request is routed
        assert (await get(f"{base}/user/alice/lab")).headers["x-backend"] == "alice"

        table = (await api.call("GET")).json()
        assert list(table) == ["/user/alice"]
        route = table["/user/alice"]
        assert {k: route[k] for k in data} == data
        assert _iso(route["last_activity"]) >= before
        one = await api.call("GET", "/user/alice")
        assert one.status_code == 200 and one.json()["target"] == alice.url
        assert (await api.call("GET", "/user/alice/")).json()["target"] == alice.url  # trailing slash trimmed

        # a trailing slash in the POST path names the same route
        bob = await env.backend("bob")
        assert (await api.call("POST", "/user/alice/", {"target": bob.url, "user": "alice"})).status_code == 201
        assert (await get(f"{base}/user/alice/")).headers["x-backend"] == "bob"
        assert list((await api.call("GET")).json()) == ["/user/alice"]

        assert (await api.call("DELETE", "/user/alice")).status_code == 204
        r = await get(f"{base}/user/alice/lab")
        assert r.status_code == 302 and r.headers["location"] == "/hub/user/alice/lab"
        assert (await api.call("DELETE", "/user/alice")).status_code == 404
        assert (await api.call("GET", "/user/alice")).status_code == 404
    finally:
        await api.close()


async def test_root_route_is_a_catch_all_for_a_classic_hub(env: ProxyEnv) -> None:
    """A classic JupyterHub adds `/` → itself; with no fleethub replicas, /hub/ goes there too."""
    hub, alice = await env.backend("hub"), await env.backend("alice")
    base, api = await _node_with_api(env)
    try:
        assert (await api.call("POST", "", {"target": hub.url, "hub": True, "jupyterhub": True})).status_code == 201
        assert (await api.call("POST", "/user/alice", {"target": alice.url, "user": "alice"})).status_code == 201
        assert (await get(f"{base}/hub/api/")).headers["x-backend"] == "hub"
        assert (await get(f"{base}/")).headers["x-backend"] == "hub"
        assert (await get(f"{base}/user/bob/tree")).headers["x-backend"] == "hub"
        assert (await get(f"{base}/user/alice/tree")).headers["x-backend"] == "alice"
        assert set((await api.call("GET")).json()) == {"/", "/user/alice"}
        assert (await api.call("GET", "/")).json().keys() == {"/", "/user/alice"}  # `/` alone is the list
        assert (await api.call("DELETE", "/")).status_code == 204
        assert (await get(f"{base}/")).status_code == 302
    finally:
        await api.close()


async def test_bad_requests_get_clear_errors_and_change_nothing(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    base, api = await _node_with_api(env)
    try:
        assert (await api.call("POST", "/user/alice", {"target": alice.url})).status_code == 201
        for headers in ({"Authorization": "token wrong"}, {"Authorization": f"Bearer {TOKEN}"}, {}):
            async with httpx.AsyncClient(timeout=10) as c:
                for method in ("GET", "POST", "DELETE"):
                    r = await c.request(method, f"{api.base}/user/alice", headers=headers,
                                        json={"target": "http://127.0.0.1:1"})
                    assert r.status_code == 403, (headers, method, r.text)
                    assert "token" in r.json()["message"]
        cases: list[tuple[str, str, Any, int, str]] = [
            ("POST", "/user/x", {"no": "target"}, 400, "target"),
            ("POST", "/user/x", {"target": 5}, 400, "target"),
            ("POST", "/user/x", [1, 2], 400, "target"),
            ("POST", "/user/x", {"target": "https://127.0.0.1:8"}, 400, "http"),
            ("POST", "/user/x", {"target": "http://127.0.0.1:8/sub"}, 400, "path"),
            ("POST", "/user/x", {"target": "http://127.0.0.1:99999"}, 400, "port"),
            ("POST", "/user/x", {"target": "nonsense"}, 400, "http"),
            ("PUT", "/user/x", {"target": alice.url}, 405, "not supported"),
            ("GET", "/user/" + "a" * 2000, None, 400, "limited"),
        ]
        for method, path, body, status, words in cases:
            r = await api.call(method, path, body)
            assert r.status_code == status, (method, path, body, r.text)
            assert words in r.json()["message"], r.text
        r = await api.call("POST", "/user/x", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["message"]
        r = await api.call("POST", "/user/x", content=b"[" * 100_000)
        assert r.status_code == 400
        r = await api.call("POST", "/user/x", content=b"x" * (2 * 1024 * 1024))
        assert r.status_code == 413
        r = await api.client.get(f"http://127.0.0.1:{api.base.split(':')[2].split('/')[0]}/api/other")
        assert r.status_code == 404
        r = await api.call("GET", "", params={"inactive_since": "yesterday"})
        assert r.status_code == 400 and "ISO8601" in r.json()["message"]
        # nothing of it reached the table
        assert list((await api.call("GET")).json()) == ["/user/alice"]
        assert await answers(f"{base}/user/alice/", "alice")
    finally:
        await api.close()


async def test_last_activity_comes_from_every_node_and_filters_inactive_routes(env: ProxyEnv) -> None:
    alice, bob = await env.backend("alice"), await env.backend("bob")
    _, api = await _node_with_api(env)
    _, other = env.node()  # traffic goes through another node, without an API
    try:
        for name, b in (("alice", alice), ("bob", bob)):
            assert (await api.call("POST", f"/user/{name}", {"target": b.url, "user": name})).status_code == 201
        await wait_for(lambda: answers(f"{other}/user/alice/", "alice"), timeout=20, what="second node")
        created = _iso((await api.call("GET", "/user/bob")).json()["last_activity"])
        await asyncio.sleep(0.05)
        mark = datetime.now(UTC)
        await asyncio.sleep(0.05)
        for _ in range(3):
            assert await answers(f"{other}/user/alice/x", "alice")

        async def seen() -> bool:
            return _iso((await api.call("GET", "/user/alice")).json()["last_activity"]) > mark

        await wait_for(seen, timeout=5, what="alice's activity from the other node")
        assert _iso((await api.call("GET", "/user/bob")).json()["last_activity"]) == created
        for param in ("inactive_since", "inactiveSince"):
            r = await api.call("GET", "", params={param: mark.isoformat()})
            assert list(r.json()) == ["/user/bob"], r.json()
        r = await api.call("GET", "", params={"inactive_since": "2000-01-01T00:00:00Z"})
        assert r.json() == {}
    finally:
        await api.close()


async def test_api_refuses_to_start_without_a_token(env: ProxyEnv) -> None:
    proc = env.cluster.start("proxy", proxy={"port": free_port(), "api_port": free_port()})
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 20:
        await asyncio.sleep(0.05)
    assert proc.returncode not in (None, 0)
    assert "CONFIGPROXY_AUTH_TOKEN" in env.cluster.logs()


async def test_a_user_servers_route_is_not_changed_through_the_route_api(env: ProxyEnv) -> None:
    """Only the spawner writes a user server's route (the proxy's NATS identity may write only `path` keys):
    the route API refuses to overwrite or delete it, and bob's route stays as it was."""
    bob, evil = await env.backend("bob"), await env.backend("evil")
    await env.route("bob", bob.url)
    base, api = await _node_with_api(env)
    try:
        await wait_for(lambda: answers(f"{base}/user/bob/x", "bob"), what="bob's route served")
        r = await api.call("POST", "/user/bob", {"target": evil.url, "user": "bob"})
        assert r.status_code == 403 and r.json()["message"]
        assert (await api.call("DELETE", "/user/bob")).status_code == 403
        assert (await get(f"{base}/user/bob/x")).headers["x-backend"] == "bob"
    finally:
        await api.close()
