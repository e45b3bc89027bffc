"""The home page (default and named servers, their plain-form actions with XSRF, the named-server limit,
escaping) and the not-running page of a named server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.events import StopServer, utcnow
from fleethub.shared.lifecycle import DesiredState
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Visible(HTMLParser):
    """What a reader sees of each server (`data-server`), skipping `hidden` elements and templates: texts,
    submit buttons' values and accessible names."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool, str | None]] = []  # (tag, hidden, server)
        self.seen: dict[str | None, list[str]] = {}

    def _server(self) -> str | None:
        return self.stack[-1][2] if self.stack else None

    def _hidden(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        hidden = self._hidden() or "hidden" in a or tag in ("template", "script")
        server = a["data-server"] if "data-server" in a else self._server()
        if not hidden:
            self.seen.setdefault(server, []).extend(
                v for v in (a.get("aria-label"), a.get("value") if a.get("type") == "submit" else None) if v)
        if tag not in _VOID:
            self.stack.append((tag, hidden, server))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._hidden() and data.strip():
            self.seen.setdefault(self._server(), []).append(data.strip())


def visible(html: str, server: str | None) -> str:
    """The visible words of one server's part of the page ("" the default server, None outside any)."""
    parser = _Visible()
    parser.feed(html)
    return " | ".join(parser.seen.get(server, []))


def named_rows(html: str) -> list[str]:
    body = re.search(r'<table id="named-servers">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, html
    return re.findall(r'<tr data-server="([^"]*)"', body.group(1))


async def set_state(hub: Hub, user: str, server: str, spawn_id: str, status: str) -> None:
    values = {"spawn_id": spawn_id, "status": status, "message": "", "url": f"/user/{user}/{server}/",
              "target": "http://127.0.0.1:1", "started": utcnow()}
    async with hub.sessions() as s, s.begin():
        await s.execute(insert(ServerState).values(user_name=user, server_name=server, **values)
                        .on_conflict_do_update(index_elements=["user_name", "server_name"], set_=values))


@pytest.fixture
async def named(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            api={"allow_named_servers": True, "named_server_limit_per_user": 2})
    async with running_hub(settings) as h:
        yield h


async def test_home_without_named_servers(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    home = await c.get("/hub/home")
    assert home.status_code == 200 and home.headers["cache-control"] == "no-store"
    assert "Your server is stopped." in visible(home.text, "")
    assert "Start my server" in visible(home.text, "") and "Open my server" not in visible(home.text, "")
    assert 'id="named-servers"' not in home.text and "New server" not in home.text
    assert "Sign out" in home.text and "Change password" in home.text  # the navigation bar
    script = re.search(r'<script src="(/hub/static/home\.js\?v=\w+)" defer>', home.text)
    assert script, home.text
    js = await c.get(script.group(1))
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"]
    assert (await c.post("/hub/home/servers", data={"_xsrf": hub.xsrf(c), "server_name": "gpu"})).status_code == 404
    assert await hub.commands(1, timeout=0.3) == []


async def test_create_stop_and_delete_named_servers_with_the_forms(named: Hub) -> None:
    hub, c = named, named.client
    await hub.login(c, "alice")
    home = await c.get("/hub/home")
    assert named_rows(home.text) == [] and "You have no named servers yet." in visible(home.text, None)
    assert "You have 0 of at most 2 named servers." in home.text
    xsrf = hub.xsrf(c)
    # the forms need the session's XSRF token
    for path in ("/hub/home/servers", "/hub/home/servers/gpu/stop", "/hub/home/servers/gpu/delete"):
        assert (await c.post(path, data={"server_name": "gpu"})).status_code == 403, path
        assert (await c.post(path, data={"server_name": "gpu", "_xsrf": "a.b"})).status_code == 403, path
    assert await hub.commands(1, timeout=0.3) == []

    r = await c.post("/hub/home/servers", data={"_xsrf": xsrf, "server_name": "gpu"})
    assert r.status_code == 303 and r.headers["location"] == "/hub/spawn-pending/alice/gpu"
    cmd = await hub.spawn_command()
    assert (cmd.user, cmd.server_name) == ("alice", "gpu")
    home = await c.get("/hub/home")
    assert named_rows(home.text) == ["gpu"]
    assert "starting" in visible(home.text, "gpu") and "Stop gpu" not in visible(home.text, "gpu")
    await set_state(hub, "alice", "gpu", cmd.spawn_id, "running")
    home = await c.get("/hub/home")
    row = visible(home.text, "gpu")
    assert "running" in row and "Open gpu" in row and "Stop gpu" in row and "Delete gpu" not in row
    assert 'href="/user/alice/gpu/" aria-label="Open gpu"' in home.text
    assert "Your server is stopped." in visible(home.text, "")  # the default server is another one

    r = await c.post("/hub/home/servers/gpu/stop", data={"_xsrf": xsrf})
    assert r.status_code == 303 and r.headers["location"] == "/hub/home"
    (stop,) = await hub.commands(1)
    assert isinstance(stop, StopServer) and (stop.server_name, stop.spawn_id) == ("gpu", cmd.spawn_id)
    await set_state(hub, "alice", "gpu", cmd.spawn_id, "stopped")
    row = visible((await c.get("/hub/home")).text, "gpu")
    assert "stopped" in row and "Start gpu" in row and "Delete gpu" in row and "Open gpu" not in row

    r = await c.post("/hub/home/servers/gpu/delete", data={"_xsrf": xsrf})
    assert r.status_code == 303 and r.headers["location"] == "/hub/home"
    model = (await c.get("/hub/api/users/alice?include_stopped_servers=1",
                         headers=await hub.headers_for("alice"))).json()
    assert "gpu" not in model["servers"]
    assert named_rows((await c.get("/hub/home")).text) == []
    r = await c.post("/hub/home/servers/gpu/delete", data={"_xsrf": xsrf})
    assert r.status_code == 404 and "no server named" in r.text


async def test_refused_names_and_the_limit(named: Hub) -> None:
    hub, c = named, named.client
    await hub.login(c, "alice")
    xsrf = hub.xsrf(c)
    for bad in ("GPU", "1gpu", "gpu_x", "a" * 31, "", "a--b"):
        r = await c.post("/hub/home/servers", data={"_xsrf": xsrf, "server_name": bad})
        assert r.status_code == 400 and 'role="alert"' in r.text and "Invalid server name" in r.text, bad
        assert f'value="{bad}"' in r.text  # kept in the field, to be corrected
    for name in ("one", "two"):
        r = await c.post("/hub/home/servers", data={"_xsrf": xsrf, "server_name": name})
        assert r.status_code == 303
        await hub.spawn_command()
    r = await c.post("/hub/home/servers", data={"_xsrf": xsrf, "server_name": "one"})
    assert r.status_code == 409 and "You already have a server named &#39;one&#39;." in r.text
    home = await c.get("/hub/home")
    assert named_rows(home.text) == ["one", "two"]
    assert "You have the maximum of 2 named servers: delete one to create another." in home.text
    field = re.search(r'<input type="text" id="server-name"[^>]*>', home.text)
    assert field and field.group(0).endswith(" disabled>")
    r = await c.post("/hub/home/servers", data={"_xsrf": xsrf, "server_name": "three"})
    assert r.status_code == 400 and "already has the maximum of 2 named servers" in r.text
    assert await hub.commands(1, timeout=0.3) == []


async def test_server_names_and_bad_input_are_escaped(named: Hub) -> None:
    hub, c = named, named.client
    await hub.login(c, "alice")
    r = await c.post("/hub/home/servers", data={"_xsrf": hub.xsrf(c), "server_name": '<img src=x onerror=alert(1)>"'})
    assert r.status_code == 400 and "<img" not in r.text and "&lt;img src=x onerror=alert(1)&gt;&#34;" in r.text
    # a name from before the naming rules (made in the database)
    odd = "<script>x\"&'"
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(select(User.id).where(User.name == "alice"))).scalar_one()
        s.add(Server(user_id=uid, name=odd, desired=DesiredState.STOPPED, user_options={}))
    home = (await c.get("/hub/home")).text
    assert "<script>x" not in home
    assert named_rows(home) == ["&lt;script&gt;x&#34;&amp;&#39;"]
    action = "/hub/home/servers/%3Cscript%3Ex%22%26%27/delete"  # one path segment
    assert f'action="{action}"' in home
    r = await c.post(action, data={"_xsrf": hub.xsrf(c)})
    assert r.status_code == 303
    assert named_rows((await c.get("/hub/home")).text) == []


async def test_not_running_page_starts_that_named_server(named: Hub) -> None:
    hub, c = named, named.client
    await hub.login(c, "alice")
    r = await c.post("/hub/home/servers", data={"_xsrf": hub.xsrf(c), "server_name": "gpu"})
    cmd = await hub.spawn_command()
    await set_state(hub, "alice", "gpu", cmd.spawn_id, "stopped")
    async with hub.sessions() as s, s.begin():  # stopped since (the worker recorded its end)
        await s.execute(Server.__table__.update().where(Server.name == "gpu").values(desired=DesiredState.STOPPED))
    page = await c.get("/hub/user/alice/gpu/lab", headers={"Accept": "text/html"})
    assert page.status_code == 424
    assert "Your server <strong class=\"server-name\">gpu</strong> is not running." in page.text
    assert "<code>/user/alice/gpu/lab</code>" in page.text and "Sign out" in page.text
    assert 'action="/hub/spawn/alice/gpu?next=/user/alice/gpu/lab"' in page.text  # where the browser was going
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf
    r = await c.post("/hub/spawn/alice/gpu?next=/user/alice/gpu/lab", data={"_xsrf": xsrf.group(1)})  # "Start it"
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice/gpu?next=/user/alice/gpu/lab"
    again = await hub.spawn_command()
    assert (again.server_name, again.user) == ("gpu", "alice") and again.spawn_id != cmd.spawn_id
    # the default server's page names it so; an admin sees whose it is
    page = await c.get("/hub/user/alice/lab", headers={"Accept": "text/html"})
    assert page.status_code == 424 and "Your default server is not running." in page.text
    assert 'action="/hub/spawn/alice?next=/user/alice/lab"' in page.text
    async with hub.new_client() as admin:
        await hub.login(admin, "admin")
        page = await admin.get("/hub/user/alice/lab", headers={"Accept": "text/html"})
        assert page.status_code == 424 and "<strong>alice</strong>’s default server is not running." in page.text
