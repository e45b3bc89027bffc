"""The spawn form (`/hub/spawn`): the profiles and each backend's options offered, the user_options a
posted form makes, refused choices (400, nothing started) and the pending page's progress messages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleethub.shared.events import ServerProgress, SpawnServer
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.spawn_form import spawn_through_form
from tests.support.spawns import mark

pytestmark = pytest.mark.integration

PROFILES: list[dict[str, Any]] = [
    {"display_name": "Small <this machine>", "slug": "small", "description": "1 GB & one core", "default": True,
     "overrides": {"mem_limit": "1G", "environment": {"SIZE": "small"}}},
    {"display_name": "Big", "slug": "big", "description": "4 GB, two cores",
     "overrides": {"mem_limit": "4G", "cpu_limit": 2, "environment": {"SIZE": "big"}}},
    {"display_name": "Container", "slug": "box", "backend": "docker",
     "overrides": {"docker": {"image": "fh/base:1",
                              "allowed_images": {"Base": "fh/base:1", "Science <x>": "fh/science:2"}}}},
]


@pytest.fixture
async def hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, spawner={"profiles": PROFILES},
                            api={"allow_named_servers": True, "named_server_limit_per_user": 1})
    async with running_hub(settings) as h:
        yield h


def _radios(html: str) -> list[tuple[str, bool]]:
    return [(m.group(1), bool(m.group(2)))
            for m in re.finditer(r'<input type="radio" name="profile" value="([^"]+)"[^>]*?( checked)?>', html)]


async def test_the_form_offers_each_profile_and_the_docker_images(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    home = await c.get("/hub/home")  # something to choose: "Start" leads to the form, it does not start
    assert '<a href="/hub/spawn">Start my server</a>' in home.text
    page = await c.get("/hub/spawn")
    assert page.status_code == 200
    assert _radios(page.text) == [("small", True), ("big", False), ("box", False)]
    text = page.text
    # every configured value is escaped
    assert "Small &lt;this machine&gt;" in text and "<this machine>" not in text
    assert "1 GB &amp; one core" in text and "4 GB, two cores" in text
    select = re.search(r'<select name="box:image">(.*?)</select>', text)
    assert select, text
    assert re.findall(r'<option value="([^"]*)"( selected)?>', select.group(1)) == [
        ("Base", " selected"), ("Science &lt;x&gt;", "")]
    assert text.count("<select") == 1  # the local profiles take no options
    assert await hub.commands(1, timeout=0.3) == []  # showing the form starts nothing


async def test_posting_a_profile_starts_it_with_its_options_recorded(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="big", extra={"small:image": "ignored", "note": "kept"})
    assert r is not None and r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice"
    cmd = await hub.spawn_command()
    # the chosen profile's fields only; a field posted once is a string
    assert cmd.user_options == {"profile": "big", "note": "kept"}
    model = (await c.get("/hub/api/users/alice", headers=await hub.headers_for("alice"))).json()
    assert model["servers"][""]["user_options"] == {"profile": "big", "note": "kept"}


async def test_posting_the_docker_profile_with_an_image(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="box", image="Science <x>")
    assert r is not None and r.status_code == 302
    cmd = await hub.spawn_command()
    assert cmd.user_options == {"profile": "box", "image": "Science <x>"}


async def test_no_profile_posted_is_the_default_one(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await c.post("/hub/spawn", data={"_xsrf": hub.xsrf(c)})
    assert r.status_code == 302
    assert (await hub.spawn_command()).user_options == {"profile": "small"}


async def test_refused_choices_show_the_form_again_and_start_nothing(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="<huge>")
    assert r is not None and r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "unknown profile &#39;&lt;huge&gt;&#39;; this hub offers: small, big, box" in r.text
    assert "<huge>" not in r.text and "Traceback" not in r.text
    assert _radios(r.text) == [("small", True), ("big", False), ("box", False)]  # the form, to choose again
    r = await spawn_through_form(c, profile="box", image="evil/miner:latest")
    assert r is not None and r.status_code == 400
    assert "image &#39;evil/miner:latest&#39; is not allowed; choose one of: Base, Science &lt;x&gt;" in r.text
    assert ("box", True) in _radios(r.text)  # the choice is kept
    # another profile's field is not this one's option
    r = await spawn_through_form(c, profile="big", extra={"box:image": "evil/miner:latest"})
    assert r is not None and r.status_code == 302
    (cmd,) = await hub.commands(5, timeout=1.0)  # only the last one started
    assert isinstance(cmd, SpawnServer) and cmd.user_options == {"profile": "big"}


async def test_the_form_needs_the_sessions_xsrf_token(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    assert (await c.post("/hub/spawn", data={"profile": "big"})).status_code == 403
    assert (await c.post("/hub/spawn", data={"profile": "big", "_xsrf": "x.y"})).status_code == 403
    async with hub.new_client() as other:  # another session's token is not this one's
        await hub.login(other, "admin")
        r = await c.post("/hub/spawn", data={"profile": "big", "_xsrf": hub.xsrf(other)})
        assert r.status_code == 403
    assert await hub.commands(1, timeout=0.3) == []


async def test_the_pending_page_lists_the_spawns_progress(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="box", image="Base")
    assert r is not None and r.status_code == 302
    cmd = await hub.spawn_command()
    for step in ("Server requested", "queued", "creating container <jupyter-alice>"):
        await hub.bus.publish(ServerProgress(user="alice", server_name="", spawn_id=cmd.spawn_id, progress=50,
                                             message=step))
    page = ""
    for _ in range(100):  # the api's core subscription delivers them
        page = (await c.get("/hub/spawn-pending/alice")).text
        if "creating container" in page:
            break
        await asyncio.sleep(0.05)
    steps = re.search(r'<ol class="progress">(.*?)</ol>', page)
    assert steps, page
    assert steps.group(1) == ("<li>Server requested</li><li>queued</li>"
                              "<li>creating container &lt;jupyter-alice&gt;</li>")


async def test_a_failed_start_tries_again_through_the_form(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="big")
    assert r is not None and r.status_code == 302
    cmd = await hub.spawn_command()
    await mark(hub, "alice", "", cmd.spawn_id, "failed", "out of <memory>", started=False)
    page = await c.get("/hub/spawn-pending/alice")
    assert page.status_code == 500 and "Spawn failed: out of &lt;memory&gt;" in page.text
    # something to choose: "Try again" is the form again (a link: nothing starts before a choice)
    assert '<a class="button" id="try-again" href="/hub/spawn/alice">Try again</a>' in page.text
    assert 'method="post"' not in page.text
    form = await c.get("/hub/spawn/alice")
    assert form.status_code == 200 and ("small", True) in _radios(form.text)


async def test_a_named_server_through_the_form(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    page = await c.get("/hub/spawn/alice/gpu")
    assert page.status_code == 200 and 'action="/hub/spawn/alice/gpu"' in page.text
    r = await spawn_through_form(c, user="alice", server="gpu", profile="big")
    assert r is not None
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice/gpu"
    cmd = await hub.spawn_command()
    assert (cmd.server_name, cmd.user_options) == ("gpu", {"profile": "big"})
    assert (await c.get("/hub/spawn/alice/gpu")).headers["location"] == "/hub/spawn-pending/alice/gpu"
    # the REST start's rules for named servers: a valid name, the per-user limit; the form says why
    for name, why in (("Bad_Name", "Invalid server name"), ("second", "already has the maximum of 1 named")):
        r = await c.post(f"/hub/spawn/alice/{name}", data={"_xsrf": hub.xsrf(c), "profile": "box"})
        assert r.status_code == 400 and why in r.text and ("box", True) in _radios(r.text), r.text
    assert await hub.commands(1, timeout=0.3) == []


async def test_the_form_posts_back_to_the_user_it_names(hub: Hub) -> None:
    await hub.headers_for("a%2fb")  # a user whose name holds a percent sign
    async with hub.new_client() as admin:
        await hub.login(admin, "admin")
        page = await admin.get("/hub/spawn/a%252fb")
        assert page.status_code == 200 and 'action="/hub/spawn/a%252fb"' in page.text, page.text
        r = await spawn_through_form(admin, user="a%252fb", profile="big")
        assert r is not None and r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/a%252fb"
    cmd = await hub.spawn_command()
    assert (cmd.user, cmd.user_options) == ("a%2fb", {"profile": "big"})


async def test_a_form_field_postgresql_cannot_store_is_a_400_and_starts_nothing(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    for extra in ({"note": "a\x00b"}, {"no\x00te": "x"}):
        r = await spawn_through_form(c, profile="big", extra=extra)
        assert r is not None and r.status_code == 400, (extra, r.status_code, r.text[:300])
        assert "Traceback" not in r.text and ("big", True) in _radios(r.text)
    assert await hub.commands(1, timeout=0.3) == []
    model = (await c.get("/hub/api/users/alice", headers=await hub.headers_for("alice"))).json()
    assert model["servers"] == {}


async def test_a_huge_form_is_refused_and_starts_nothing(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="big", extra={"note": "x" * (2 * 1024 * 1024)})
    assert r is not None and r.status_code in (400, 413), (r.status_code, r.text[:300])
    assert "x" * 100 not in r.text
    assert await hub.commands(1, timeout=0.3) == []


async def test_options_too_large_for_a_command_are_a_400_and_hold_up_nobody(hub: Hub) -> None:
    # a command over the bus's limits was accepted, then never carried out (a spawn pending forever), or, near
    # 1 MiB, never published: the outbox relay stopped at it and every other user's command waited behind it
    c = hub.client
    alice = await hub.headers_for("alice")
    for size in (300_000, 1_048_480):
        r = await c.post("/hub/api/users/alice/server", headers=alice, json={"user_options": {"n": "x" * size}})
        assert r.status_code == 400 and "user_options" in r.json()["message"], (size, r.status_code, r.text[:300])
    await hub.login(c, "alice")
    r = await spawn_through_form(c, profile="big", extra={"note": "x" * 300_000})
    assert r is not None and r.status_code == 400 and "x" * 100 not in r.text, (r.status_code, r.text[:300])
    model = (await c.get("/hub/api/users/alice", headers=alice)).json()
    assert model["servers"] == {}
    r = await c.post("/hub/api/users/bob/server", headers=await hub.headers_for("bob"), json={})
    assert r.status_code in (201, 202)
    (cmd,) = await hub.commands(1, timeout=5)
    assert isinstance(cmd, SpawnServer) and cmd.user == "bob"
