"""Embedded NATS and PostgreSQL: start, serve, keep their data across restarts, stop without leftovers."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fleethub.shared.embedded import PASSWORD_FILE, EmbeddedError, EmbeddedNats, EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory the PostgreSQL system user can reach (pytest's basetemp may be reset to 0700)."""
    root = Path(tempfile.mkdtemp(prefix="fleethub-test-embedded-"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _assert_gone(proc: subprocess.Popen[bytes] | None) -> None:
    assert proc is not None
    assert proc.returncode is not None  # waited for: no zombie
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    assert _children(proc.pid) == []


async def _publish(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="EMBEDDED", subjects=["embedded.>"])
        ack = await js.publish("embedded.hello", b"kept")
        assert ack.seq == 1
        assert (await js.get_msg("EMBEDDED", 1)).data == b"kept"
    finally:
        await nc.close()


async def _read_back(url: str) -> bytes | None:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().get_msg("EMBEDDED", 1)).data
    finally:
        await nc.close()


def test_nats_keeps_streams_across_restarts(scratch: Path) -> None:
    first = EmbeddedNats(scratch / "nats")
    started = time.monotonic()
    with first:
        assert time.monotonic() - started < 5
        assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", first.url)
        first.start()  # already running: nothing happens
        asyncio.run(_publish(first.url))
    _assert_gone(first.proc)
    first.stop()  # twice is harmless

    with EmbeddedNats(scratch / "nats") as second:
        assert asyncio.run(_read_back(second.url)) == b"kept"
    _assert_gone(second.proc)
    assert (scratch / "nats" / "nats.log").stat().st_size > 0


async def _write_row(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('row')")
    finally:
        await conn.close()


async def _read_row(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT v FROM kept")
    finally:
        await conn.close()


def test_postgres_keeps_rows_across_restarts(scratch: Path) -> None:
    data_dir = scratch / "pg"
    first = EmbeddedPostgres(data_dir)
    with first:
        assert re.fullmatch(r"postgresql://fleethub:[\w-]+@127\.0\.0\.1:\d+/fleethub", first.url)
        assert first.admin_url == first.url.rsplit("/", 1)[0] + "/postgres"
        asyncio.run(_write_row(first.url))
    _assert_gone(first.proc)
    assert (data_dir / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600

    second = EmbeddedPostgres(data_dir)
    started = time.monotonic()
    with second:
        assert time.monotonic() - started < 10
        assert second.url.split("@")[0] == first.url.split("@")[0]  # same password
        assert asyncio.run(_read_row(second.url)) == "row"
    _assert_gone(second.proc)


def test_postgres_refuses_a_data_dir_in_use(scratch: Path) -> None:
    with EmbeddedPostgres(scratch / "pg") as running:
        intruder = EmbeddedPostgres(scratch / "pg")
        with pytest.raises(EmbeddedError, match="already runs"):
            intruder.start()
        assert running.proc is not None and running.proc.poll() is None
    _assert_gone(running.proc)


async def test_fixtures_give_a_database_and_a_namespace(
    database_url: str, nats_url: str, nats_namespace: str
) -> None:
    assert re.fullmatch(r"t[0-9a-f]{10}", nats_namespace)
    assert re.fullmatch(r"postgresql\+asyncpg://[^/]+/fh_test_[0-9a-f]+", database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE scratch (id int PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO scratch VALUES (1)"))
            assert (await conn.execute(text("SELECT count(*) FROM scratch"))).scalar() == 1
    finally:
        await engine.dispose()

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        stream = f"{nats_namespace.upper()}_CHECK"
        await js.add_stream(name=stream, subjects=[f"{nats_namespace}.check"])
        await js.publish(f"{nats_namespace}.check", b"x")
        assert (await js.stream_info(stream)).state.messages == 1
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_database_url_is_fresh_per_test(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'scratch'"))).scalar()
            assert tables == 0
    finally:
        await engine.dispose()
