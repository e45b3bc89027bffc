"""`fleethub up` (everything on one machine), `fleethub token` (a new API token for a user) and how such
a command finds the database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings, child_env, load_settings

SERVICE_ORDER = ("auth", "api", "spawner", "proxy", "culler")
RUNTIME_FILE = "runtime.json"
NATS_KEYS_DIR = "nats-keys"  # 0700: one 0600 nkey seed per service, and the server's authorization block
ADMIN_PASSWORD_FILE = "admin-password"
DEFAULT_ADMIN = "admin"


def _load(args: argparse.Namespace) -> ServiceSettings:
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return load_settings(args.config, **overrides)


def _private_data_dir(data_dir: Path) -> None:
    """The data dir created 0700, or an existing one tightened: nothing in it is for anyone else
    (`fleethub.shared.private`); what was looser is reported."""
    from fleethub.shared.embedded import pg_traverse_gid
    from fleethub.shared.private import DIR_MODE, tighten

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(mode=DIR_MODE, exist_ok=True)
    loosened = tighten(data_dir, pg_traverse_gid())
    if loosened:
        shown = ", ".join(f"{e.path.relative_to(data_dir)} ({e.mode:04o})" for e in loosened[:5])
        more = f" and {len(loosened) - 5} more" if len(loosened) > 5 else ""
        print(f"tightened the modes of {len(loosened)} entries of {data_dir} that others could reach "
              f"(now 0600 files, 0700 directories): {shown}{more}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    from fleethub.shared.private import open_private

    lock = os.fdopen(open_private(data_dir / "up.lock", os.O_WRONLY | os.O_CREAT), "w")  # held for the life of `up`
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"another `fleethub up` is running on {data_dir}") from None
    try:
        yield
    finally:
        lock.close()


async def _prepare_database(settings: ServiceSettings, admin: str) -> str | None:
    """Migrate, make sure the first admin exists; returns a new admin password if one was made."""
    from sqlalchemy import select
    from sqlalchemy.dialects.postgresql import insert

    from fleethub.shared.accounts import set_password
    from fleethub.shared.db.engine import make_engine, make_sessionmaker
    from fleethub.shared.db.migrate import migrate
    from fleethub.shared.db.models import Account, User
    from fleethub.shared.passwords import generate_password

    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        await migrate(engine)
        sessions = make_sessionmaker(engine)
        async with sessions() as session, session.begin():
            for name in {admin, *settings.auth.admin_users}:
                await session.execute(
                    insert(User).values(name=name, admin=True).on_conflict_do_update(
                        index_elements=["name"], set_={"admin": True}
                    )
                )
        if settings.auth.authenticator != "password":
            return None
        async with sessions() as session, session.begin():
            exists = (await session.execute(
                select(Account.id).join(User, User.id == Account.user_id).where(User.name == admin))).scalar()
            if exists is not None:
                return None
            password = generate_password(settings.auth.password)
            await set_password(session, admin, password, rules=settings.auth.password)
            return password
    finally:
        await engine.dispose()


READY_PATHS = ("hub/api/", "hub/login")  # served by the api and by auth, under the base_url


def _local_probe(settings: ServiceSettings, path: str) -> tuple[urllib.request.Request, ssl.SSLContext | None]:
    """A request for `path` at the proxy's own listener, never at the public URL.

    The public URL may be served by a TLS terminator in front of us, or not resolve from this host;
    the probe goes to the bound address (loopback for every interface) with the public Host, over
    https when the proxy serves TLS itself, verifying against our own certificate (its name is not
    checked: we dialled our own loopback).
    """
    conf = settings.proxy
    host = "127.0.0.1" if conf.host in ("", "0.0.0.0") else "::1" if conf.host == "::" else conf.host
    shown = f"[{host}]" if ":" in host else host
    ctx = None
    scheme = "http"
    if conf.ssl_cert is not None:
        scheme = "https"
        ctx = ssl.create_default_context(cafile=str(conf.ssl_cert))
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
    request = urllib.request.Request(f"{scheme}://{shown}:{conf.port}{path}",
                                     headers={"Host": urlsplit(settings.hub_public_url).netloc})
    return request, ctx


def _exited(procs: dict[str, subprocess.Popen[bytes]]) -> Callable[[], None]:
    def check() -> None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise ConfigError(f"service {name} exited with code {proc.returncode} during start; see its log above")

    return check


def _wait_http(request: urllib.request.Request, ctx: ssl.SSLContext | None, timeout: float,
               check: Callable[[], None]) -> None:
    """Poll `request` until it answers 200; `check` raises if a service ended meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        try:
            with urllib.request.urlopen(request, timeout=1, context=ctx) as resp:  # our own local listener
                if resp.status == 200:
                    return
        except OSError as exc:
            reason = getattr(exc, "reason", exc)  # urllib wraps connection errors in URLError
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise ConfigError(f"the proxy's https port does not present proxy.ssl_cert: {reason}") from None
        time.sleep(0.1)
    raise ConfigError(f"fleethub did not answer at {request.full_url} within {timeout:.0f}s")


