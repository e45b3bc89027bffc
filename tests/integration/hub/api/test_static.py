"""`/hub/static/<file>` and `/hub/logo` from the api: versioned URLs cached for long, others revalidated
(ETag, 304), the right content types, no listing and nothing outside the package's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleethub.shared.settings import ServiceSettings
from fleethub.shared.templating import STATIC_DIR, static_version
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


async def test_packaged_files_with_their_version_are_cached_for_long(hub: Hub) -> None:
    version = static_version("fleethub.css")
    r = await hub.client.get(f"/hub/static/fleethub.css?v={version}")
    assert r.status_code == 200 and r.content == (STATIC_DIR / "fleethub.css").read_bytes()
    assert r.headers["content-type"] == "text/css; charset=utf-8" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["etag"] == f'"{version}"'
    for url in ("/hub/static/fleethub.css", "/hub/static/fleethub.css?v=0123456789ab"):  # another version: revalidate
        r = await hub.client.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    r = await hub.client.get("/hub/static/fleethub.css", headers={"If-None-Match": f'"{version}"'})
    assert r.status_code == 304 and not r.content and r.headers["etag"] == f'"{version}"'
    r = await hub.client.head(f"/hub/static/fleethub.css?v={version}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    # the pages link the stylesheet with its version
    page = await hub.client.get("/hub/login")
    assert f'href="/hub/static/fleethub.css?v={version}"' in page.text


async def test_no_listing_no_dot_files_no_escape(hub: Hub) -> None:
    for path in ("/hub/static/", "/hub/static/nope.css", "/hub/static/.hidden",
                 "/hub/static/%2e%2e/templates/page.html", "/hub/static/..%2fshared%2ftemplating.py",
                 "/hub/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/hub/static//etc/passwd",
                 "/hub/static/fleethub.css%00.png", "/hub/static/..%5c..%5cpyproject.toml"):
        r = await hub.client.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 404, (path, r.status_code)
        assert "templating" not in r.text and "[project]" not in r.text and "root:" not in r.text
        assert 'id="error-title">404 Not Found</h1>' in r.text  # the error page, as a browser sees it
    assert (await hub.client.get("/hub/logo")).status_code == 404  # no logo_file


@pytest.fixture
def logo_settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    (tmp_path / "brand.png").write_bytes(PNG)
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, pages={"logo_file": tmp_path / "brand.png"})


async def test_logo_file(logo_settings: ServiceSettings, tmp_path: Path) -> None:
    async with running_hub(logo_settings) as hub:
        page = await hub.client.get("/hub/login")
        start = page.text.index('<img src="/hub/logo?v=') + len('<img src="')
        url = page.text[start:page.text.index('"', start)]
        r = await hub.client.get(url)
        assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        r = await hub.client.get("/hub/logo", headers={"If-None-Match": r.headers["etag"]})
        assert r.status_code == 304
        # replaced while the hub runs: served at once, the old version's URL no longer cached for long
        (tmp_path / "brand.png").write_bytes(PNG + b"new")
        r = await hub.client.get(url)
        assert r.content == PNG + b"new" and r.headers["cache-control"] == "no-cache"
        (tmp_path / "brand.png").unlink()
        assert (await hub.client.get("/hub/logo")).status_code == 404
