"""Real NATS and PostgreSQL for every test that needs them, one database and one namespace per test.

Each server comes, in this order, from `FLEETHUB_TEST_NATS_URL` / `FLEETHUB_TEST_DATABASE_URL`, from
testcontainers when a Docker engine answers, or from embedded servers (`fleethub.shared.embedded`) on free ports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from fleethub.shared.embedded import EmbeddedNats, EmbeddedPostgres

if TYPE_CHECKING:
    from tests.support.cluster import Cluster
    from tests.support.dockerd import Dockerd


def _docker_answers() -> bool:
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _with_database(server_url: str, database: str, scheme: str = "postgresql") -> str:
    """`server_url` pointing at `database`, with `scheme` (keeps credentials and query)."""
    parts = urlsplit(server_url)
    return urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _admin_sql(server_url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(server_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _in_own_loop(run())


def _in_own_loop(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end in a thread of its own: asyncio.run here would replace the event loop
    pytest-asyncio set up."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def docker_available() -> bool:
    """Whether a Docker engine answers (then servers not given by URL run in containers)."""
    return _docker_answers()


@pytest.fixture(scope="session")
def nats_server_url(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    """URL of the NATS server (JetStream enabled) that every test of the session shares."""
    url = os.environ.get("FLEETHUB_TEST_NATS_URL")
    if url:
        yield url
        return
    if docker_available:
        from testcontainers.core.waiting_utils import wait_for_logs

        container = _nats_container()
        with container:
            # NatsContainer has waited already; a plain DockerContainer has not
            wait_for_logs(container, "Server is ready", timeout=60)
            host = container.get_container_host_ip()
            yield f"nats://{host}:{container.get_exposed_port(4222)}"
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


def _nats_container() -> Any:
    """A NATS container with JetStream, from whichever API the installed testcontainers offers."""
    for module in ("testcontainers.community.nats", "testcontainers.nats"):
        try:
            container_class = importlib.import_module(module).NatsContainer
        except (ImportError, AttributeError):
            continue
        # with_command, not jetstream=True: older NatsContainer versions lack that argument
        return container_class("nats:2.12").with_command("-js")
    from testcontainers.core.container import DockerContainer

    return DockerContainer("nats:2.12").with_command("-js").with_exposed_ports(4222)


@pytest.fixture(scope="session")
def pg_server_url(docker_available: bool) -> Iterator[str]:
    """libpq URL ("postgresql://user:pw@host:port/db") of a superuser on the session's PostgreSQL."""
    url = os.environ.get("FLEETHUB_TEST_DATABASE_URL")
    if url:
        yield _with_database(url, urlsplit(url).path.lstrip("/") or "postgres")
        return
    if docker_available:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer
        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
        return
    # not under pytest's basetemp: every pytest that starts resets that tree to mode 0700, which
    # would lock out PostgreSQL's system user (the server runs as `fleethub-pg` when we are root)
    root = Path(tempfile.mkdtemp(prefix="fleethub-test-pg-"))
    root.chmod(0o711)
    try:
        with EmbeddedPostgres(root / "pg") as server:
            yield server.admin_url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test, as a SQLAlchemy asyncpg URL; dropped afterwards."""
    name = f"fh_test_{secrets.token_hex(6)}"
    _admin_sql(pg_server_url, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(pg_server_url, name, scheme="postgresql+asyncpg")
    finally:
        # FORCE: connections a failed test leaked must not keep the database alive
        _admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def nats_namespace(nats_server_url: str) -> Iterator[str]:
    """A token no other test uses; the app prefixes every stream, subject and bucket with it.

    On a server given by `FLEETHUB_TEST_NATS_URL` (one that outlives the session), the namespace's
    streams and buckets are deleted afterwards.
    """
    namespace = "t" + secrets.token_hex(5)
    yield namespace
    if os.environ.get("FLEETHUB_TEST_NATS_URL"):
        _in_own_loop(_drop_nats_namespace(nats_server_url, namespace))


async def _drop_nats_namespace(url: str, namespace: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    from fleethub.shared.bus import Names

    names = Names(namespace)
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for stream in (names.cmd_stream, names.evt_stream, f"KV_{names.routes_bucket}",
                       f"KV_{names.registry_bucket}"):
            try:
                await js.delete_stream(stream)
            except NotFoundError:  # the test never declared it
                pass
    finally:
        await nc.close()


@pytest.fixture
def nats_url(nats_server_url: str) -> str:
    """The session's NATS URL."""
    return nats_server_url


@pytest.fixture
def repo_root() -> Path:
    """The repository's top directory."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private Docker Engine (Debian's dockerd, host networking only) with the test image imported
    (`tests.support.dockerd`); started once, stopped and removed at the end of the session."""
    from tests.support.dockerd import running_dockerd

    with running_dockerd() as engine:
        yield engine


@pytest.fixture(scope="session")
def hub_api_url() -> Iterator[str]:
    """The URL of a stand-in hub API that a real jupyterhub-singleuser tested alone checks at start."""
    from tests.support.hub_api_stub import hub_api_stub

    with hub_api_stub() as url:
        yield url


@pytest.fixture
async def profiles_cluster(tmp_path: Path, nats_url: str, database_url: str,
                           nats_namespace: str) -> AsyncIterator[Cluster]:
    """A whole hub offering the spawn-form tests' two profiles (`tests.support.spawn_form.profiles_stack`)."""
    from tests.support.spawn_form import profiles_stack

    async with profiles_stack(tmp_path, nats_url, database_url, nats_namespace) as cluster:
        yield cluster
