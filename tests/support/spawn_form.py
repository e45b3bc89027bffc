"""Spawning through the hub's spawn form (`/hub/spawn`), from an httpx client or a Playwright page.

Any backend's tests (local, system-user, docker, batch) use it to start a server the way a browser does:
choose a profile and, for a docker profile, an image; the field names follow the form (`image` with one
profile, `<slug>:image` with several).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.async_api import Page

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
