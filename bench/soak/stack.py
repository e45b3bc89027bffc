"""The soak's fleethub: embedded NATS and PostgreSQL, and every service as real processes, supervised.

`fleethub up` runs one process per service, and the soak needs replicas (2 api, 2 spawner workers,
2 proxy nodes), so this module starts them itself, as `fleethub up` would (`python -m fleethub run
<service>` with the settings in `FLEETHUB_SETTINGS_JSON`), and restarts a process that exits, after
a backoff like `fleethub up`'s. It is the subreaper of everything below it: the user servers of a
SIGKILLed spawner worker are re-parented here, and reaped here once they end.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleethub.shared.embedded import EmbeddedNats, EmbeddedPostgres
from fleethub.shared.net import free_port
from fleethub.shared.procs import become_subreaper, end_processes, orphaned_children, reap_orphans
from fleethub.shared.settings import ServiceSettings, child_env, load_settings

HERE = Path(__file__).resolve().parent
USER_SERVER = HERE / "userserver.py"
# (service, replicas): the order they are started in
LAYOUT = (("auth", 1), ("api", 2), ("spawner", 2), ("proxy", 2), ("culler", 1))
PROXY_TOKEN = secrets.token_hex(16)


@dataclass
class Slot:
    """One supervised service process (a replica), restarted in place when it exits."""

    service: str
    index: int
    overrides: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    starts: int = 0
    exits: list[tuple[float, int, int]] = field(default_factory=list)  # (time, return code, pid)
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Stack:
    """The processes of one soak run. `start()` brings them up; `supervise()` keeps them up; `stop()` ends all."""

    def __init__(self, workdir: Path, *, culler_timeout: float, run_id: str) -> None:
        self.workdir = workdir
        self.run_id = run_id
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nats = EmbeddedNats(workdir / "nats")
        self.pg = EmbeddedPostgres(workdir / "pg")
        self.culler_timeout = culler_timeout
        self.slots: list[Slot] = []
        self.settings: ServiceSettings | None = None
        self.proxy_ports: list[int] = []
        self.proxy_api_ports: list[int] = []
        self.stopping = False

    def start(self) -> ServiceSettings:
        """Start NATS and PostgreSQL, migrate, make the admin, and start every service process."""
        become_subreaper()
        self.nats.start()
        self.pg.start()
        self.proxy_ports = [free_port() for _ in range(2)]
        self.proxy_api_ports = [free_port() for _ in range(2)]
        settings = load_settings(
            None, nats_url=self.nats.url, database_url=self.pg.url, data_dir=self.workdir / "data",
            nats_namespace="soak", log_level="INFO",
            auth={"authenticator": "password", "admin_users": ["admin"]},
            api={"slow_spawn_timeout": 2, "slow_stop_timeout": 2, "concurrent_spawn_limit": 0},
            spawner={"cmd": [sys.executable, str(USER_SERVER)], "lease_ttl": 6,
                     "environment": {"SOAK_RUN": self.run_id}},
            proxy={"port": self.proxy_ports[0], "activity_interval": 2, "auth_token": PROXY_TOKEN},
            culler={"timeout": self.culler_timeout, "every": min(10.0, self.culler_timeout / 2)},
        )
        self.settings = settings
        asyncio.run(_prepare(settings))
        for service, replicas in LAYOUT:
            for i in range(replicas):
                overrides: dict[str, Any] = {}
                if service == "proxy":
                    overrides = {"proxy": {"port": self.proxy_ports[i], "api_port": self.proxy_api_ports[i]}}
                slot = Slot(service, i, overrides)
                self.slots.append(slot)
                self._spawn(slot)
        return settings

    def _spawn(self, slot: Slot) -> None:
        assert self.settings is not None
        settings = self.settings
        if slot.overrides:
            merged = settings.model_dump()
            for key, value in slot.overrides.items():
                merged[key] = {**merged[key], **value}
            settings = load_settings(None, **merged)
        log = open(self.logs / f"{slot.name}.log", "ab")  # appended across restarts
        log.write(f"\n==== start {slot.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        slot.proc = subprocess.Popen([sys.executable, "-m", "fleethub", "run", slot.service],
                                     env=child_env(settings), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        slot.started = time.monotonic()
        slot.starts += 1
        slot.restart_at = None

    def own_pids(self) -> set[int]:
        pids = {s.proc.pid for s in self.slots if s.proc is not None}
        for server in (self.nats, self.pg):
            if server.proc is not None:
                pids.add(server.proc.pid)
        return pids

    def tick(self) -> list[str]:
        """One supervision step: note exits, restart what is due, reap orphans; returns what happened."""
        now = time.monotonic()
        events = []
        reap_orphans(self.own_pids())
        for slot in self.slots:
            if slot.proc is None or self.stopping:
                continue
            code = slot.proc.poll()
            if code is not None and slot.restart_at is None:
                recent = [t for t, _, _ in slot.exits if now - t < 60]
                slot.exits.append((now, code, slot.proc.pid))
                delay = min(2 ** len(recent) * 0.5, 10)  # as `fleethub up`
                slot.restart_at = now + delay
                events.append(f"{slot.name} exited {code}; restart in {delay:.1f}s")
            elif code is not None and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)
                events.append(f"{slot.name} restarted (pid {slot.pid})")
        return events

    async def supervise(self, on_event: Any) -> None:
        while not self.stopping:
            for event in self.tick():
                on_event(event)
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every service, SIGKILL stragglers, end the user servers, stop PostgreSQL and NATS."""
        self.stopping = True
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        end_processes([pid for pid in orphaned_children(self.own_pids())])
        for pid in user_server_pids(self.run_id):
            end_processes([pid])
        self.pg.stop()
        self.nats.stop()


async def _prepare(settings: ServiceSettings) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from fleethub.shared.db.engine import make_engine, make_sessionmaker
    from fleethub.shared.db.migrate import migrate
    from fleethub.shared.db.models import User

    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        await migrate(engine)
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(User).values(name="admin", admin=True).on_conflict_do_nothing())
    finally:
        await engine.dispose()


def mint_token(settings: ServiceSettings, user: str) -> str:
    """A new API token of `user`, from `fleethub token`."""
    out = subprocess.run([sys.executable, "-m", "fleethub", "token", user], env=child_env(settings),
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"fleethub token failed: {out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def user_server_pids(run_id: str) -> dict[int, tuple[str, str]]:
    """The live user servers of this run (by the marker variable in their environment): pid → (user, server)."""
    import os

    marker = f"SOAK_RUN={run_id}".encode()
    found: dict[int, tuple[str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if marker not in env or stat.rpartition(")")[2].split()[0] == "Z":
            continue
        values = dict(item.split(b"=", 1) for item in env if b"=" in item)
        found[int(entry)] = (values.get(b"JUPYTERHUB_USER", b"").decode(),
                             values.get(b"JUPYTERHUB_SERVER_NAME", b"").decode())
    return found


def describe(stack: Stack) -> dict[str, Any]:
    """What ran, for the report."""
    return {"layout": {s: n for s, n in LAYOUT}, "proxy_ports": stack.proxy_ports,
            "settings": json.loads(stack.settings.model_dump_json(include={"api", "spawner", "culler"}))
            if stack.settings else {}}
