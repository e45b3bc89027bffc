"""The worked example of docs/authenticators.md, `examples/authenticator/` (a TOTP authenticator package),
found through its entry point as an installed package would be — without pip: the package and a
`*.dist-info/entry_points.txt` made from its pyproject.toml on a temporary sys.path entry — and a login
through /hub/login with it."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleethub.shared.authenticators import ENTRY_POINT_GROUP, load_authenticator
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "authenticator"
SECRET_B32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # b"12345678901234567890", RFC 6238's test secret


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example installed as pip would leave it (package + dist-info on sys.path); its module."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "src" / "fleethub_totp", site / "fleethub_totp")
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = project["entry-points"][ENTRY_POINT_GROUP]
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    secrets = tmp_path / "totp.json"
    secrets.write_text(json.dumps({"ada": SECRET_B32, "bo": "not base32 !"}))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FLEETHUB_AUTH__EXTRA__TOTP_SECRETS_FILE", str(secrets))  # [auth.extra], from the environment
    try:
        yield importlib.import_module("fleethub_totp")
    finally:
        for name in [m for m in sys.modules if m == "fleethub_totp" or m.startswith("fleethub_totp.")]:
            del sys.modules[name]


def test_the_code_follows_rfc_6238(installed: Any) -> None:
    secret = b"12345678901234567890"
    vectors = {59: "94287082", 1111111109: "07081804", 1111111111: "14050471", 1234567890: "89005924",
               2000000000: "69279037"}  # RFC 6238 appendix B, SHA-1
    assert {t: installed.totp(secret, t // 30, digits=8) for t in vectors} == vectors


async def test_found_through_its_entry_point_and_logs_in(
        installed: Any, tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"authenticator": "totp"})
    found = load_authenticator(settings)
    assert type(found) is installed.TotpAuthenticator and found.name == "totp"

    async with running_hub(settings) as hub:
        code = installed.totp(b"12345678901234567890", int(time.time()) // 30)
        async with hub.new_client() as browser:
            r = await hub.login(browser, "Ada", code)
            assert r.status_code == 302, r.text
            me = await browser.get("/hub/api/user", headers={"X-XSRFToken": Hub.xsrf(browser)})
            assert me.status_code == 200 and me.json()["name"] == "ada"
        async with hub.new_client() as again:  # a code logs in once
            assert (await hub.login(again, "ada", code)).status_code == 403
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        for user, password in (("ada", wrong), ("bo", code), ("nobody", code), ("ada", "12345")):
            async with hub.new_client() as c:
                assert (await hub.login(c, user, password)).status_code == 403, (user, password)
