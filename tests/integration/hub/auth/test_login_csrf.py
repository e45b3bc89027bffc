"""Login CSRF: an attacker's own valid form token, planted in a victim's browser with its cookie, must not
log the victim in as the attacker (the security review's attack), nor create an account through sign-up."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from fleethub.services.auth.xsrf import PRESESSION_COOKIE, form_token
from fleethub.shared.db.models import Account, LoginSession, User
from tests.support.hub import BASE_URL, PASSWORDS, XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

CROSS_SITE = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
SAME_ORIGIN = {"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}


async def _attacker_pair(hub: Hub, form: str = "/hub/login") -> tuple[dict[str, str], str]:
    """What the attacker gets by loading the form in their own browser: its cookies and its token."""
    async with hub.new_client() as attacker:
        page = await attacker.get(form)
        m = XSRF_FIELD.search(page.text)
        assert m, page.text
        return {c.name: c.value or "" for c in attacker.cookies.jar}, m.group(1)


def _plant(victim: httpx.AsyncClient, cookies: dict[str, str]) -> None:
    """What code under /user/attacker/ can do in the victim's browser: set the hub's cookies for path `/`."""
    for name, value in cookies.items():
        victim.cookies.set(name, value, domain="127.0.0.1", path="/")


async def _sessions(hub: Hub) -> int:
    async with hub.sessions() as s:
        return (await s.execute(select(func.count()).select_from(LoginSession))).scalar_one()


async def test_planted_token_and_cookie_do_not_log_the_victim_in(hub: Hub) -> None:
    cookies, token = await _attacker_pair(hub)
    assert PRESESSION_COOKIE in cookies
    form = {"username": "alice", "password": PASSWORDS["alice"], "_xsrf": token}  # the attacker's own account
    sibling = {"Origin": "http://attacker.127.0.0.1.example", "Sec-Fetch-Site": "same-site"}
    for headers in (CROSS_SITE, sibling, {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/attack.html"}, {"Sec-Fetch-Site": "cross-site"}):
        async with hub.new_client() as victim:
            _plant(victim, cookies)
            r = await victim.post("/hub/login", data=form, headers=headers)
            assert r.status_code == 403, (headers, r.status_code)
            assert "jupyterhub-hub-login" not in r.cookies and "session expired" in r.text
    assert await _sessions(hub) == 0
    # the same pair from the attacker's own browser, same-origin, does log in: the refusals above are the guard's
    async with hub.new_client() as attacker:
        _plant(attacker, cookies)
        r = await attacker.post("/hub/login", data=form, headers=SAME_ORIGIN)
        assert r.status_code == 302 and "jupyterhub-hub-login" in r.cookies
    assert await _sessions(hub) == 1


async def test_the_hub_cookie_at_hub_path_wins_over_a_planted_one(hub: Hub) -> None:
    """A client that sends no Origin/Sec-Fetch-* (an old browser) still needs the token of its own pre-session:
    the hub's cookie at /hub/ is sent before one planted at /, and the planted one is not used."""
    cookies, token = await _attacker_pair(hub)
    async with hub.new_client() as victim:
        own = XSRF_FIELD.search((await victim.get("/hub/login")).text)
        assert own
        _plant(victim, cookies)
        sent = victim.cookies.jar
        assert sorted(c.path for c in sent if c.name == PRESESSION_COOKIE) == ["/", "/hub/"]
        r = await victim.post("/hub/login", data={"username": "alice", "password": PASSWORDS["alice"], "_xsrf": token})
        assert r.status_code == 403 and "jupyterhub-hub-login" not in r.cookies
        # the victim's own form still works, and logging in drops the pre-session cookie
        r = await victim.post("/hub/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                                  "_xsrf": own.group(1)}, headers=SAME_ORIGIN)
        assert r.status_code == 302
        cleared = [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{PRESESSION_COOKIE}=")]
        assert cleared and "max-age=0" in cleared[0].lower()


async def test_presession_cookie_and_token_rules(hub: Hub) -> None:
    async with hub.new_client() as c:
        page = await c.get("/hub/login")
        cookie = next(v for v in page.headers.get_list("set-cookie") if v.startswith(f"{PRESESSION_COOKIE}="))
        attrs = cookie.lower()
        assert "httponly" in attrs and "samesite=lax" in attrs and "path=/hub/" in attrs and "domain" not in attrs
        assert "max-age=3600" in attrs
        presession = c.cookies.get(PRESESSION_COOKIE, path="/hub/")
        assert presession
        # a token older than an hour, or made for another pre-session, or tampered with: refused
        for bad in (form_token(hub.secret_key, presession, now=time.time() - 3700),
                    form_token(hub.secret_key, "another-presession-id-0123"),
                    form_token("x" * 40, presession), XSRF_FIELD.search(page.text).group(1) + "x"):  # type: ignore[union-attr]
            r = await c.post("/hub/login", data={"username": "alice", "password": PASSWORDS["alice"], "_xsrf": bad})
            assert r.status_code == 403, bad
        # the form reloaded in the same browser keeps its pre-session: two tabs both work
        first = XSRF_FIELD.search(page.text).group(1)  # type: ignore[union-attr]
        await c.get("/hub/login")
        assert c.cookies.get(PRESESSION_COOKIE, path="/hub/") == presession
        r = await c.post("/hub/login", data={"username": "alice", "password": PASSWORDS["alice"], "_xsrf": first},
                         headers=SAME_ORIGIN)
        assert r.status_code == 302


async def test_origin_of_the_public_url_or_the_host_is_ours(tmp_path: Path, nats_url: str, database_url: str,
                                                            nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, public_url="https://hub.example.org")
    async with running_hub(settings) as hub:
        for base, origin in (("https://hub.example.org", "https://hub.example.org"),
                             ("https://hub.example.org", "https://hub.example.org:443"),
                             ("https://10.0.0.5:8443", "https://10.0.0.5:8443")):  # the Host it was sent to
            async with httpx.AsyncClient(transport=hub.transport, base_url=base) as c:
                m = XSRF_FIELD.search((await c.get("/hub/login")).text)
                assert m
                r = await c.post("/hub/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                                     "_xsrf": m.group(1)}, headers={"Origin": origin})
                assert r.status_code == 302, (base, origin)
        async with httpx.AsyncClient(transport=hub.transport, base_url="https://hub.example.org") as c:
            m = XSRF_FIELD.search((await c.get("/hub/login")).text)
            assert m
            r = await c.post("/hub/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                                 "_xsrf": m.group(1)}, headers={"Origin": "https://hub.example.org.evil.example"})
            assert r.status_code == 403


async def test_cross_site_sign_up_is_refused(tmp_path: Path, nats_url: str, database_url: str,
                                             nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"open_signup": True})
    async with running_hub(settings) as hub:
        cookies, token = await _attacker_pair(hub, "/hub/signup")
        form = {"username": "planted", "password": "planted-password", "_xsrf": token}
        async with hub.new_client() as victim:
            _plant(victim, cookies)
            assert (await victim.post("/hub/signup", data=form, headers=CROSS_SITE)).status_code == 403
            r = await victim.post("/hub/signup", data=form, headers={"Sec-Fetch-Site": "same-site"})
            assert r.status_code == 403
        async with hub.sessions() as s:
            planted = select(User.name).join(Account, Account.user_id == User.id)
            assert "planted" not in set((await s.execute(planted)).scalars())
        async with hub.new_client() as attacker:  # the same form from the attacker's own browser is fine
            _plant(attacker, cookies)
            assert (await attacker.post("/hub/signup", data=form, headers=SAME_ORIGIN)).status_code == 201
