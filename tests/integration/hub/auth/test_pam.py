"""The `pam` authenticator through the hub's login form, against the host's real PAM and real Unix accounts."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pamela
import pytest
from sqlalchemy import select

from fleethub.shared.authenticators import load_authenticator
from fleethub.shared.db.models import User
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.pam_service import (
    badly_named_user,
    clear_password,
    expire,
    lock,
    pam_service,
    pam_user,
    threads_in_pam,
    unix_group,
)
from tests.support.unix_users import unique_name

pytestmark = pytest.mark.integration
INVALID = "Invalid username or password"


@pytest.fixture
def password() -> str:
    return f"Pw-{secrets.token_urlsafe(12)}"


@pytest.fixture
def service() -> Iterator[str]:
    with pam_service() as name:
        yield name


@pytest.fixture
def pam_hub_settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> Any:
    def make(pam: dict[str, Any], **auth: Any) -> ServiceSettings:
        return hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"authenticator": "pam", "pam": pam, **auth})
    return make


async def _refused(hub: Hub, user: str, password: str) -> None:
    async with hub.new_client() as c:
        r = await hub.login(c, user, password)
        assert r.status_code == 403 and INVALID in r.text, (user, r.status_code)
        assert "jupyterhub-hub-login" not in r.cookies


async def _admin_flag(hub: Hub, name: str) -> bool | None:
    async with hub.sessions() as s:
        flag: bool | None = (await s.execute(select(User.admin).where(User.name == name))).scalar()
        return flag


async def test_login_with_the_unix_password(pam_hub_settings: Any, service: str, password: str) -> None:
    with pam_user(password) as name, pam_user(password) as nopw:
        clear_password(nopw)
        async with running_hub(pam_hub_settings({"service": service}, allow_all=True)) as hub:
            r = await hub.login(hub.client, name, password)
            assert r.status_code == 302 and r.headers["location"] == "/hub/home"
            home = await hub.client.get("/hub/home")
            assert home.status_code == 200 and name in home.text
            me = await hub.client.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(hub.client)})
            assert me.json()["name"] == name and me.json()["admin"] is False
            await _refused(hub, name, password + "x")
            await _refused(hub, unique_name("fhx"), password)  # no such account: refused, no error
            await _refused(hub, name.upper(), password)  # no such account (Unix names are case-sensitive)
            await _refused(hub, "alice", "alice-password")  # the hub's password accounts mean nothing to PAM


async def test_a_name_that_is_not_its_own_hub_name_is_refused(pam_hub_settings: Any, service: str,
                                                               password: str) -> None:
    """Unix account 'Fhp…' would be hub user 'fhp…': refused, or one hub user were two accounts."""
    with pam_user(password) as name, badly_named_user(name.capitalize(), password) as upper:
        pamela.authenticate(upper, password, service=service)  # PAM itself accepts it
        async with running_hub(pam_hub_settings({"service": service}, allow_all=True)) as hub:
            await _refused(hub, upper, password)
            assert await _admin_flag(hub, name) is None  # nobody logged in as the lowercase account's hub user
            assert (await hub.login(hub.client, name, password)).status_code == 302


async def test_empty_password_never_reaches_pam(pam_hub_settings: Any, password: str) -> None:
    nullok = "auth required pam_unix.so nullok nodelay\naccount required pam_unix.so\n"
    with pam_service(nullok, "accepts empty passwords") as service, pam_user(password) as name:
        clear_password(name)
        pamela.authenticate(name, "", service=service)  # this service would let an empty password in
        async with running_hub(pam_hub_settings({"service": service}, allow_all=True)) as hub:
            await _refused(hub, name, "")


async def test_locked_and_expired_accounts(pam_hub_settings: Any, service: str, password: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fleethub.shared.authenticators.pam")
    with pam_user(password) as locked, pam_user(password) as expired:
        lock(locked)
        expire(expired)
        async with running_hub(pam_hub_settings({"service": service}, allow_all=True)) as hub:
            await _refused(hub, locked, password)
            await _refused(hub, expired, password)
        logged = [r.getMessage() for r in caplog.records]
        assert any(expired in m and "may not log in" in m and "expired" in m.lower() for m in logged), logged
        assert any(locked in m and "refused" in m for m in logged), logged
        assert not any(password in m for m in logged)
        # without the account check the expired account's right password is enough
        async with running_hub(pam_hub_settings({"service": service, "check_account": False}, allow_all=True)) as hub:
            assert (await hub.login(hub.client, expired, password)).status_code == 302
            await _refused(hub, locked, password)  # a locked password matches nothing


async def test_unix_groups_make_admins_and_allow(pam_hub_settings: Any, service: str, password: str) -> None:
    with unix_group() as admins, unix_group() as members, pam_user(password, admins) as boss, \
            pam_user(password, members) as member, pam_user(password) as solo, pam_user(password) as outsider:
        # [auth] and [auth.pam] groups add up; a primary group counts (solo's own group is named solo)
        settings = pam_hub_settings({"service": service, "admin_groups": [admins], "allowed_groups": [solo]},
                                    allowed_groups=[members])
        async with running_hub(settings) as hub:
            for name in (boss, member, solo):
                async with hub.new_client() as c:
                    assert (await hub.login(c, name, password)).status_code == 302, name
            assert await _admin_flag(hub, boss) is True
            assert await _admin_flag(hub, member) is False and await _admin_flag(hub, solo) is False
            await _refused(hub, outsider, password)
            assert await _admin_flag(hub, outsider) is None  # never recorded


async def test_the_event_loop_answers_while_pam_delays_a_failure(pam_hub_settings: Any, password: str) -> None:
    """The stock `login` service: pam_faildelay holds a wrong password 2–3 s, in a worker thread."""
    with pam_user(password) as name:
        async with running_hub(pam_hub_settings({"service": "login"}, allow_all=True)) as hub:
            done: list[str] = []

            async def failing() -> httpx.Response:
                async with hub.new_client() as c:
                    r = await hub.login(c, name, password + "x")
                    done.append("failed login")
                    return r

            attempt = asyncio.create_task(failing())
            while threads_in_pam() == 0:  # until PAM holds the attempt
                assert not attempt.done(), "the failed login finished before PAM was seen"
                await asyncio.sleep(0.01)
            async with hub.new_client() as other:
                assert (await other.get("/hub/login")).status_code == 200
                done.append("other request")
            r = await attempt
            assert r.status_code == 403 and INVALID in r.text
            assert done == ["other request", "failed login"]


async def test_pam_calls_are_bounded(pam_hub_settings: Any, password: str) -> None:
    with pam_user(password) as first, pam_user(password) as second:
        async with running_hub(pam_hub_settings({"service": "login", "max_concurrent": 1}, allow_all=True)) as hub:
            async def failing(name: str) -> int:
                async with hub.new_client() as c:
                    return (await hub.login(c, name, password + "x")).status_code

            attempts = [asyncio.create_task(failing(n)) for n in (first, second)]
            seen = set()
            while not all(a.done() for a in attempts):
                seen.add(threads_in_pam())
                await asyncio.sleep(0.01)
            assert [a.result() for a in attempts] == [403, 403]
            assert 1 in seen and max(seen) == 1, seen


async def test_open_sessions(pam_hub_settings: Any, password: str, tmp_path: Path) -> None:
    record = tmp_path / "sessions.log"
    script = tmp_path / "record-session"
    script.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER $PAM_SERVICE" >> {record}\n')
    script.chmod(0o755)
    stack = f"auth required pam_unix.so nodelay\naccount required pam_unix.so\nsession required pam_exec.so {script}\n"
    with pam_service(stack, "records sessions") as service, pam_user(password) as name:
        async with running_hub(pam_hub_settings({"service": service, "open_sessions": True}, allow_all=True)) as hub:
            assert (await hub.login(hub.client, name, password)).status_code == 302
            assert record.read_text().splitlines() == [f"open_session {name} {service}"]
            r = await hub.client.get("/hub/logout")
            assert r.status_code == 302 and r.headers["location"] == "/hub/login"
            assert record.read_text().splitlines() == [f"open_session {name} {service}",
                                                       f"close_session {name} {service}"]
            assert (await hub.client.get("/hub/home")).status_code == 302  # logged out
        record.unlink()
        async with running_hub(pam_hub_settings({"service": service}, allow_all=True)) as hub:
            assert (await hub.login(hub.client, name, password)).status_code == 302
            assert (await hub.client.get("/hub/logout")).status_code == 302
            assert not record.exists()  # open_sessions off: no session


def test_settings_and_groups(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.pam\.encoding.*unknown encoding"):
        load_settings(None, data_dir=tmp_path, auth={"authenticator": "pam", "pam": {"encoding": "no-such"}})
    settings = load_settings(None, data_dir=tmp_path, auth={
        "authenticator": "pam", "admin_groups": ["a"], "allowed_groups": ["b"],
        "pam": {"admin_groups": ["a", "c"], "allowed_groups": ["d"]}})
    pam = load_authenticator(settings)
    assert pam.name == "pam" and pam.admin_groups == ["a", "c"] and pam.allowed_groups == ["b", "d"]
