"""A real OpenID Connect provider for the oauth authenticator's tests: panva's oidc-provider (npm, run by
Node) on a free 127.0.0.1 port, with one confidential client, accounts with groups, refresh tokens and the
provider's own development login and consent pages. Its node_modules are installed from the lock file
(`npm ci`) the first time, under a file lock (pytest-xdist workers may start at once)."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent / "oidc"
INSTALLED = HERE / "node_modules" / ".package-lock.json"  # npm writes it last
PR_SET_PDEATHSIG = 1
START_TIMEOUT = 30.0
FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def install() -> None:
    """`npm ci` in tests/support/oidc unless its node_modules are complete."""
    if INSTALLED.exists():
        return
    npm = shutil.which("npm")
    assert npm, "npm is not installed (Node.js 20 and npm are needed for the OpenID Connect provider)"
    with open(HERE / ".install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if INSTALLED.exists():  # another worker installed it while this one waited
            return
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


@dataclass
class OidcProvider:
    """A running provider: its issuer URL and the client the hub is registered as."""

    issuer: str
    client_id: str
    client_secret: str
    log: Path
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def settings(self, **extra: Any) -> dict[str, Any]:
        """An `[auth.oauth]` section for this provider."""
        return {"issuer": self.issuer, "client_id": self.client_id, "client_secret": self.client_secret, **extra}

    async def revoke(self, token: str, hint: str) -> None:
        """Revoke an access or refresh token at the provider (RFC 7009)."""
        async with httpx.AsyncClient(trust_env=False) as c:
            r = await c.post(f"{self.issuer}/token/revocation", data={"token": token, "token_type_hint": hint},
                             auth=(self.client_id, self.client_secret))
            assert r.status_code == 200, r.text


@contextmanager
def running_provider(*, redirect_uris: list[str], client_id: str = "fleethub-hub",
                     client_secret: str = "fleethub-client-secret-1",
                     accounts: dict[str, dict[str, Any]] | None = None, access_token_ttl: int | None = None,
                     token_endpoint_auth_method: str = "client_secret_basic", pkce_required: bool = True,
                     id_token_claims: bool = False) -> Iterator[OidcProvider]:
    """Start the provider, yield it, stop it (SIGTERM, then SIGKILL). `accounts`: login name → {"groups":
    [...]} (any other name logs in too, without groups); `id_token_claims`: the user's claims in the ID
    token as well; `pkce_required`: refuse authorization requests without a PKCE challenge."""
    install()
    node = shutil.which("node")
    assert node, "node is not installed"
    config = {"client_id": client_id, "client_secret": client_secret, "redirect_uris": redirect_uris,
              "token_endpoint_auth_method": token_endpoint_auth_method, "accounts": accounts or {},
              "access_token_ttl": access_token_ttl, "pkce_required": pkce_required,
              "id_token_claims": id_token_claims}
    log = Path(tempfile.mkstemp(prefix="fleethub-oidc-", suffix=".log")[1])
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    env = {**os.environ, "OIDC_TEST_CONFIG": json.dumps(config), "NODE_ENV": "test"}
    with open(log, "wb") as err:
        proc = subprocess.Popen([node, "provider.mjs"], cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True, preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
    try:
        issuer = _wait_listening(proc, log)
        yield OidcProvider(issuer, client_id, client_secret, log, accounts or {})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        log.unlink(missing_ok=True)


def _wait_listening(proc: subprocess.Popen[str], log: Path) -> str:
    """The issuer the provider prints once it listens (killed if that takes longer than START_TIMEOUT)."""
    assert proc.stdout is not None
    watchdog = threading.Timer(START_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
    finally:
        watchdog.cancel()
    if not line.startswith("LISTENING "):
        proc.kill()
        proc.wait()
        raise AssertionError(f"the OpenID Connect provider did not start: {line!r}\n{log.read_text()[-4000:]}")
    return line.split()[1]


async def sign_in_at_provider(browser: httpx.AsyncClient, authorize_url: str, login: str) -> str:
    """Drive the provider's development pages as a browser would: from the authorization URL through the
    login form (any password) and the consent form, to the redirect back to the hub. Returns that URL."""
    r = await browser.get(authorize_url)
    for _ in range(8):
        if r.status_code in (302, 303):
            location = str(r.url.join(r.headers["location"]))
            if not location.startswith(str(r.url.copy_with(path="/", query=None, fragment=None))):
                return location  # left the provider: back to the hub
            r = await browser.get(location)
            continue
        assert r.status_code == 200, (r.status_code, r.text[:2000])
        action = FORM_ACTION.search(r.text)
        assert action, r.text[:2000]
        data = dict(HIDDEN.findall(r.text))
        if data.get("prompt") == "login":
            data.update(login=login, password="any-password")
        r = await browser.post(str(r.url.join(action.group(1))), data=data)
    raise AssertionError(f"the provider's pages did not send the browser back: {r.status_code} {r.text[:500]}")
