"""The `system-user` backend against real Unix accounts (useradd), real sudo and the real
`jupyterhub-singleuser` with JupyterLab: who the server runs as, seen from outside in /proc."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleethub.services.spawner.backends import Backend, ServerSpec, load_backend
from fleethub.services.spawner.backends.system_user import AccountRefused
from fleethub.services.spawner.env import server_env
from fleethub.services.spawner.marks import MARKER_VAR
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import ServerState
from fleethub.shared.events import new_id
from fleethub.shared.names import encode_token, server_prefix
from fleethub.shared.net import free_port
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.browser import log_in
from tests.support.cluster import FAKE_SERVER, ensure_user, mint_token, outside_allow_list, running_stack, wait_for
from tests.support.hub_api_stub import HubApiStub, hub_api_with_tokens
from tests.support.procfs import environ, marked, status_ids
from tests.support.spawn_form import spawn_through_form
from tests.support.unix_users import (
    grant_traverse,
    remove_account,
    require_root_tools,
    sudoers_rule,
    unique_name,
    unix_user,
    venv_reachable,
)

pytestmark = pytest.mark.integration

SINGLEUSER = shutil.which("jupyterhub-singleuser", path=str(Path(sys.executable).parent))
SUDO = ["sudo", "-n", "-E", "-u", "{username}", "--"]
KEY = "system-user-test-key-" + "k" * 24
MODES = {"direct": [], "sudo": SUDO}


@pytest.fixture(scope="module")
def reachable() -> Iterator[None]:
    require_root_tools("sudo", "visudo", "groupadd")
    assert SINGLEUSER, "jupyterhub-singleuser is not installed next to this Python (pip install -e '.[test]')"
    with venv_reachable(FAKE_SERVER):
        yield


@pytest.fixture(scope="module")
def hub_api(reachable: None) -> Iterator[HubApiStub]:
    with hub_api_with_tokens() as stub:
        yield stub


@pytest.fixture
def account(reachable: None) -> Iterator[pwd.struct_passwd]:
    """A fresh account with a supplementary group of its own (so Groups shows more than its gid)."""
    with unix_user(groups=[unique_name("fhg")]) as pw:
        yield pw


@pytest.fixture
async def backends() -> AsyncIterator[list[tuple[Backend, dict[str, Any]]]]:
    """(backend, state) of every server a test starts: stopped at the end whatever the outcome."""
    started: list[tuple[Backend, dict[str, Any]]] = []
    yield started
    for backend, state in started:
        await backend.stop(state)


def settings_for(tmp_path: Path, hub_api: HubApiStub, *, cmd: list[str] | None = None, notebook_dir: str | None = None,
                 **system_user: Any) -> ServiceSettings:
    spawner: dict[str, Any] = {"ip": "127.0.0.1", "hub_api_url": hub_api.url, "cmd": cmd or [SINGLEUSER],
                               "system_user": system_user}
    if notebook_dir:
        spawner["notebook_dir"] = notebook_dir
    return load_settings(None, data_dir=tmp_path / "data", spawner=spawner)


def spec_for(settings: ServiceSettings, user: str, server_name: str = "") -> ServerSpec:
    spawn_id = new_id()
    return ServerSpec(user=user, server_name=server_name, spawn_id=spawn_id, prefix=server_prefix(user, server_name),
                      env=server_env(settings, KEY, user, server_name, spawn_id), config=settings.spawner,
                      log_path=settings.data_dir / "logs" / f"{encode_token(user)}.{encode_token(server_name)}.log")


async def start_ready(backend: Backend, spec: ServerSpec, started: list[tuple[Backend, dict[str, Any]]],
                      timeout: float = 60.0) -> dict[str, Any]:
    """Start `spec`'s server and wait until it answers at `<prefix>api`; its state."""
    identity = backend.identity(spec)
    started.append((backend, identity))
    state = await backend.start(spec, identity)
    started[-1] = (backend, state)
    url = f"{backend.target(state)}{spec.prefix}api"
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                if (await client.get(url)).status_code < 500:
                    return state
            except httpx.HTTPError:
                pass
            if not await backend.poll(state) or time.monotonic() > deadline:
                log = spec.log_path.read_text(errors="replace") if spec.log_path and spec.log_path.exists() else ""
                pytest.fail(f"the server did not answer {url}; its log:\n{log[-3000:]}")
            await asyncio.sleep(0.1)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


