"""Spawning through the hub's spawn form (`/hub/spawn`), from an httpx client or a Playwright page.

Any backend's tests (local, system-user, docker, batch) use it to start a server the way a browser does:
choose a profile and, for a docker profile, an image; the field names follow the form (`image` with one
profile, `<slug>:image` with several).
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page

from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, running_stack

XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')


def _field(html: str, profile: str | None, option: str) -> str:
    several = 'type="radio" name="profile"' in html
    return f"{profile}:{option}" if several and profile else option


async def spawn_through_form(client_or_page: httpx.AsyncClient | Page, *, profile: str | None = None,
                             image: str | None = None, user: str | None = None, server: str = "",
                             base_url: str = "", extra: dict[str, str] | None = None) -> httpx.Response | None:
    """Open the spawn form (of `user`, default the logged-in one; of their named `server`, which needs
    `user`), choose `profile` and `image`, press Start.

    An httpx client (logged in, its cookies holding the session) gets the POST's response (302 to the
    pending page, or 400 with the form and its message). A Playwright page (logged in) is left on the page
    the form leads to; `base_url` is the hub's public origin then. `extra` adds fields (httpx only).
    """
    assert user or not server, "a named server's form is /hub/spawn/<user>/<server>: give the user"
    path = f"/hub/spawn/{user}" + (f"/{server}" if server else "") if user else "/hub/spawn"
    if isinstance(client_or_page, httpx.AsyncClient):
        form = await client_or_page.get(path)
        assert form.status_code == 200, (form.status_code, form.text[:500])
        xsrf = XSRF_FIELD.search(form.text)
        assert xsrf, form.text
        data: dict[str, Any] = {"_xsrf": xsrf.group(1), **(extra or {})}
        if profile is not None:
            data["profile"] = profile
        if image is not None:
            data[_field(form.text, profile, "image")] = image
        return await client_or_page.post(path, data=data)
    page = client_or_page
    await page.goto(f"{base_url}{path}")
    html = await page.content()
    if profile is not None and 'type="radio" name="profile"' in html:
        await page.check(f'input[name="profile"][value="{profile}"]')
    if image is not None:
        await page.select_option(f'select[name="{_field(html, profile, "image")}"]', image)
    await page.click('#spawn_form input[type="submit"]')
    return None


PROFILE_PASSWORDS = {"alice": "alice-password-1"}


def profiles(dump_dir: Path) -> list[dict[str, object]]:
    """Two profiles on the local backend, told apart by their environment and memory limit."""
    return [
        {"display_name": "Small", "slug": "small", "default": True,
         "overrides": {"mem_limit": "512M", "environment": {"SIZE": "small",
                                                            "FAKE_ENV_DUMP": str(dump_dir / "small.json")}}},
        {"display_name": "Big", "slug": "big", "description": "more memory",
         "overrides": {"mem_limit": "2G", "cpu_limit": 2,
                       "environment": {"SIZE": "big", "FAKE_ENV_DUMP": str(dump_dir / "big.json"),
                                       "FAKE_START_DELAY": "2"}}},  # time to see the pending page
    ]


@asynccontextmanager
async def profiles_stack(tmp_path: Path, nats_url: str, database_url: str,
                         nats_namespace: str) -> AsyncIterator[Cluster]:
    """A whole hub (real processes, a local spawner worker running the small fake server) offering
    `profiles(tmp_path)`: each server dumps its environment to `<slug>.json` in `tmp_path`. alice logs in
    with `PROFILE_PASSWORDS`."""
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PROFILE_PASSWORDS,
        auth={"authenticator": "password"}, api={"slow_spawn_timeout": 1},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "profiles": profiles(tmp_path)},
        proxy={"port": free_port()},
    ) as c:
        yield c
