"""Login time per authenticator, all in one run on the same machine (not part of the test suite).

Run: `python bench/login/run.py` (which calls pytest on this file with the tests' fixtures: real NATS,
PostgreSQL, slapd, PAM, oidc-provider and the GitHub stand-in). Each benchmark logs one user in `ROUNDS`
times after one warm-up through the hub's own pages, with a fresh browser each time:

- form logins (`password`, `ldap`, `pam`): GET /hub/login (the XSRF token), then POST the form, until the
  302 with the hub's cookie;
- redirect logins (`oauth`, `github`): GET /hub/oauth_login → the provider signs the user in (oidc-provider
  with a kept provider session, so no form; the GitHub stand-in's authorize form posted) → GET
  /hub/oauth_callback, until the 302 with the hub's cookie.

Each benchmark appends one JSON line to `bench/login/results.jsonl`; run.py turns them into results.md.
"""

from __future__ import annotations

import html
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from fleethub.shared.settings import ServiceSettings
from tests.integration.hub.auth.test_github import HIDDEN, HUB_APP
from tests.integration.hub.auth.test_ldap import TEMPLATE, plain
from tests.integration.hub.auth.test_oauth_login import CALLBACK, browser, log_in, oauth_hub_settings
from tests.support.github_standin import running_github
from tests.support.hub import PASSWORDS, hub_settings, running_hub
from tests.support.oidc_provider import running_provider
from tests.support.pam_service import pam_service, pam_user
from tests.support.slapd import PASSWORDS as LDAP_PASSWORDS
from tests.support.slapd import running_slapd

ROUNDS = 20
OUT = Path(__file__).with_name("results.jsonl")


def _record(name: str, what: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    row = {"authenticator": name, "flow": what, "rounds": len(ms), "median_ms": round(statistics.median(ms), 1),
           "min_ms": round(ms[0], 1), "max_ms": round(ms[-1], 1), "python": platform.python_version(),
           "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"\n{name}: median {row['median_ms']} ms (min {row['min_ms']}, max {row['max_ms']}) over {len(ms)}")


async def _timed(one: Callable[[], Awaitable[None]]) -> list[float]:
    await one()  # warm-up: connections, caches, discovery
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        await one()
        times.append(time.perf_counter() - t0)
    return times


async def _form_logins(name: str, settings: ServiceSettings, user: str, password: str) -> None:
    async with running_hub(settings) as hub:
        async def one() -> None:
            async with hub.new_client() as c:
                r = await hub.login(c, user, password)
                assert r.status_code == 302 and c.cookies.get("jupyterhub-hub-login", path="/hub/"), r.text[:300]
        _record(name, "GET /hub/login + POST → 302 with cookie", await _timed(one))


def _settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
              **auth: Any) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={**auth, "login_throttle": False})


async def bench_password(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = _settings(tmp_path, nats_url, database_url, nats_namespace, authenticator="password")
    await _form_logins("password", settings, "alice", PASSWORDS["alice"])


async def bench_ldap(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    with running_slapd() as slapd:
        settings = _settings(tmp_path, nats_url, database_url, nats_namespace, authenticator="ldap",
                             allow_all=True, ldap=plain(slapd, bind_dn_template=[TEMPLATE]))
        await _form_logins("ldap (bind_dn_template, no TLS)", settings, "alice", LDAP_PASSWORDS["alice"])


async def bench_pam(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    password = "Bench-pw-8731"
    with pam_service() as service, pam_user(password) as user:
        settings = _settings(tmp_path, nats_url, database_url, nats_namespace, authenticator="pam",
                             allow_all=True, pam={"service": service})
        await _form_logins("pam (pam_unix nodelay, check_account)", settings, user, password)


async def bench_oauth(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    accounts = {"bob": {"groups": ["staff"]}}
    with running_provider(redirect_uris=[CALLBACK], accounts=accounts) as provider:
        settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, provider)
        async with running_hub(settings) as hub, browser(hub) as bob:
            assert (await log_in(bob, "bob")).status_code == 302  # the provider's session and grant, kept

            async def one() -> None:
                bob.cookies.delete("jupyterhub-hub-login", path="/hub/")
                r = await bob.get("/hub/oauth_login?next=/hub/home")
                while not r.headers["location"].startswith("/hub/home"):
                    assert r.status_code in (302, 303), r.text[:300]
                    r = await bob.get(str(r.url.join(r.headers["location"])))
                assert bob.cookies.get("jupyterhub-hub-login", path="/hub/")
            _record("oauth (OpenID Connect, ID token + userinfo)", "oauth_login → provider → callback → cookie",
                    await _timed(one))


async def bench_github(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    with running_github([HUB_APP]) as github:
        section = {"client_id": HUB_APP.client_id, "client_secret": HUB_APP.client_secret,
                   "github_url": github.url, "allowed_organizations": ["fleet:hub-admins"]}
        settings = _settings(tmp_path, nats_url, database_url, nats_namespace, authenticator="github", github=section)
        async with running_hub(settings) as hub, httpx.AsyncClient(trust_env=False) as gh:
            async def one() -> None:
                async with hub.new_client() as b:
                    r = await b.get("/hub/oauth_login")
                    page = await gh.get(r.headers["location"])
                    fields = {k: html.unescape(v) for k, v in HIDDEN.findall(page.text)}
                    back = await gh.post(f"{r.headers['location'].split('/login/')[0]}/login/oauth/authorize",
                                         data={**fields, "login": "Alice", "authorize": "1"})
                    done = await b.get(back.headers["location"])
                    assert done.status_code == 302 and b.cookies.get("jupyterhub-hub-login")
            _record("github (stand-in, org:team check)", "oauth_login → authorize form → callback → cookie",
                    await _timed(one))