@pytest.mark.parametrize("mode", MODES)
async def test_server_runs_as_the_account(mode: str, tmp_path: Path, hub_api: HubApiStub, account: pwd.struct_passwd,
                                          backends: list[tuple[Backend, dict[str, Any]]]) -> None:
    name, home = account.pw_name, account.pw_dir
    notebooks = Path(home) / f"nb-{name}"
    notebooks.mkdir()
    os.chown(notebooks, account.pw_uid, account.pw_gid)
    secret = notebooks / "root-only.txt"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)  # root's, in a directory the user owns
    settings = settings_for(tmp_path, hub_api, notebook_dir="~/nb-{username}", mediator=MODES[mode])
    backend = load_backend(settings, "system-user")
    spec = spec_for(settings, name)
    state = await start_ready(backend, spec, backends)

    identity = {k: state[k] for k in ("ip", "port", "marker", "account")}
    found = await load_backend(settings, "system-user").locate(identity)
    assert found is not None, "another worker finds the server from its identity"
    pid = int(found["pid"])
    ids = status_ids(pid)
    assert ids["Uid"] == [account.pw_uid] * 4
    assert ids["Gid"] == [account.pw_gid] * 4
    assert sorted(ids["Groups"]) == sorted(os.getgrouplist(name, account.pw_gid))
    assert len(ids["Groups"]) == 2, "the account's supplementary group is there"
    assert os.readlink(f"/proc/{pid}/cwd") == home
    env = environ(pid)
    assert (env["HOME"], env["USER"], env["SHELL"]) == (home, name, "/bin/bash")
    assert env["JUPYTERHUB_ROOT_DIR"] == str(notebooks), "notebook_dir with ~ and {username}"
    assert env[MARKER_VAR] == state["marker"]
    assert outside_allow_list(env, settings, {"LOGNAME"}) == [], "only the allow list, the account and the contract"

    # what the server itself can do, through Jupyter's contents API
    token = spec.env["JUPYTERHUB_API_TOKEN"]
    hub_api.tokens[token] = name
    api = f"{backend.target(state)}{spec.prefix}api/contents"
    async with httpx.AsyncClient(timeout=10.0, headers={"Authorization": f"token {token}"}) as client:
        put = await client.put(f"{api}/hello.txt", json={"type": "file", "format": "text", "content": "hi\n"})
        assert put.status_code == 201, put.text
        denied = await client.get(f"{api}/root-only.txt", params={"content": "1"})
        kernel = await client.post(f"{backend.target(state)}{spec.prefix}api/kernels", json={"name": "python3"})
        assert kernel.status_code == 201, kernel.text
        deadline = time.monotonic() + 30
        sudo = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # or the test, unmarked
        while not any(b"ipykernel" in cmdline(p) for p in marked(state["marker"])):
            assert time.monotonic() < deadline, "no kernel process showed"
            await asyncio.sleep(0.1)
    for other in set(marked(state["marker"])) - {pid, sudo}:  # the kernel (and the like) as the account too
        assert status_ids(other)["Uid"] == [account.pw_uid] * 4
    written = notebooks / "hello.txt"
    assert written.read_text() == "hi\n" and written.stat().st_uid == account.pw_uid
    assert denied.status_code == 403, f"the user's server read root's 0600 file: {denied.status_code} {denied.text}"
    assert "secret" not in denied.text

    await backend.stop(state)
    assert not await backend.poll(state)
    assert marked(state["marker"]) == [], "nothing carrying the marker is left (the kernel neither)"


async def test_refusals_say_why(tmp_path: Path, hub_api: HubApiStub, reachable: None) -> None:
    ghost = unique_name("fhnone")
    settings = settings_for(tmp_path, hub_api, cmd=[sys.executable, str(FAKE_SERVER)],
                            username_map={"boss": "root", "alias": "not a name"})
    backend = load_backend(settings, "system-user")
    cases = {
        ghost: f"no Unix account named {ghost!r} on this host",
        "alice@example.org": "is not a valid Unix account name",
        "root": "refusing to run the server of 'root' as root",
        "boss": "refusing to run the server of 'boss' as root",
        "alias": "username_map maps hub user 'alias' to 'not a name'",
    }
    for user, message in cases.items():
        spec = spec_for(settings, user)
        identity = backend.identity(spec)
        with pytest.raises(AccountRefused) as refused:
            await backend.start(spec, identity)
        assert message in str(refused.value), str(refused.value)
        assert marked(identity["marker"]) == [], f"{user}: something was started"
        assert not await backend.poll(identity)


async def test_username_map_and_create_system_users(tmp_path: Path, hub_api: HubApiStub, account: pwd.struct_passwd,
                                                    backends: list[tuple[Backend, dict[str, Any]]]) -> None:
    new = unique_name("fhnew")
    settings = settings_for(tmp_path, hub_api, cmd=[sys.executable, str(FAKE_SERVER)], create_system_users=True,
                            username_map={"Ann Example@corp": account.pw_name})
    backend = load_backend(settings, "system-user")
    try:
        mapped = spec_for(settings, "Ann Example@corp")
        assert mapped.env["HOME"] != account.pw_dir, "env.py knows no account of the hub name"
        state = await start_ready(backend, mapped, backends)
        pid = int(state["pid"])
        assert status_ids(pid)["Uid"] == [account.pw_uid] * 4
        assert (environ(pid)["HOME"], environ(pid)["USER"]) == (account.pw_dir, account.pw_name)

        with pytest.raises(KeyError):
            pwd.getpwnam(new)
        created = await start_ready(backend, spec_for(settings, new), backends)
        pw = pwd.getpwnam(new)
        assert pw.pw_uid != 0 and Path(pw.pw_dir).is_dir()
        assert status_ids(int(created["pid"]))["Uid"] == [pw.pw_uid] * 4
        assert os.readlink(f"/proc/{created['pid']}/cwd") == pw.pw_dir
        await backend.stop(created)
    finally:
        remove_account(new)