def _service_settings(name: str, settings: ServiceSettings, nkeys: Path | None) -> ServiceSettings:
    """`settings` as service `name` runs with them: with its own NATS seed file only."""
    if nkeys is None:
        return settings
    from fleethub.shared.bus.natsconfig import seed_file

    return settings.model_copy(update={"nats_nkey_file": seed_file(nkeys, name)})


def _start_service(name: str, settings: ServiceSettings, nkeys: Path | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fleethub", "run", name],
                            env=child_env(_service_settings(name, settings, nkeys)))


def with_ops_listeners(settings: ServiceSettings) -> ServiceSettings:
    """`settings` with every service's operations listener on (`/metrics`, `/health/*`): a configured port
    is kept, an unset or 0 one becomes a free port below the ephemeral range (the api's and auth's own
    listeners bind port 0 meanwhile), fixed for the life of `fleethub up` (a restarted service comes back
    on it, and runtime.json can say where each one is)."""
    from fleethub.shared.net import reserved_free_port

    ops = settings.ops.model_copy(deep=True)
    for name in SERVICE_ORDER:
        listen = ops.of(name)
        if not listen.port:
            listen.port = reserved_free_port(listen.host)
    return settings.model_copy(update={"ops": ops})


def ops_urls(settings: ServiceSettings) -> dict[str, str]:
    """Each service's operations listener, as runtime.json records it (a proxy of several workers: the first
    worker's; worker i listens on port + i)."""
    urls = {}
    for name in SERVICE_ORDER:
        listen = settings.ops.of(name)
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        urls[name] = f"http://{host}:{listen.port}"
    return urls


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def up(args: argparse.Namespace) -> int:
    """Run embedded NATS/PostgreSQL (unless configured), migrate, and run every service: all in this process
    (the default), or each in its own supervised process (`--processes`, and with `proxy.workers` > 1)."""
    from fleethub.shared.embedded import EmbeddedNats, EmbeddedPostgres
    from fleethub.shared.private import write_private
    from fleethub.shared.procs import become_subreaper, end_processes, orphaned_children

    started = time.monotonic()
    settings = _load(args)
    data_dir = settings.data_dir.resolve()
    _private_data_dir(data_dir)
    become_subreaper()
    hosted = not args.processes and settings.proxy.workers <= 1
    # the services' code loads while the embedded servers start (initdb alone takes seconds); joined before
    # this thread imports any of it, so that no two threads import one module at once
    preload = threading.Thread(target=_preload, name="preload", daemon=True)
    if hosted:
        preload.start()
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with _data_dir_lock(data_dir), contextlib.ExitStack() as stack:
        updates: dict[str, Any] = {"data_dir": data_dir}
        own_pids: list[int] = []
        nkeys: Path | None = None
        if "nats_url" not in settings.model_fields_set:
            from fleethub.shared.bus.natsconfig import private_dir, write_config

            # seeds are made once and kept (regenerated only when missing); the server is told only the
            # public keys, with each service's permissions, and refuses a client without credentials
            nkeys = data_dir / NATS_KEYS_DIR
            auth_conf = write_config(nkeys, settings.nats_namespace, tuple(w.name for w in settings.webhooks))
            nats = stack.enter_context(EmbeddedNats(private_dir(data_dir / "nats"), config=auth_conf))
            updates["nats_url"] = nats.url
            own_pids.append(nats.proc.pid if nats.proc else 0)
        if "database_url" not in settings.model_fields_set:
            pg = stack.enter_context(EmbeddedPostgres(data_dir / "pg"))
            updates["database_url"] = pg.url
            own_pids.append(pg.proc.pid if pg.proc else 0)
        settings = load_settings(args.config, **updates)
        admin = settings.auth.admin_users[0] if settings.auth.admin_users else DEFAULT_ADMIN
        if admin not in settings.auth.admin_users:
            settings = load_settings(
                args.config, **updates, auth={**settings.auth.model_dump(), "admin_users": [admin]}
            )
        settings = with_ops_listeners(settings)
        if preload.is_alive():
            preload.join()
        password = asyncio.run(_prepare_database(settings, admin))
        if password is not None:
            write_private(data_dir / ADMIN_PASSWORD_FILE, password + "\n")
        runtime = {"pid": os.getpid(), "database_url": settings.require_database_url(), "nats_url": settings.nats_url,
                   "ops": ops_urls(settings)}
        write_private(data_dir / RUNTIME_FILE, json.dumps(runtime))
        stack.callback(lambda: (data_dir / RUNTIME_FILE).unlink(missing_ok=True))

        ready = _Ready(settings, admin, data_dir, started, nkeys)
        if not hosted:
            return _supervise(settings, nkeys, own_pids, stack, ready, lambda: stopping)
        # hosted: every service in this interpreter, one event loop (about a fifth of the memory of five
        # processes, and a faster start); the embedded servers are stopped by their context managers, after
        stack.callback(lambda: end_processes(orphaned_children(set(own_pids))))
        return _host(settings, nkeys, own_pids, ready)


