"""`fleethub up` with an https public URL: behind a TLS terminator (the public URL does not even resolve), and
with the proxy serving TLS itself. Neither probes the public URL from the host."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.integration.test_up import data_root, leftover_processes, start_up, stop_up, token
from tests.support.certs import make_certs

pytestmark = pytest.mark.integration
__all__ = ["data_root"]  # the fixture, used by name
PUBLIC = "https://hub.example.test"  # .test never resolves


def test_up_behind_a_tls_terminator(data_root: Path) -> None:
    config = data_root / "fleethub.toml"
    config.write_text(f'public_url = "{PUBLIC}"\n[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\n')
    data_dir = data_root / "hub"
    port = free_port()
    proc, _, lines = start_up(data_dir, port, config)
    try:
        assert f"fleethub is running at {PUBLIC}/hub/" in "".join(lines)
        # the terminator dials our local port and says what the browser asked for
        fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.test"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=fwd, timeout=15) as c:
            assert c.get("/hub/api/").status_code == 200
            login = c.get("/hub/login")
            assert login.status_code == 200
            assert login.headers["strict-transport-security"].startswith("max-age=31536000")
            cookies = login.headers.get_list("set-cookie")
            assert "jupyterhub-presession" in {c.split("=", 1)[0] for c in cookies}
            assert all("; secure" in c.lower() for c in cookies)
            admin = {"Authorization": f"token {token(data_dir, 'admin')}",
                     "Accept": "application/jupyterhub-pagination+json"}
            assert c.post("/hub/api/users", json={"usernames": ["u1", "u2"]}, headers=admin).status_code == 201
            page = c.get("/hub/api/users?limit=1", headers=admin).json()["_pagination"]
            assert page["next"]["url"].startswith(f"{PUBLIC}/hub/api/users?")
        # the local port answers only as the public host: a request naming another one is refused
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            r = c.get("/hub/api/", headers={"X-Forwarded-Host": "evil.example"})
            assert r.status_code == 400 and r.json()["message"]
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []


def test_up_serving_tls_itself_with_a_redirect_port(data_root: Path) -> None:
    certs = make_certs(data_root / "certs", "localhost", "127.0.0.1")
    port, redirect = free_port(), free_port()
    public = f"https://localhost:{port}"
    config = data_root / "fleethub.toml"
    config.write_text(f'public_url = "{public}"\n[proxy]\nssl_cert = "{certs.cert_file}"\n'
                      f'ssl_key = "{certs.key_file}"\nhttp_redirect_port = {redirect}\n')
    data_dir = data_root / "hub"
    proc, _, lines = start_up(data_dir, port, config)
    try:
        assert f"fleethub is running at {public}/hub/" in "".join(lines)
        with httpx.Client(base_url=public, verify=certs.client_context(), timeout=15) as c:
            r = c.get("/hub/api/")
            assert r.status_code == 200 and r.headers["strict-transport-security"] == "max-age=31536000"
            assert "; secure" in c.get("/hub/login").headers["set-cookie"].lower()
        r = httpx.get(f"http://127.0.0.1:{redirect}/hub/login?next=%2Fhub%2Fhome", headers={"Host": "evil.example"})
        assert (r.status_code, r.headers["location"]) == (301, f"{public}/hub/login?next=%2Fhub%2Fhome")
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []
