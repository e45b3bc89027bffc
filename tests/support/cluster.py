"""A whole fleethub started as real processes for tests: each service via `python -m fleethub run`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fleethub.shared.db.engine import make_engine
from fleethub.shared.db.migrate import migrate
from fleethub.shared.procs import become_subreaper
from fleethub.shared.settings import ServiceSettings, child_env, load_settings

FAKE_SERVER = Path(__file__).with_name("fake_singleuser.py")


@dataclass
class Cluster:
    """Processes of one fleethub under test; `stop()` ends them all (and what they left behind)."""

    settings: ServiceSettings
    log_dir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, service: str, *, extra_env: dict[str, str] | None = None, log_name: str | None = None,
              **overrides: Any) -> subprocess.Popen[bytes]:
        """Start one replica of `service`; `overrides` replace settings sections for this replica, and
        `extra_env` is added to its environment (canaries a server must not inherit, say). Its output goes
        to `<log_name>.log` (appended: a restarted replica keeps its history), by default `<service>-<n>.log`."""
        settings = self.replica_settings(**overrides)
        n = sum(1 for name, _ in self.procs if name == service)
        log = open(self.log_dir / f"{log_name or f'{service}-{n}'}.log", "ab")  # closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleethub", "run", service],
            env={**child_env(settings), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append((service, proc))
        return proc

    def replica_settings(self, **overrides: Any) -> ServiceSettings:
        """The settings of a replica started with `overrides` (sections merged, other values replaced)."""
        if not overrides:
            return self.settings
        merged = self.settings.model_dump()
        for key, value in overrides.items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
        return load_settings(None, **merged)

    async def hub_up(self) -> bool:
        """Whether the hub answers through the proxy: an auth and an api replica both registered with it."""
        hub = f"http://127.0.0.1:{self.settings.proxy.port}{self.settings.base_url}hub"
        async with httpx.AsyncClient(base_url=hub, timeout=10) as anon:
            return (await anon.get("/login")).status_code == 200 and (await anon.get("/api/")).status_code == 200

    async def wait_hub(self, timeout: float = 30.0) -> None:
        """Wait until `hub_up`."""
        await wait_for(self.hub_up, timeout=timeout, what=f"the hub through the proxy\n{self.logs()}")

    def logs(self) -> str:
        """Every service log, for failure messages."""
        logs = sorted(self.log_dir.glob("*.log"))
        return "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in logs)

    def stop(self) -> None:
        """SIGTERM every process, wait, SIGKILL stragglers; then end orphaned user servers."""
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a test may have left one stopped: it could not see the TERM
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        from fleethub.shared.procs import end_processes, orphaned_children

        # user servers outlive their worker by design; re-parented to us (the subreaper), they end here.
        # Only those: the session's embedded NATS/PostgreSQL are children of this process too.
        end_processes([pid for pid in orphaned_children() if _is_user_server(pid)])


def _is_user_server(pid: int) -> bool:
    try:
        return b"JUPYTERHUB_SERVICE_PREFIX=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


async def migrated(database_url: str) -> None:
    """Apply the schema to a fresh test database."""
    engine = make_engine(database_url, pool_size=1)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def wait_for(check: Any, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Await `check()` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")




def env_without_fleethub() -> dict[str, str]:
    """This process's environment without FLEETHUB_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETHUB_")}


async def password_accounts(settings: ServiceSettings, passwords: dict[str, str]) -> None:
    """Password accounts, as `fleethub up` makes the first admin's."""
    from fleethub.shared.accounts import set_password
    from fleethub.shared.db.engine import make_sessionmaker

    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            for user, password in passwords.items():
                await set_password(session, user, password)
    finally:
        await engine.dispose()


async def ensure_user(settings: ServiceSettings, name: str, admin: bool = False) -> None:
    """A user row (as a first login or `POST /users` makes one)."""
    from sqlalchemy.dialects.postgresql import insert

    from fleethub.shared.db.engine import make_sessionmaker
    from fleethub.shared.db.models import User

    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(User).values(name=name, admin=admin).on_conflict_do_nothing())
    finally:
        await engine.dispose()


def mint_token(settings: ServiceSettings, user: str) -> str:
    """A new API token of `user`, from `fleethub token` (as an operator gets one)."""
    out = subprocess.run([sys.executable, "-m", "fleethub", "token", user], env=child_env(settings),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


CORE = ("auth", "api", "spawner", "proxy")


@contextlib.asynccontextmanager
async def running_stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, *,
                        start: tuple[str, ...] = CORE, passwords: dict[str, str] | None = None,
                        **sections: Any) -> AsyncIterator[Cluster]:
    """A whole fleethub as real processes on a migrated database: the services in `start`, with the
    settings `sections`, password accounts made first; everything is stopped (and reaped) at exit."""
    become_subreaper()
    await migrated(database_url)
    settings = load_settings(None, nats_url=nats_url, database_url=database_url, nats_namespace=nats_namespace,
                             data_dir=tmp_path / "data", **sections)
    if passwords:
        await password_accounts(settings, passwords)
    (tmp_path / "logs").mkdir()
    cluster = Cluster(settings, tmp_path / "logs")
    try:
        for service in start:
            cluster.start(service)
        yield cluster
    finally:
        cluster.stop()


# secrets a spawner worker's environment may hold (set by an operator, a container platform, or by us):
# none may reach a user server or a managed service
CANARIES = {
    "AWS_SECRET_ACCESS_KEY": "canary-aws",
    "DATABASE_URL": "postgresql://canary:canary-db@127.0.0.1:1/x",
    "FLEETHUB_X": "canary-fleethub",
    "CONFIGPROXY_AUTH_TOKEN": "canary-chp",
    "LANG": "C.UTF-8",  # in env_keep: it arrives (C.UTF-8: Python adds no LC_CTYPE of its own)
}


def outside_allow_list(env: dict[str, str], settings: ServiceSettings,
                       extra: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The variables of a server's environment that neither the allow list (`spawner.env_keep`), the
    account (USER, HOME, SHELL), JupyterHub's contract variables, the local backend's marker nor `extra`
    (configured ones) explain."""
    from fleethub.services.spawner.backends.local import MARKER_VAR

    allowed = {*settings.spawner.env_keep, "USER", "HOME", "SHELL", "JPY_API_TOKEN", MARKER_VAR, *extra}
    return sorted(k for k in env if k not in allowed and not k.startswith("JUPYTERHUB_"))