async def test_a_marker_faked_by_another_account_is_not_the_server(
        tmp_path: Path, hub_api: HubApiStub, account: pwd.struct_passwd) -> None:
    settings = settings_for(tmp_path, hub_api, cmd=[sys.executable, str(FAKE_SERVER)])
    backend = load_backend(settings, "system-user")
    with unix_user("fhx") as other:
        victim = spec_for(settings, account.pw_name)
        identity = backend.identity(victim)
        # the other account runs a session leader carrying the victim's marker (anyone can set a variable)
        fake = subprocess.Popen(["sleep", "300"], env={MARKER_VAR: identity["marker"], "PATH": "/usr/bin:/bin"},
                                user=other.pw_uid, group=other.pw_gid, extra_groups=[], cwd="/",
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 5
            while fake.pid not in marked(identity["marker"]):
                assert time.monotonic() < deadline, "the faked marker never showed"
                await asyncio.sleep(0.02)
            assert await backend.locate(identity) is None
            assert not await backend.poll(identity)
            assert not await backend.poll({**identity, "pid": fake.pid}), "a recorded pid of another account"
            await backend.stop({**identity, "pid": fake.pid})
            assert fake.poll() is None, "stop ended another account's process"
        finally:
            fake.kill()
            fake.wait()


# a worker's first steps in a process of its own (job: JSON on argv[1]): its settings, the spawn's spec, the
# system-user backend and the identity it plans; each script below goes on from there
WORKER_HEAD = r"""
import asyncio, json, sys, time
from pathlib import Path
import httpx
from fleethub.services.spawner.backends import ServerSpec, load_backend
from fleethub.services.spawner.env import server_env
from fleethub.shared.names import server_prefix
from fleethub.shared.settings import load_settings

async def main(job):
    settings = load_settings(None, data_dir=Path(job["data_dir"]), spawner=job["spawner"])
    user, spawn_id = job["user"], job["spawn_id"]
    spec = ServerSpec(user=user, server_name="", spawn_id=spawn_id, prefix=server_prefix(user, ""),
                      env=server_env(settings, "k" * 40, user, "", spawn_id), config=settings.spawner,
                      log_path=Path(job["data_dir"]) / "server.log")
    backend = load_backend(settings, "system-user")
    identity = backend.identity(spec)
"""

WORKER_SCRIPT = WORKER_HEAD + r"""    t0 = time.monotonic()
    state = await backend.start(spec, identity)
    url = backend.target(state) + spec.prefix + "api"
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url)).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() - t0 < 60, Path(job["data_dir"], "server.log").read_text()[-2000:]
            await asyncio.sleep(0.1)
    adopter = load_backend(settings, "system-user")  # another worker: finds it through the helper
    found = await adopter.locate(identity)
    print(json.dumps({"found": found, "polls": await adopter.poll(identity), "ready": time.monotonic() - t0}),
          flush=True)
    sys.stdin.readline()  # the test looks at the server from outside meanwhile
    await adopter.stop(identity)
    print(json.dumps({"polls_after_stop": await adopter.poll(identity),
                      "first_polls_after_stop": await backend.poll(state)}), flush=True)

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def test_a_worker_that_is_not_root_runs_servers_through_sudo(
        tmp_path: Path, hub_api: HubApiStub, account: pwd.struct_passwd) -> None:
    with unix_user("fhw") as hub:
        helper = f"{sys.executable} -I -m fleethub.services.spawner.asuser *"
        rule = f"{hub.pw_name} ALL=({account.pw_name}) NOPASSWD:SETENV: {helper}\n"
        with sudoers_rule(rule):
            data = Path(hub.pw_dir) / "data"
            job = {"data_dir": str(data), "user": account.pw_name, "spawn_id": new_id(),
                   "spawner": {"ip": "127.0.0.1", "hub_api_url": hub_api.url, "cmd": [SINGLEUSER],
                               "system_user": {"mediator": SUDO}}}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WORKER_SCRIPT, json.dumps(job), user=hub.pw_uid, group=hub.pw_gid,
                extra_groups=[], cwd=hub.pw_dir, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": hub.pw_dir},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 90)
                if not line:
                    pytest.fail(f"the worker failed: {(await proc.stderr.read()).decode()[-3000:]}")
                first = json.loads(line)
                assert first["polls"] and first["found"] is not None
                pid = int(first["found"]["pid"])
                assert status_ids(pid)["Uid"] == [account.pw_uid] * 4
                assert os.readlink(f"/proc/{pid}/cwd") == account.pw_dir
                env = environ(pid)
                assert env["JUPYTERHUB_API_TOKEN"], "sudo -E kept the JupyterHub contract"
                assert env[MARKER_VAR] == first["found"]["marker"]
                assert env["PATH"].startswith("/usr/local/bin:/usr/bin"), "PATH as given, not sudo's secure_path"
                worker_uids = status_ids(proc.pid)["Uid"]
                assert worker_uids == [hub.pw_uid] * 4, "the worker is not root"
                print(f"\nnon-root worker: spawn to ready {first['ready']:.2f}s")
                proc.stdin.write(b"stop\n")
                last = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
                assert last == {"polls_after_stop": False, "first_polls_after_stop": False}
                assert marked(first["found"]["marker"]) == []
                assert await asyncio.wait_for(proc.wait(), 30) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


def test_grant_traverse_restores_every_mode(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    inner = closed / "venv"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    private = inner / "lib.py"
    private.write_text("x = 1\n")
    private.chmod(0o600)
    with grant_traverse([inner], readable=[inner]) as changed:
        assert closed.stat().st_mode & 0o001 and private.stat().st_mode & 0o004
        assert closed in changed and private in changed
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


PROFILES = [{"display_name": f"As my account ({mode})", "slug": mode, "default": mode == "direct",
             "backend": "system-user", "overrides": {"system_user": {"mediator": mediator}}}
            for mode, mediator in MODES.items()]


async def test_through_the_rest_api_and_the_proxy(tmp_path: Path, nats_url: str, database_url: str,
                                                  nats_namespace: str, account: pwd.struct_passwd) -> None:
    """A whole hub (real processes) whose profiles start servers directly and through sudo: one spawn
    through the REST API, one through the spawn form (a logged-in browser), the real servers reached
    through the proxy as their accounts; a user without an account gets a failed spawn that says why; a
    stop leaves nothing."""
    ghost = unique_name("fhnone")
    with unix_user("fhs") as second:
        await _rest_api_and_proxy(tmp_path, nats_url, database_url, nats_namespace, account, second, ghost)


async def _rest_api_and_proxy(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                              account: pwd.struct_passwd, second: pwd.struct_passwd, ghost: str) -> None:
    password = "form-password-" + unique_name()
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace,
                             start=("auth", "api", "proxy", "spawner"), proxy={"port": free_port()},
                             passwords={second.pw_name: password}, auth={"authenticator": "password"},
                             spawner={"backend": "system-user", "cmd": [SINGLEUSER], "notebook_dir": "~",
                                      "profiles": PROFILES}) as cluster:
        settings = cluster.settings
        engine = make_engine(settings.require_database_url(), pool_size=1)
        sessions = make_sessionmaker(engine)
        accounts = {"direct": account, "sudo": second}

        async def row(user: str) -> ServerState | None:
            async with sessions() as s:
                return (await s.execute(select(ServerState).where(ServerState.user_name == user))).scalar()

        try:
            await cluster.wait_hub()
            headers = {}
            for user in (account.pw_name, second.pw_name, ghost):
                await ensure_user(settings, user)
                headers[user] = {"Authorization": f"token {mint_token(settings, user)}"}
            base = f"http://127.0.0.1:{settings.proxy.port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as client, \
                    httpx.AsyncClient(base_url=base, timeout=30) as browser:
                for mode, pw in accounts.items():
                    name = pw.pw_name
                    t0 = time.monotonic()
                    if mode == "direct":
                        started = await client.post(f"/hub/api/users/{name}/server", json={"profile": mode},
                                                    headers=headers[name])
                        assert started.status_code in (201, 202), started.text
                    else:
                        await log_in(browser, name, password)
                        posted = await spawn_through_form(browser, profile=mode)
                        assert posted is not None and posted.status_code == 302, posted

                    async def ready(name: str = name) -> bool:
                        model = (await client.get(f"/hub/api/users/{name}", headers=headers[name])).json()
                        return bool(model["servers"].get("", {}).get("ready"))

                    await wait_for(ready, timeout=90, what=f"{name}'s server ready\n{cluster.logs()}")
                    print(f"\n{mode}: POST to ready {time.monotonic() - t0:.2f}s")
                    reached = await (client if mode == "direct" else browser).get(f"/user/{name}/api")
                    assert reached.status_code == 200 and "version" in reached.json(), reached.text

                    running = await row(name)
                    assert running is not None and running.status == "running" and running.backend == "system-user"
                    pid = int((await load_backend(settings, "system-user").locate(running.state) or {})["pid"])
                    assert status_ids(pid)["Uid"] == [pw.pw_uid] * 4
                    assert environ(pid)["JUPYTERHUB_ROOT_DIR"] == pw.pw_dir
                    assert os.readlink(f"/proc/{pid}/cwd") == pw.pw_dir
                    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    via_sudo = Path(f"/proc/{parent}/comm").read_text().strip() == "sudo"
                    assert via_sudo == (mode == "sudo"), f"{mode}: the server's parent is {parent}"

                why = f"no Unix account named {ghost!r} on this host"
                refused = await client.post(f"/hub/api/users/{ghost}/server", headers=headers[ghost])
                # failed within the api's slow_spawn_timeout: JupyterHub's 500 "Spawn failed: …"; else later
                assert refused.status_code in (500, 202), refused.text
                if refused.status_code == 500:
                    assert why in refused.json()["message"]

                async def failed() -> ServerState | None:
                    found = await row(ghost)
                    return found if found is not None and found.status == "failed" else None

                failure = await wait_for(failed, timeout=30, what=f"{ghost}'s spawn failed\n{cluster.logs()}")
                assert why in failure.message

                for pw in accounts.values():
                    name = pw.pw_name
                    before = await row(name)
                    assert before is not None
                    stopped = await client.delete(f"/hub/api/users/{name}/server", headers=headers[name])
                    assert stopped.status_code in (202, 204), stopped.text

                    async def gone(name: str = name) -> bool:
                        found = await row(name)
                        return found is not None and found.status == "stopped"

                    await wait_for(gone, timeout=30, what=f"{name}'s server stopped\n{cluster.logs()}")
                    assert marked(before.state["marker"]) == [], "nothing of the server is left"
                    assert (await client.get(f"/user/{name}/api")).status_code != 200
        finally:
            await engine.dispose()


OWN_ACCOUNT_SCRIPT = WORKER_HEAD + r"""    try:
        state = await backend.start(spec, identity)
    except Exception as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
        return
    await backend.stop(state)
    print(json.dumps({"started": state}), flush=True)

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def test_a_worker_that_is_not_root_never_runs_a_server_as_its_own_account(
        tmp_path: Path, hub_api: HubApiStub) -> None:
    # a hub user named as the worker's account (or mapped to it): its server would read the worker's own
    # environment (database password, hub key) in /proc; refused even where sudoers would let it through
    with unix_user("fhw") as hub:
        helper = f"{sys.executable} -I -m fleethub.services.spawner.asuser *"
        with sudoers_rule(f"{hub.pw_name} ALL=(ALL) NOPASSWD:SETENV: {helper}\n"):
            data = Path(hub.pw_dir) / "data"
            job = {"data_dir": str(data), "user": hub.pw_name, "spawn_id": new_id(),
                   "spawner": {"ip": "127.0.0.1", "hub_api_url": hub_api.url, "cmd": [SINGLEUSER],
                               "system_user": {"mediator": SUDO}}}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", OWN_ACCOUNT_SCRIPT, json.dumps(job), user=hub.pw_uid, group=hub.pw_gid,
                extra_groups=[], cwd=hub.pw_dir, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": hub.pw_dir},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 90)
            assert out, f"the worker failed: {err.decode()[-3000:]}"
            result = json.loads(out)
            assert "refused" in result, result
            assert "the worker's own account" in result["refused"], result
