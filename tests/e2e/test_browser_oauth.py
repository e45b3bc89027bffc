"""A real browser (Chromium driven by Playwright) signs in through a real OpenID Connect provider: the hub's
"Sign in with …" button, the provider's own login and consent pages, back to the hub's home page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.shared.net import free_port
from tests.support.browser import chromium_page
from tests.support.cluster import Cluster, running_stack
from tests.support.oidc_provider import OidcProvider, running_provider

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str,
                nats_namespace: str) -> AsyncIterator[tuple[Cluster, OidcProvider]]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/hub/oauth_callback"
    with running_provider(redirect_uris=[callback], accounts={"alice": {"groups": ["staff"]}}) as provider:
        oauth = provider.settings(scope=["openid", "profile", "groups"], allowed_groups=["staff"],
                                  login_service="Test OIDC")
        async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
                                 auth={"authenticator": "oauth", "oauth": oauth}, proxy={"port": port}) as cluster:
            yield cluster, provider


async def test_sign_in_with_the_provider_in_chromium(stack: tuple[Cluster, OidcProvider]) -> None:
    cluster, provider = stack
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    async with chromium_page() as page:
        # the provider's page style imports a web font: nothing leaves 127.0.0.1
        await page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda route: route.abort())
        await page.goto(f"{base}/hub/")
        assert "/hub/login" in page.url
        await page.get_by_text("Sign in with Test OIDC").click()
        await page.wait_for_url(re.compile(re.escape(provider.issuer) + r"/interaction/.*"))
        await page.fill("input[name=login]", "alice")
        await page.fill("input[name=password]", "any-password")
        await page.click("button[type=submit]")
        await page.get_by_text("Continue").wait_for()  # the provider's consent page
        await page.click("button[type=submit]")
        await page.wait_for_url(re.compile(re.escape(base) + r"/hub/home$"))
        assert "alice" in await page.content()
        cookies = {c["name"]: c for c in await page.context.cookies(f"{base}/hub/")}
        assert cookies["jupyterhub-hub-login"]["httpOnly"] and "fleethub-oauth-state" not in cookies