@dataclass
class _Ready:
    """What `up` says once the hub answers."""

    settings: ServiceSettings
    admin: str
    data_dir: Path
    started: float
    nkeys: Path | None

    def wait(self, check: Callable[[], None]) -> None:
        for path in READY_PATHS:  # the api and auth both registered and routed: the hub answers as a whole
            probe, ctx = _local_probe(self.settings, self.settings.base_url + path)
            _wait_http(probe, ctx, 60, check)
        if self.settings.auth.authenticator == "password":
            # the password itself stays in its 0600 file: a log is read by more people, and kept longer
            print(f"log in as '{self.admin}' with the password in {self.data_dir / ADMIN_PASSWORD_FILE}", flush=True)
        else:
            print(f"log in as '{self.admin}' with the {self.settings.auth.authenticator} authenticator's password",
                  flush=True)
        print(f"API token: fleethub token {self.admin} --data-dir {self.data_dir}", flush=True)
        if self.nkeys is not None:  # the read-only account of outside event consumers (docs/events.md)
            from fleethub.shared.bus.natsconfig import seed_file

            print(f"events: fleethub events --follow --data-dir {self.data_dir} (read-only NATS account: nkey seed "
                  f"{seed_file(self.nkeys, 'events')}, inbox prefix _INBOX_events)", flush=True)
        print(f"fleethub is running at {self.settings.hub_public_url}{self.settings.base_url}hub/ "
              f"(ready in {time.monotonic() - self.started:.1f}s)", flush=True)


def _preload() -> None:
    """Import what the hosted services and the migration need (a failure surfaces later, where it is used)."""
    import importlib

    with contextlib.suppress(Exception):
        importlib.import_module("fleethub.shared.db.migrate")
        for name in SERVICE_ORDER:
            importlib.import_module(f"fleethub.services.{name}.app")


