"""Dot segments in redirects (the security review): `/hub/user-redirect/%2e%2e/bob/` must not become
`/user/alice/%2e%2e/bob/`, which a browser resolves to `/user/bob/`. Every endpoint that builds a
redirect from a path or a `next` refuses dot segments, encoded or not, and never decodes twice."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

import pytest

from fleethub.shared.paths import has_dot_segment
from tests.integration.hub.api.test_pages import _set_state
from tests.support.hub import Hub

pytestmark = pytest.mark.integration

# path segments sent raw (as a client puts them on the wire; httpx would resolve a literal `..` itself)
DOTS = ["%2e%2e", ".%2e", "%2e.", "%2E%2E", "%2e%2E", "..", ".", "%2e", "..%2fbob", "..%2Fbob", "..%5cbob"]
DOUBLE = "%252e%252e"  # decoded once it is the text `%2e%2e`: kept as such, never resolved


async def raw_get(hub: Hub, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """GET `target` exactly as written (decoded once into the scope's `path`, as uvicorn does)."""
    raw_path, _, query = target.partition("?")
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = hub.transport.app  # type: ignore[attr-defined]
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}


def _stays(location: str, prefix: str) -> bool:
    """Whether a browser following `location` stays under `prefix` (no dot segment, prefix kept)."""
    return location.startswith(prefix) and not has_dot_segment(location.split("?")[0])


async def test_user_redirect_refuses_dot_segments(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    for dots in DOTS:
        status, headers = await raw_get(hub, f"/hub/user-redirect/{dots}/bob/", alice)
        assert status == 400, (dots, status, headers.get("location"))
        status, headers = await raw_get(hub, f"/hub/user-redirect/lab/{dots}/{dots}/bob/tree", alice)
        assert status == 400, dots
    status, headers = await raw_get(hub, f"/hub/user-redirect/{DOUBLE}/bob/?x=1", alice)
    assert status == 302 and headers["location"] == f"/user/alice/{DOUBLE}/bob/?x=1"
    # an encoded `%` stays encoded: `%25` arrives as `%` and leaves as `%25`
    status, headers = await raw_get(hub, "/hub/user-redirect/lab/tree/100%25.ipynb", alice)
    assert status == 302 and headers["location"] == "/user/alice/lab/tree/100%25.ipynb"


async def test_user_redirect_after_login_keeps_the_double_encoded_text(hub: Hub) -> None:
    c = hub.client
    status, headers = await raw_get(hub, f"/hub/user-redirect/{DOUBLE}/bob/", {})
    assert status == 302 and headers["location"].startswith("/hub/login?next=")
    next_url = headers["location"].split("?next=", 1)[1]
    assert unquote(next_url) == f"/hub/user-redirect/{DOUBLE}/bob/"
    r = await hub.login(c, "alice", next_url=next_url)
    assert r.status_code == 302 and r.headers["location"] == f"/hub/user-redirect/{DOUBLE}/bob/"
    r = await c.get(r.headers["location"])
    assert r.status_code == 302 and r.headers["location"] == f"/user/alice/{DOUBLE}/bob/"


async def test_hub_user_urls_refuse_dot_segments(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    html = {**alice, "Accept": "text/html"}
    for state in ("stopped", "pending", "running"):
        if state == "pending":
            assert (await hub.client.post("/hub/api/users/alice/server", headers=alice)).status_code == 202
            spawn_id = (await hub.spawn_command()).spawn_id
        elif state == "running":
            await _set_state(hub, "alice", spawn_id, "running")
        for dots in DOTS:
            status, headers = await raw_get(hub, f"/hub/user/alice/{dots}/bob/", html)
            assert status == 400, (state, dots, status, headers.get("location"))
        status, headers = await raw_get(hub, f"/hub/user/alice/{DOUBLE}/bob/", html)
        if state == "running":
            assert status == 302 and headers["location"] == f"/user/alice/{DOUBLE}/bob/?redirects=1"
        elif state == "pending":  # the spawn-pending page's `next` carries the same path
            assert status == 303, status
            assert unquote(headers["location"].split("?next=")[1]) == f"/user/alice/{DOUBLE}/bob/"
        else:
            assert status == 424


async def test_spawn_pending_next_with_dot_segments_goes_to_the_prefix(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    assert (await c.post("/hub/api/users/alice/server", headers=await hub.headers_for("alice"))).status_code == 202
    await _set_state(hub, "alice", (await hub.spawn_command()).spawn_id, "running")
    for dots in DOTS:
        r = await c.get("/hub/spawn-pending/alice", params={"next": f"/user/alice/{dots}/bob/"})
        assert r.status_code == 302 and r.headers["location"] == "/user/alice/", (dots, r.headers["location"])
    r = await c.get("/hub/spawn-pending/alice", params={"next": f"/user/alice/{DOUBLE}/bob/"})
    assert r.headers["location"] == f"/user/alice/{DOUBLE}/bob/" and _stays(r.headers["location"], "/user/alice/")
    r = await c.get("/hub/spawn-pending/alice", params={"next": "/user/alice/lab/tree/x.ipynb"})
    assert r.headers["location"] == "/user/alice/lab/tree/x.ipynb"


async def test_login_next_with_dot_segments_goes_home(hub: Hub) -> None:
    for dots in DOTS:
        async with hub.new_client() as c:
            r = await hub.login(c, "alice", next_url=quote(f"/user/alice/{dots}/bob/", safe=""))
            assert r.status_code == 302 and r.headers["location"] == "/hub/home", (dots, r.headers["location"])
    async with hub.new_client() as c:
        r = await hub.login(c, "alice", next_url=quote(f"/user/alice/{DOUBLE}/bob/", safe=""))
        assert r.headers["location"] == f"/user/alice/{DOUBLE}/bob/"
    async with hub.new_client() as c:  # a logged-in browser asking for the form is sent on the same way
        await hub.login(c, "alice")
        r = await c.get("/hub/login", params={"next": "/user/alice/%2e%2e/bob/"})
        assert r.status_code == 302 and r.headers["location"] == "/hub/home"


async def test_spawn_of_a_dotted_name_is_no_redirect(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    for dots in ("%2e%2e", "%2e", ".%2e"):
        status, headers = await raw_get(hub, f"/hub/spawn/{dots}", alice)
        assert status == 404 and "location" not in headers, dots
        status, headers = await raw_get(hub, f"/hub/spawn-pending/{dots}", alice)
        assert status == 404 and "location" not in headers, dots
