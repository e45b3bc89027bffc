"""The spawn-pending page (`/hub/spawn-pending/{user}[/{server}]`): the progress so far (a labelled bar, an
aria-live log), the stream its script follows (reachable with the page's cookie and XSRF token), where the
browser goes once ready, a failure with its message escaped and a "Try again", a stopping server. No spawner
runs: the tests publish its events and write its states."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.events import ServerFailed, ServerProgress, SpawnServer, StopServer
from tests.support.cluster import wait_for
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.spawns import Streamed, mark, replica

pytestmark = pytest.mark.integration

FAILURE = "image <img src=x onerror=alert(1)> & \"co\" not found"


@pytest.fixture
async def hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, api={"allow_named_servers": True})
    async with running_hub(settings) as h:
        yield h


async def _started(hub: Hub, c: httpx.AsyncClient, path: str = "/hub/spawn") -> SpawnServer:
    r = await c.post(path, data={"_xsrf": hub.xsrf(c)})
    assert r.status_code == 302, r.text
    return await hub.spawn_command()


def _attr(page: str, element_id: str, name: str) -> str:
    tag = re.search(rf'<[a-z0-9]+ [^>]*id="{element_id}"[^>]*>', page)
    assert tag, page
    value = re.search(rf'\s{name}="([^"]*)"', tag.group(0))
    assert value, tag.group(0)
    return html.unescape(value.group(1))


async def test_the_pending_page_shows_the_progress_so_far(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    cmd = await _started(hub, c)
    for pct, step in ((0, "Server requested"), (20, "Pulling <fh/base:1>"), (10, "late & lower")):
        await hub.bus.publish(ServerProgress(user="alice", spawn_id=cmd.spawn_id, progress=pct, message=step))

    async def seen() -> httpx.Response | None:  # the api's core subscription delivers them
        r = await c.get("/hub/spawn-pending/alice")
        return r if "late &amp; lower" in r.text else None

    r = await wait_for(seen, timeout=10, what="the progress on the pending page")
    page = r.text
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    # a labelled bar at the furthest progress seen, and the messages in a live log, escaped
    assert '<label for="spawn-progress">Start progress</label>' in page
    assert '<progress id="spawn-progress" max="100" value="20">20%</progress>' in page
    assert '<div id="progress-log" role="log" aria-live="polite" aria-label="Start messages">' in page
    assert ('<ol class="progress"><li>Server requested</li><li>Pulling &lt;fh/base:1&gt;</li>'
            "<li>late &amp; lower</li></ol>") in page
    assert "<fh/base:1>" not in page
    # the script follows the stream; without it the page reloads itself
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    script = re.search(r'<script src="(/hub/static/spawn_pending\.js\?v=[0-9a-f]+)" defer></script>', page)
    assert script, page
    js = await c.get(script.group(1))
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in js.text
    assert _attr(page, "spawn-pending", "data-state") == "starting"
    assert _attr(page, "spawn-pending", "data-progress-url") == "/hub/api/users/alice/server/progress"
    assert _attr(page, "spawn-pending", "data-next-url") == "/user/alice/"
    # the failure block waits hidden, its "Try again" a start with this session's token
    assert re.search(r'<div id="spawn-failed" role="alert" hidden>', page)
    assert '<form method="post" action="/hub/spawn/alice" class="inline">' in page
    assert f'<input type="hidden" name="_xsrf" value="{hub.xsrf(c)}">' in page
    assert '<a href="/hub/logout">Sign out</a>' in page  # the navigation bar of the base page
    # where the browser goes once ready: `next` when it is inside the server, else the server
    for asked, target in (("/user/alice/lab?x=<1>", "/user/alice/lab?x=<1>"), ("//evil.com/", "/user/alice/"),
                          ("/user/bob/", "/user/alice/"), ("/user/alice/../bob/", "/user/alice/")):
        r = await c.get("/hub/spawn-pending/alice", params={"next": asked})
        assert _attr(r.text, "spawn-pending", "data-next-url") == target, (asked, r.text)
        assert "<1>" not in r.text  # escaped in the attribute


async def test_the_progress_stream_takes_the_pages_cookie_and_xsrf_token(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    cmd = await _started(hub, c)
    page = (await c.get("/hub/spawn-pending/alice")).text
    url = _attr(page, "spawn-pending", "data-progress-url")
    cookies = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    async with replica(hub) as (app, state, _):
        # steps before the page's script opened the stream are sent first (a page opened mid-spawn), once
        for pct, step in ((0, "Server requested"), (25, "pulling")):
            await hub.bus.publish(ServerProgress(user="alice", spawn_id=cmd.spawn_id, progress=pct, message=step))

        async def seen_by_the_replica() -> bool:
            return len(state["waiters"].steps(cmd.spawn_id)) == 2

        await wait_for(seen_by_the_replica, timeout=10, what="the steps seen by the replica")
        # what spawn_pending.js opens: the page's URL with the `_xsrf` cookie's token, the browser's cookies
        stream = Streamed(app, f"{url}?_xsrf={hub.xsrf(c)}", {"cookie": cookies, "accept": "text/event-stream"})
        assert await stream.start() == 200 and stream.headers["content-type"] == "text/event-stream"
        assert await stream.event() == {"progress": 0, "message": "Server requested"}
        assert await stream.event() == {"progress": 25, "message": "pulling"}
        await hub.bus.publish(ServerProgress(user="alice", spawn_id=cmd.spawn_id, progress=40, message="starting"))
        assert await stream.event() == {"progress": 40, "message": "starting"}
        await stream.hang_up()
    # the cookie alone, or another session's token, is not enough (cross-site pages can send the cookie)
    assert (await c.get(url)).status_code == 403
    async with hub.new_client() as other:
        await hub.login(other, "admin")
        assert (await c.get(url, params={"_xsrf": hub.xsrf(other)})).status_code == 403
    assert (await c.get(url, headers=await hub.headers_for("bob"))).status_code == 404  # not bob's to read
    # once failed: the one failed event, and the page says so
    await mark(hub, "alice", "", cmd.spawn_id, "failed", FAILURE, started=False)
    await hub.bus.publish(ServerFailed(user="alice", spawn_id=cmd.spawn_id, message=FAILURE))
    r = await c.get(url, params={"_xsrf": hub.xsrf(c)})
    assert r.status_code == 200
    assert json.loads(r.text.removeprefix("data: ")) == {"progress": 100, "failed": True,
                                                         "message": f"Spawn failed: {FAILURE}"}


async def test_a_failed_start_shows_its_message_and_tries_again(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    cmd = await _started(hub, c)
    await mark(hub, "alice", "", cmd.spawn_id, "failed", FAILURE, started=False)
    r = await c.get("/hub/spawn-pending/alice")
    page = r.text
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert ('<p class="error" id="spawn-error">Spawn failed: image &lt;img src=x onerror=alert(1)&gt; &amp; '
            "&#34;co&#34; not found</p>") in page
    assert "<img" not in page and "<script" not in page and "refresh" not in page  # no loop, no script
    assert '<div id="spawn-failed" role="alert">' in page and "alice&#39;s server did not start" in page
    assert '<progress id="spawn-progress" max="100" value="100">' in page
    assert _attr(page, "spawn-pending", "data-state") == "failed"
    form = re.search(r'<form method="post" action="([^"]+)" class="inline">\s*'
                     r'<input type="hidden" name="_xsrf" value="([^"]+)">\s*'
                     r'<button type="submit" id="try-again">Try again</button>', page)
    assert form, page
    r = await c.post(form.group(1), data={"_xsrf": form.group(2)})  # "Try again" starts it again
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice"
    again = await hub.spawn_command()
    assert again.spawn_id != cmd.spawn_id and again.user == "alice"


async def test_a_named_server_of_an_escaped_user(hub: Hub) -> None:
    await hub.headers_for("a%2fb<")  # a name with a percent sign and a bracket
    async with hub.new_client() as admin:
        await hub.login(admin, "admin")
        cmd = await _started(hub, admin, "/hub/spawn/a%252fb%3C/gpu")
        r = await admin.get("/hub/spawn-pending/a%252fb%3C/gpu")
        page = r.text
        assert r.status_code == 200, page
        assert _attr(page, "spawn-pending", "data-progress-url") == "/hub/api/users/a%252fb%3C/servers/gpu/progress"
        assert _attr(page, "spawn-pending", "data-next-url") == "/user/a%252fb%3C/gpu/"
        assert 'action="/hub/spawn/a%252fb%3C/gpu"' in page
        assert "Starting a%2fb&lt;&#39;s server “gpu”" in page
        # the stream the page names is that server's
        await mark(hub, "a%2fb<", "gpu", cmd.spawn_id, "failed", "no", started=False)
        r = await admin.get(_attr(page, "spawn-pending", "data-progress-url"), params={"_xsrf": hub.xsrf(admin)})
        assert r.status_code == 200
        assert r.text == 'data: {"progress": 100, "failed": true, "message": "Spawn failed: no"}\n\n'


async def test_a_stopping_server_has_no_progress_to_follow(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    cmd = await _started(hub, c)
    await mark(hub, "alice", "", cmd.spawn_id, "running")
    assert (await c.post("/hub/stop", data={"_xsrf": hub.xsrf(c)})).status_code == 302
    (stop,) = await hub.commands(1)
    assert isinstance(stop, StopServer)
    r = await c.get("/hub/spawn-pending/alice")
    assert r.status_code == 200 and "alice&#39;s server is stopping" in r.text
    assert '<meta http-equiv="refresh" content="2">' in r.text and "spawn_pending.js" not in r.text
    assert "<progress" not in r.text
    await mark(hub, "alice", "", cmd.spawn_id, "stopped")
    r = await c.get("/hub/spawn-pending/alice")
    assert r.status_code == 302 and r.headers["location"] == "/hub/home"