def _supervise(settings: ServiceSettings, nkeys: Path | None, own_pids: list[int], stack: contextlib.ExitStack,
               ready: _Ready, stopping: Callable[[], bool]) -> int:
    """One process per service (`fleethub up --processes`), restarted with backoff when it dies."""
    from fleethub.shared.procs import end_processes, orphaned_children, reap_orphans

    procs: dict[str, subprocess.Popen[bytes]] = {}
    # the embedded servers are stopped by their own context managers, after this
    stack.callback(lambda: end_processes(orphaned_children({*own_pids, *(p.pid for p in procs.values())})))
    stack.callback(lambda: _stop_all(procs))
    for name in SERVICE_ORDER:
        procs[name] = _start_service(name, settings, nkeys)
    ready.wait(_exited(procs))
    restarts: dict[str, list[float]] = {name: [] for name in procs}
    while not stopping():
        time.sleep(0.5)
        reap_orphans({*own_pids, *(p.pid for p in procs.values())})
        for name, proc in list(procs.items()):
            if proc.poll() is None or stopping():
                continue
            if proc.returncode == 0:  # a service only exits 0 when asked to: POST /hub/api/shutdown
                print(f"service {name} stopped for a hub shutdown; stopping the others", flush=True)
                print("fleethub is stopping", flush=True)
                return 0
            recent = [t for t in restarts[name] if time.monotonic() - t < 60]
            restarts[name] = [*recent, time.monotonic()]
            delay = min(2 ** len(recent) * 0.5, 10)
            print(f"service {name} exited with {proc.returncode}; restarting in {delay:.1f}s", file=sys.stderr)
            time.sleep(delay)
            procs[name] = _start_service(name, settings, nkeys)
    print("fleethub is stopping", flush=True)
    return 0


def _host(settings: ServiceSettings, nkeys: Path | None, own_pids: list[int], ready: _Ready) -> int:
    """Every service in this process, on one uvloop, until SIGTERM/SIGINT or a hub shutdown (which signals this
    process); a service that ends on its own once the hub answered is started again, with backoff (as
    `--processes` restarts a process), the others running on."""
    from fleethub.shared.logging import setup_logging
    from fleethub.shared.service import run_async

    setup_logging(settings.log_level, "up", settings.log_format)

    async def main(stop: asyncio.Event) -> None:
        from fleethub.shared.db.engine import handler_pool, make_engine
        from fleethub.shared.profiles import served_backends
        from fleethub.shared.service import HOSTING, Hosting

        # one pool for all but the spawner, as large as the api's alone in a process of its own (a storm of
        # requests queued for connections is answered 503 after the pool timeout); the spawner's own, so
        # its lease statements never wait behind those requests (they must answer within half a lease)
        engine = make_engine(settings.require_database_url(), pool_size=20)
        kept, overflow = handler_pool(settings.spawner.max_concurrent * len(served_backends(settings.spawner)))
        engines = {"spawner": make_engine(settings.require_database_url(), pool_size=kept, max_overflow=overflow)}
        HOSTING.set(Hosting(engine, engines=engines))  # for the services' tasks, which copy this context
        trims = [asyncio.get_running_loop().create_task(_trim_pool(e)) for e in (engine, *engines.values())]
        try:
            await _Host(settings, nkeys, stop).run(own_pids, ready)
        finally:
            for trim in trims:
                trim.cancel()
            await asyncio.gather(*trims, return_exceptions=True)
            for e in (engine, *engines.values()):
                await e.dispose()

    run_async(main)
    return 0


