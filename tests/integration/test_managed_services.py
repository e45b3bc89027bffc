"""Hub-managed services (`[[services]]` with a `command`): a spawner worker runs them with JupyterHub's
service environment, routes them, restarts them when they exit, and hands them to another worker when
it stops. The real jupyterhub-idle-culler runs as one, the way JupyterHub deployments run it."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from fleethub.shared.procs import pid_alive
from tests.support.cluster import (
    CANARIES,
    FAKE_SERVER,
    ensure_user,
    mint_token,
    outside_allow_list,
    running_stack,
    wait_for,
)
from tests.support.culling import idle_culled_busy_kept, start_servers

pytestmark = pytest.mark.integration

RECORDER = Path(__file__).resolve().parents[1] / "support" / "managed_service.py"


def _record(path: Path) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


async def test_a_managed_service_runs_is_routed_restarted_and_handed_over(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    out = tmp_path / "recorder.json"
    port = free_port()
    services = [{"name": "recorder", "command": [sys.executable, str(RECORDER), str(out)],
                 "url": f"http://127.0.0.1:{free_port()}", "environment": {"MANAGED_FLAVOUR": "plain"}}]
    roles = [{"name": "recorder", "scopes": ["list:users"], "services": ["recorder"]}]
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
                             proxy={"port": port}, services=services, roles=roles) as cluster:
        first = cluster.start("spawner", extra_env=CANARIES)

        async def recorded() -> dict[str, object] | None:
            return _record(out)

        rec = await wait_for(recorded, timeout=30, what=f"the managed service\n{cluster.logs()}")
        env = rec["env"]
        assert isinstance(env, dict)
        assert env["JUPYTERHUB_SERVICE_NAME"] == "recorder" and env["MANAGED_FLAVOUR"] == "plain"
        assert env["JUPYTERHUB_CLIENT_ID"] == "service-recorder"
        assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/recorder/"
        assert env["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{port}/hub/api"
        assert env["JUPYTERHUB_API_TOKEN"] == env["JPY_API_TOKEN"] and len(str(env["JUPYTERHUB_API_TOKEN"])) == 32
        assert json.loads(str(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"])) == ["access:services",
                                                                          "access:services!service=recorder"]
        assert not any(k.startswith("FLEETHUB_") for k in env)  # the database password stays with us
        # nothing of the worker's environment but the allow list (security review: it had all but FLEETHUB_*)
        assert outside_allow_list(env, cluster.settings, {"MANAGED_FLAVOUR"}) == []
        assert env["LANG"] == CANARIES["LANG"] and "AWS_SECRET_ACCESS_KEY" not in env
        # its generated token is accepted by the api as the service itself, with its role's scopes
        whoami = rec["whoami"]
        assert isinstance(whoami, dict) and whoami["kind"] == "service" and whoami["name"] == "recorder"
        assert "list:users" in whoami["scopes"]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            async def routed() -> bool:
                r = await c.get("/services/recorder/")
                return r.status_code == 200 and r.json()["pid"] == rec["pid"]

            await wait_for(routed, timeout=20, what="the service routed at /services/recorder/")

        # it dies: it is restarted
        pid = int(str(rec["pid"]))
        os.kill(pid, signal.SIGKILL)
        again = await wait_for(lambda: _newer(out, pid), timeout=20, what="restarted")
        assert again["pid"] != pid

        # its worker stops: another worker takes it over, and nothing of the old one is left
        second = cluster.start("spawner")
        first.send_signal(signal.SIGTERM)
        first.wait(30)
        handed = await wait_for(lambda: _newer(out, int(str(again["pid"]))), timeout=30,
                                what=f"handed over\n{cluster.logs()}")
        assert not pid_alive(int(str(again["pid"])))
        assert second.poll() is None and pid_alive(int(str(handed["pid"])))
        last = int(str(handed["pid"]))
    assert not pid_alive(last)  # stopping the stack stops the service


async def _newer(path: Path, old_pid: int) -> dict[str, object] | None:
    rec = _record(path)
    return rec if rec is not None and rec["pid"] != old_pid else None


async def test_the_idle_culler_as_a_managed_service(tmp_path: Path, nats_url: str, database_url: str,
                                                    nats_namespace: str) -> None:
    port = free_port()
    services = [{"name": "idle-culler", "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=4",
                                                   "--cull-every=1"]}]
    roles = [{"name": "idle-culler", "services": ["idle-culler"],
              "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}]
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, auth={"admin_users": ["admin"]},
                             api={"slow_spawn_timeout": 5}, spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
                             proxy={"port": port, "activity_interval": 0.5}, services=services,
                             roles=roles) as cluster:
        await ensure_user(cluster.settings, "admin", admin=True)
        token = mint_token(cluster.settings, "admin")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15,
                                     headers={"Authorization": f"token {token}"}) as api:
            await wait_for(lambda: _ok(api, "/hub/api/"), timeout=30, what=f"the hub\n{cluster.logs()}")
            await start_servers(api, ("sleepy", "busy"))
            await idle_culled_busy_kept(api, "sleepy", "busy", cluster.logs)


async def _ok(api: httpx.AsyncClient, path: str) -> bool:
    return (await api.get(path)).status_code == 200
