"""`fleethub up` on a fresh data dir: embedded NATS and PostgreSQL, every service, and a restart; a config
file with `[custom_scopes]` reaching every service."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.bus.permissions import IDENTITIES
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, env_without_fleethub

pytestmark = pytest.mark.integration


def start_up(data_dir: Path, port: int, config: Path | None = None, umask: int = -1,
             args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None,
             ) -> tuple[subprocess.Popen[str], float, list[str]]:
    env = env_without_fleethub()
    env.update(
        FLEETHUB_PROXY__PORT=str(port),
        FLEETHUB_SPAWNER__CMD=json.dumps([sys.executable, str(FAKE_SERVER)]),
        FLEETHUB_API__SLOW_SPAWN_TIMEOUT="5",
        **(extra_env or {}),
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleethub", "up", "--data-dir", str(data_dir),
         *(["--config", str(config)] if config is not None else []), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        umask=umask,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("fleethub up exited before it was ready:\n" + "".join(lines))
        lines.append(line)
        if "fleethub is running at" in line:
            # keep reading: every service logs to this pipe, and a full pipe would block them all
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return proc, time.monotonic() - t0, lines
        if time.monotonic() - t0 > 90:
            proc.kill()
            raise AssertionError("fleethub up not ready in 90 s:\n" + "".join(lines))


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def stop_up(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("fleethub up did not stop within 40 s of SIGTERM") from None


def token(data_dir: Path, user: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "fleethub", "token", user, "--data-dir", str(data_dir)],
        env=env_without_fleethub(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


def passwd(data_dir: Path, user: str, password: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleethub", "passwd", user, "--stdin", "--data-dir", str(data_dir)],
        env=env_without_fleethub(), input=f"{password}\n", capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def form_login(base: str, user: str, password: str) -> int:
    """The status of a login through the form (302 when it worked)."""
    with httpx.Client(base_url=base, timeout=15) as browser:
        m = re.search(r'name="_xsrf" value="([^"]+)"', browser.get("/hub/login").text)
        assert m
        data = {"username": user, "password": password, "_xsrf": m.group(1)}
        return browser.post("/hub/login", data=data).status_code


def leftover_processes(data_dir: Path) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir) in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.fixture
def data_root() -> Iterator[Path]:
    # outside pytest's basetemp, which another pytest run resets to mode 0700 (locking out the
    # embedded PostgreSQL's system user)
    root = Path(tempfile.mkdtemp(prefix="fleethub-test-up-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_up_runs_everything_and_keeps_state_across_restarts(data_root: Path) -> None:
    data_dir = data_root / "hub"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, elapsed, lines = start_up(data_dir, port)
    try:
        print(f"\nfleethub up answered after {elapsed:.2f}s (fresh data dir)")
        text = "".join(lines)
        assert f"{base}/hub/" in text and "admin" in text
        assert (data_dir / "admin-password").stat().st_mode & 0o077 == 0
        password = (data_dir / "admin-password").read_text().strip()
        assert len(password) >= 12 and password not in text  # in its file only, never in the log

        seeds = _check_nats_is_locked(data_dir)
        tok = token(data_dir, "admin")  # while `up` runs
        h = {"Authorization": f"token {tok}"}
        with httpx.Client(base_url=base, headers=h, timeout=15) as c:
            # the api asks a spawner worker to reconcile (only the spawner may write routes)
            r = c.post("/hub/api/proxy")
            assert r.status_code == 200 and set(r.json()) == {"put", "deleted"}, r.text
            assert c.get("/hub/api/user").json()["name"] == "admin"
            assert c.post("/hub/api/users", json={"usernames": ["alice", "bob"]}).status_code == 201
            passwd(data_dir, "alice", "alice-secret-pw")  # while `up` runs: its database, then the form
            assert form_login(base, "alice", "alice-secret-pw") == 302
            assert form_login(base, "admin", password) == 302
            for user in ("alice", "bob"):
                t0 = time.monotonic()
                r = c.post(f"/hub/api/users/{user}/server")
                assert r.status_code in (201, 202), r.text
                deadline = time.monotonic() + 20
                while not c.get(f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"):
                    assert time.monotonic() < deadline, f"{user}'s server not ready:\n" + "".join(lines[-80:])
                    time.sleep(0.05)
                print(f"{user}: POST → ready {time.monotonic() - t0:.3f}s")
            for user in ("alice", "bob"):
                r = c.get(f"/user/{user}/tree")
                assert r.status_code == 200 and r.json()["user"] == user
            _check_ops_listeners(data_dir)
            assert c.delete("/hub/api/users/alice/server").status_code in (202, 204)
            deadline = time.monotonic() + 15
            while c.get("/user/alice/tree", follow_redirects=False).status_code != 302:
                assert time.monotonic() < deadline, "alice's route still there"
                time.sleep(0.05)
        _check_events_account(data_dir, text)
        _check_no_violations(data_dir, lines)
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []

    # a second `up` on the same data dir finds the same users and tokens
    proc, elapsed, _ = start_up(data_dir, port)
    try:
        assert _check_nats_is_locked(data_dir) == seeds  # the seeds are kept across restarts
        print(f"fleethub up answered after {elapsed:.2f}s (existing data dir)")
        with httpx.Client(base_url=base, headers=h, timeout=15) as c:
            assert c.get("/hub/api/user").json()["name"] == "admin"
            names = {u["name"] for u in c.get("/hub/api/users").json()}
            assert {"admin", "alice", "bob"} <= names
            # JupyterHub's POST /shutdown stops the whole hub: every service, then `up` itself
            r = c.post("/hub/api/shutdown", json={"servers": True, "proxy": True})
            assert r.status_code == 202, r.text
        t0 = time.monotonic()
        assert proc.wait(timeout=40) == 0
        print(f"fleethub up exited {time.monotonic() - t0:.2f}s after POST /hub/api/shutdown")
    finally:
        if proc.poll() is None:
            stop_up(proc)
    assert leftover_processes(data_dir) == []

    # with nothing running, `fleethub token` starts the embedded database itself
    assert token(data_dir, "admin") != tok
    assert leftover_processes(data_dir) == []


def _check_ops_listeners(data_dir: Path) -> None:
    """Every service's operations listener is on, recorded in runtime.json, and ready; the spawner's metrics
    (read with its own NATS permissions: the consumer info of its durable) count the two spawns."""
    ops = json.loads((data_dir / "runtime.json").read_text())["ops"]
    assert set(ops) == {"auth", "api", "spawner", "proxy", "culler"}
    for service, url in ops.items():
        r = httpx.get(f"{url}/health/ready", timeout=15)
        assert r.status_code == 200 and r.json()["status"] == "ready", (service, r.text)
    metrics = httpx.get(f"{ops['spawner']}/metrics", timeout=15).text
    assert 'jupyterhub_server_spawn_duration_seconds_count{status="success"} 2.0' in metrics
    assert 'fleethub_command_queue_depth{consumer="spawner-local"} 0.0' in metrics


def _check_nats_is_locked(data_dir: Path) -> dict[str, bytes]:
    """The `up` NATS refuses a client without credentials (the security review: any local process could
    connect); the seeds are 0600 in a 0700 directory; returns them."""
    import asyncio

    import nats

    url = json.loads((data_dir / "runtime.json").read_text())["nats_url"]

    async def anonymous() -> None:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
        await nc.close()

    with pytest.raises(Exception, match="Authorization Violation"):
        asyncio.run(anonymous())
    keys = data_dir / "nats-keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    seeds = {p.name: p.read_bytes() for p in keys.glob("*.nk")}
    assert set(seeds) == {f"{n}.nk" for n in IDENTITIES}  # every service, events and status
    assert all((keys / name).stat().st_mode & 0o777 == 0o600 for name in seeds)
    conf = (keys / "authorization.conf").read_text()
    assert all(seed.strip().decode() not in conf for seed in seeds.values())  # public keys only
    return seeds


def _check_events_account(data_dir: Path, text: str) -> None:
    """`up` says where the read-only events account's seed is, and `fleethub events --data-dir` finds it and
    the running hub's NATS by itself."""
    seed = data_dir / "nats-keys" / "events.nk"
    assert f"nkey seed {seed}" in text
    out = subprocess.run(
        [sys.executable, "-m", "fleethub", "events", "--data-dir", str(data_dir), "--type", "user.created",
         "--type", "server.ready"],
        env=env_without_fleethub(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(e["data"]["name"] for e in events if e["type"] == "user.created") == ["alice", "bob"]
    assert sorted(e["data"]["user"] for e in events if e["type"] == "server.ready") == ["alice", "bob"]


def _check_no_violations(data_dir: Path, lines: list[str]) -> None:
    """Neither the server nor a service saw a permission violation: the permissions fit what services do."""
    nats_log = (data_dir / "nats" / "nats.log").read_text()
    assert "Violation" not in nats_log, nats_log[-3000:]
    assert not [line for line in lines if "nats refused" in line], "".join(lines[-80:])


def test_up_with_a_custom_scope_in_the_config_file(data_root: Path) -> None:
    # as a new user tries it: one custom scope, granted by a role (dict settings used to crash `up`)
    config = data_root / "fleethub.toml"
    config.write_text(
        '[custom_scopes."custom:data:read"]\ndescription = "read the data service"\n\n'
        '[[roles]]\nname = "analysts"\nscopes = ["custom:data:read"]\nusers = ["alice"]\n'
    )
    data_dir = data_root / "hub"
    port = free_port()
    proc, _, lines = start_up(data_dir, port, config)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            assert c.get("/hub/api/").status_code == 200
            # alice holds the role the api made from the config: its custom scope is hers
            me = c.get("/hub/api/user", headers={"Authorization": f"token {token(data_dir, 'alice')}"})
            assert me.status_code == 200, me.text
            assert "custom:data:read" in me.json()["scopes"], "".join(lines[-40:])
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []



def test_up_under_a_base_url_prints_and_serves_the_prefixed_address(data_root: Path) -> None:
    config = data_root / "fleethub.toml"
    config.write_text('base_url = "/jhub"\n')  # the missing trailing slash is added
    data_dir = data_root / "hub"
    port = free_port()
    proc, _, lines = start_up(data_dir, port, config)
    try:
        assert f"fleethub is running at http://127.0.0.1:{port}/jhub/hub/ " in lines[-1], lines[-1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            assert c.get("/jhub/hub/login").status_code == 200
            assert c.get("/hub/login").status_code == 404  # outside the prefix: not the hub's
            me = c.get("/jhub/hub/api/user", headers={"Authorization": f"token {token(data_dir, 'admin')}"})
            assert me.status_code == 200 and me.json()["name"] == "admin", me.text
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []

def _not_private(data_dir: Path) -> list[str]:
    """Entries under the data dir (itself included) that someone else than their owner could reach: every
    directory must be 0700 and every file 0600 (sockets: nothing for group or others), except the data dir
    itself, which may let the embedded PostgreSQL's system user pass (0710, its group) when run as root."""
    bad = []
    for here, dirs, files in os.walk(data_dir):
        for path in [Path(here) / n for n in (*dirs, *files)] + ([data_dir] if Path(here) == data_dir else []):
            st = path.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                ok = mode == 0o700 or (path == data_dir and mode == 0o710 and os.geteuid() == 0
                                       and st.st_gid == pwd.getpwnam("fleethub-pg").pw_gid)
            elif stat.S_ISREG(st.st_mode):
                ok = mode == 0o600
            else:
                ok = stat.S_ISLNK(st.st_mode) or mode & 0o077 == 0
            if not ok:
                bad.append(f"{path.relative_to(data_dir.parent)} {mode:04o}")
    return bad


def test_every_file_of_the_data_dir_is_private_whatever_the_umask(data_root: Path) -> None:
    """Security review: the data dir held runtime.json (the database password), the embedded servers' data
    and logs, readable through a 0755 tree; an existing loose data dir is tightened at start."""
    data_dir = data_root / "hub"
    (data_dir / "logs").mkdir(parents=True, mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "logs").chmod(0o777)
    (data_dir / "stale.json").write_text("{}")
    (data_dir / "stale.json").chmod(0o644)
    port = free_port()
    proc, _, lines = start_up(data_dir, port, umask=0o022)
    try:
        assert "tightened the modes of 3 entries" in "".join(lines), "".join(lines)
        tok = token(data_dir, "admin")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"token {tok}"},
                          timeout=15) as c:
            assert c.post("/hub/api/users/admin/server").status_code in (201, 202)
            deadline = time.monotonic() + 20
            while not c.get("/hub/api/users/admin").json()["servers"].get("", {}).get("ready"):
                assert time.monotonic() < deadline, "".join(lines[-60:])
                time.sleep(0.05)
        names = {p.name for p in data_dir.rglob("*")}
        assert {"runtime.json", "admin-password", "fleethub-password", "postgres.log", "nats.log", "jetstream",
                "up.lock"} <= names and list((data_dir / "logs").iterdir()), sorted(names)
        assert _not_private(data_dir) == []  # while everything runs
    finally:
        assert stop_up(proc) == 0
    assert _not_private(data_dir) == []
    assert leftover_processes(data_dir) == []