class _Host:
    """The hosted services' tasks: each with a stop event of its own (set by the host's stop, or by the service
    itself through `LOST` when its bus is closed for good), restarted when it ends while the host runs."""

    def __init__(self, settings: ServiceSettings, nkeys: Path | None, stop: asyncio.Event) -> None:
        self.settings, self.nkeys, self.stop = settings, nkeys, stop
        self.tasks: dict[asyncio.Task[Any], tuple[str, asyncio.Event]] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in SERVICE_ORDER}

    def start(self, name: str) -> None:
        import contextvars
        import importlib

        from fleethub.shared.service import LOST

        own = asyncio.Event()
        context = contextvars.copy_context()
        context.run(LOST.set, own.set)
        serve = importlib.import_module(f"fleethub.services.{name}.app").serve
        task = asyncio.get_running_loop().create_task(
            serve(_service_settings(name, self.settings, self.nkeys), own), name=name, context=context)
        self.tasks[task] = (name, own)

    def check(self) -> None:
        """While the hub is not answering yet: a service that ends fails `up` (it could not start)."""
        if self.stop.is_set():
            raise _Stopping
        for task, (name, _) in list(self.tasks.items()):
            if task.done():
                raise ConfigError(f"service {name} ended during start; see its log above")

    def backoff(self, name: str) -> float:
        """Seconds before service `name` starts again: 0.5 doubled for each restart in the last minute, ≤ 10."""
        now = time.monotonic()
        recent = [t for t in self.restarts[name] if now - t < 60]
        self.restarts[name] = [*recent, now]
        return float(min(2 ** len(recent) * 0.5, 10))

    async def run(self, own_pids: list[int], ready: _Ready) -> None:
        loop = asyncio.get_running_loop()
        for name in SERVICE_ORDER:
            self.start(name)
        reaper = loop.create_task(_reap_unwaited(set(own_pids)))
        stopper: asyncio.Task[Any] = loop.create_task(self.stop.wait())
        try:
            with contextlib.suppress(_Stopping):
                await asyncio.to_thread(ready.wait, self.check)
            while not self.stop.is_set():
                done, _ = await asyncio.wait([*self.tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stopper}:
                    name, _ = self.tasks.pop(task)
                    exc = None if task.cancelled() else task.exception()
                    delay = self.backoff(name)
                    print(f"service {name} ended ({exc!r}); restarting it in {delay:.1f}s", file=sys.stderr,
                          flush=True)
                    await asyncio.wait([stopper], timeout=delay)
                    if self.stop.is_set():
                        break
                    self.start(name)
        finally:
            print("fleethub is stopping", flush=True)
            self.stop.set()
            for _, own in self.tasks.values():
                own.set()
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=15)
            for task in (*self.tasks, reaper, stopper):
                task.cancel()
            await asyncio.gather(*self.tasks, reaper, stopper, return_exceptions=True)


POOL_TRIM_EVERY = 20.0  # seconds between looks at the hosted services' pool
POOL_IDLE_KEEP = 2  # idle connections kept; more are closed (PostgreSQL holds ~15 MB for each)


async def _trim_pool(engine: Any) -> None:
    """Close the idle connections of the shared pool when it holds more than an idle hub needs.

    A pool never shrinks by itself: the connections the services' start opened at once (or a burst of
    requests) would stay open for good. `dispose` closes the idle ones and starts a new pool; connections in
    use finish their work and are closed when returned. Only when none is in use: a busy hub keeps its pool.
    """
    while True:
        await asyncio.sleep(POOL_TRIM_EVERY)
        if engine.pool.checkedout() == 0 and engine.pool.checkedin() > POOL_IDLE_KEEP:
            await engine.dispose()


class _Stopping(Exception):
    """Asked to stop while waiting for the hub to answer."""


async def _reap_unwaited(keep: set[int]) -> None:
    """Reap zombie children nobody waits for (orphans re-parented to this subreaper), leaving those the event
    loop watches (the spawner's user servers are this process's children too): a zombie is reaped only when
    it was one at the previous pass, 2 s earlier, by which time the loop would have reaped its own."""
    from fleethub.shared.procs import reap_orphans, zombie_children

    seen: set[int] = set()
    while True:
        await asyncio.sleep(2)
        try:  # a look without reaping (WNOWAIT) is one system call; the /proc scan only when a child is a zombie
            peek = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # noqa: ASYNC222 (WNOHANG)
        except ChildProcessError:
            peek = None
        if peek is None:
            seen = set()
            continue
        now = zombie_children(keep)
        reap_orphans(keep | (now - seen))
        seen = now


