"""`fleethub status` against a running hub under the bus permissions (every service a real process with its
own nkey, `status` with its read-only one): replicas, queue depths, dead letters and servers, as JSON and
as tables; NATS or PostgreSQL unreachable is named, with a nonzero exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.shared.bus.natsconfig import seed_file
from fleethub.shared.events import new_id
from fleethub.shared.net import free_port
from fleethub.shared.settings import child_env
from tests.support.cluster import (
    FAKE_SERVER,
    Cluster,
    ensure_user,
    env_without_fleethub,
    mint_token,
    running_stack,
    wait_for,
)
from tests.support.securenats import SecureNats, secure_nats
from tests.support.unix_users import traversable, unix_user, venv_reachable

pytestmark = pytest.mark.integration

NS = "stat"


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[SecureNats]:
    with secure_nats(tmp_path / "securenats", NS) as server:
        yield server


@pytest.fixture
async def cluster(tmp_path: Path, secure: SecureNats, database_url: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, secure.url, database_url, NS, start=(),
        api={"slow_spawn_timeout": 1},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port()},
    ) as c:
        for service in ("spawner", "spawner", "proxy", "culler", "auth", "api"):
            c.start(service, nats_nkey_file=str(seed_file(secure.keys, service)))
        await c.wait_hub(timeout=40)
        yield c


def status(cluster: Cluster, *args: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
    settings = cluster.replica_settings(**overrides)
    return subprocess.run([sys.executable, "-m", "fleethub", "status", *args], env=child_env(settings),
                          capture_output=True, text=True, timeout=60)


async def test_status_shows_replicas_queues_dead_letters_and_servers(cluster: Cluster, secure: SecureNats) -> None:
    settings = cluster.settings
    seed = str(seed_file(secure.keys, "status"))
    await ensure_user(settings, "admin", admin=True)
    for user in ("alice", "bob"):
        await ensure_user(settings, user)
    headers = {"Authorization": f"token {mint_token(settings, 'admin')}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.proxy.port}", headers=headers,
                                 timeout=20) as api:
        assert (await api.post("/hub/api/users/alice/server")).status_code in (201, 202)

        async def ready() -> bool:
            return bool((await api.get("/hub/api/users/alice")).json()["servers"].get("", {}).get("ready"))

        await wait_for(ready, timeout=20, what=f"alice's server ready\n{cluster.logs()}")

        # a malformed server event: the api's consumer gives up on it, a dead letter
        spawner_bus = secure.bus("spawner")
        await spawner_bus.connect()
        try:
            await spawner_bus.publish_raw(f"{NS}.evt.server.ready", b"not json", new_id())
        finally:
            await spawner_bus.close()

        out = status(cluster, "--json", "--wait", "1.5", nats_nkey_file=seed)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        counts = {name: len(replicas) for name, replicas in report["services"].items()}
        assert counts == {"auth": 1, "api": 1, "spawner": 2, "proxy": 1, "culler": 1}, report["services"]
        for name, replicas in report["services"].items():
            assert all(r["replica"].startswith(f"{name}-") and r["pid"] > 0 for r in replicas)
        consumers = {c["consumer"]: c for s in report["streams"] for c in s["consumers"]}
        assert {"spawner-local", "api-activity", "api-server-events"} <= set(consumers), consumers
        assert consumers["spawner-local"]["pending"] == 0
        assert [(s["user"], s["server"], s["status"]) for s in report["servers"]] == [("alice", "", "running")]
        assert report["servers"][0]["worker"].startswith("spawner-") and report["servers"][0]["url"] == "/user/alice/"

        async def dead_letter() -> bool:
            out = status(cluster, "--json", "--wait", "0.2", nats_nkey_file=seed)
            return bool(json.loads(out.stdout)["dead_letters"] == 1)

        await wait_for(dead_letter, timeout=15, interval=0.5, what="the dead letter counted")

        # no worker left: bob's spawn command waits in the queue, and his server is requested
        for name, proc in cluster.procs:
            if name == "spawner":
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
        assert (await api.post("/hub/api/users/bob/server")).status_code == 202

    out = status(cluster, "--wait", "1.5", nats_nkey_file=seed)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    lines = text.splitlines()
    assert any(line.split()[:2] == ["spawner", "0"] and "none answering" in line for line in lines), text
    assert any(line.split()[:2] == ["api", "1"] for line in lines), text
    depth = next(line.split() for line in lines if "spawner-local" in line)
    assert depth[2] == "1", text  # pending: bob's spawn command
    assert "1 recorded" in text and "malformed" in text, text
    assert "1 running, 1 pending, 2 in all" in text, text
    assert any(line.split()[:3] == ["bob", "(default)", "requested"] for line in lines), text
    assert secure.violations() == [], secure.violations()


async def test_unreachable_nats_and_postgres_are_named(cluster: Cluster, secure: SecureNats) -> None:
    seed = str(seed_file(secure.keys, "status"))
    nowhere = f"nats://127.0.0.1:{free_port()}"
    out = status(cluster, nats_url=nowhere, nats_nkey_file=seed)
    assert out.returncode == 1
    assert f"cannot reach NATS (nats_url {nowhere})" in out.stderr and "Traceback" not in out.stderr
    assert "SERVERS\n0 running" in out.stdout  # what PostgreSQL tells is still shown
    assert "SERVICES\nunknown: NATS unreachable" in out.stdout
    # NATS credentials in the URL (a token, user and password) are not printed
    nowhere = f"nats://t0kenSecret@127.0.0.1:{free_port()},nats://u:pa55word@127.0.0.1:{free_port()}"
    out = status(cluster, nats_url=nowhere, nats_nkey_file=seed)
    assert out.returncode == 1 and "cannot reach NATS (nats_url nats://[secret]@127.0.0.1:" in out.stderr
    assert "t0kenSecret" not in out.stderr + out.stdout and "pa55word" not in out.stderr + out.stdout

    port = free_port()
    out = status(cluster, "--json", database_url=f"postgresql://fleethub:s3cretpw@127.0.0.1:{port}/nothing",
                 nats_nkey_file=seed)
    assert out.returncode == 1
    assert "cannot reach PostgreSQL (database_url postgresql+asyncpg://fleethub:" in out.stderr
    assert f"@127.0.0.1:{port}/nothing): ConnectionRefusedError" in out.stderr
    assert "s3cretpw" not in out.stderr + out.stdout
    report = json.loads(out.stdout)
    assert report["database_ok"] is False and report["nats_ok"] is True and report["services"]["api"]


def test_without_a_deployment_it_says_what_is_missing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "fleethub", "status", "--data-dir", str(tmp_path / "none")],
                         env=env_without_fleethub(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no `fleethub up` is running on" in out.stderr and "FLEETHUB_NATS_URL" in out.stderr
    out = subprocess.run([sys.executable, "-m", "fleethub", "status", "--wait", "0"],
                         env=env_without_fleethub(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--wait" in out.stderr


def test_an_unreadable_runtime_file_is_named(tmp_path: Path) -> None:
    """Run by another account than `fleethub up`'s, status and token say the runtime file is not theirs to read
    (not that no `fleethub up` runs there, nor a traceback)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    runtime = data_dir / "runtime.json"
    runtime.write_text(json.dumps({"pid": os.getpid(), "nats_url": "nats://127.0.0.1:1",
                                   "database_url": "postgresql+asyncpg://fleethub:pw@127.0.0.1:1/fleethub"}))
    runtime.chmod(0o600)
    with unix_user() as pw, venv_reachable(), traversable(data_dir):
        for command in (["status"], ["token", "admin"]):
            out = subprocess.run(["runuser", "-u", pw.pw_name, "--", sys.executable, "-m", "fleethub", *command,
                                  "--data-dir", str(data_dir)],
                                 env=env_without_fleethub(), capture_output=True, text=True, timeout=60)
            assert out.returncode == 2, (command, out.stdout, out.stderr)
            assert f"cannot read {runtime} (permission denied)" in out.stderr, (command, out.stderr)
            assert "Traceback" not in out.stderr and "pw@" not in out.stderr + out.stdout