async def _mint_token(database_url: str, user: str, note: str) -> str:
    from sqlalchemy import select

    from fleethub.shared.db.engine import make_engine, make_sessionmaker
    from fleethub.shared.db.migrate import ensure_migrated
    from fleethub.shared.db.models import ApiToken, User
    from fleethub.shared.security import hash_token, new_token

    engine = make_engine(database_url, pool_size=1)
    try:
        await ensure_migrated(engine)
        async with make_sessionmaker(engine)() as session, session.begin():
            user_id = (await session.execute(select(User.id).where(User.name == user))).scalar()
            if user_id is None:
                raise ConfigError(f"no such user: {user!r}")
            token = new_token()
            session.add(ApiToken(user_id=user_id, hashed=hash_token(token), kind="api", note=note, scopes=["inherit"]))
            return token
    finally:
        await engine.dispose()


def read_runtime(data_dir: Path) -> dict[str, Any] | None:
    """The runtime file `fleethub up` keeps in `data_dir` (None: none there, or unreadable as JSON).

    Raises:
        ConfigError: the file is there but this user may not read it (it is 0600, its owner's who ran `up`).
    """
    path = data_dir / RUNTIME_FILE
    try:
        runtime = json.loads(path.read_text())
    except PermissionError:
        raise ConfigError(f"cannot read {path} (permission denied): run this as the user who ran `fleethub up`, "
                          "or set the URLs (FLEETHUB_NATS_URL, FLEETHUB_DATABASE_URL)") from None
    except (OSError, ValueError):
        return None
    return runtime if isinstance(runtime, dict) else None


def database_url(settings: ServiceSettings, stack: contextlib.ExitStack) -> str:
    """The database of a command run beside `fleethub up` (`fleethub token`, `fleethub passwd`): the configured
    URL, else the embedded PostgreSQL of the data dir — the running one, or started for the command (stopped
    when `stack` closes)."""
    from fleethub.shared.embedded import EmbeddedPostgres
    from fleethub.shared.procs import pid_alive

    if "database_url" in settings.model_fields_set:
        return settings.require_database_url()
    data_dir = settings.data_dir.resolve()
    runtime = read_runtime(data_dir)
    if runtime is not None and pid_alive(int(runtime.get("pid", 0))):
        return str(runtime["database_url"])
    if (data_dir / "pg").exists():
        pg = stack.enter_context(EmbeddedPostgres(data_dir / "pg"))
        return load_settings(None, database_url=pg.url).require_database_url()
    raise ConfigError(f"no fleethub database in {data_dir}: run `fleethub up` first or set FLEETHUB_DATABASE_URL")


def token(args: argparse.Namespace) -> int:
    """Print a new API token for an existing user, on the last line of the output."""
    settings = _load(args)
    with contextlib.ExitStack() as stack:
        print(asyncio.run(_mint_token(database_url(settings, stack), args.user, args.note)))
    return 0


def nats_config(args: argparse.Namespace) -> int:
    """Write one nkey seed per service (and `events`) and the nats-server `authorization` block to
    `args.out`, for an operator's own NATS; seeds already there are kept."""
    from fleethub.shared.bus.natsconfig import SEED_SUFFIX, write_config

    settings = _load(args)
    namespace = args.namespace or settings.nats_namespace
    out = Path(args.out).resolve()
    # the api may bind the durables of the configured webhooks: run this again when they change
    conf = write_config(out, namespace, tuple(w.name for w in settings.webhooks))
    print(f"wrote {conf} (public keys and permissions: include it in the nats-server config)")
    print(f"seeds (secrets, 0600) in {out}: give each service only its own, e.g. "
          f"FLEETHUB_NATS_NKEY_FILE={out / ('api' + SEED_SUFFIX)} for the api")
    print(f"outside event consumers (read-only, the events stream only): {out / ('events' + SEED_SUFFIX)}")
    return 0
