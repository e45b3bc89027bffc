"""Dependencies a test may take away: a PostgreSQL and a nats-server of the test's own on fixed ports (so
that a restart comes back where every service looks), every answer of the hub counted while they are away,
and the user-server processes that exist (to find orphans)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fleethub.shared.embedded import EmbeddedNats, EmbeddedPostgres
from fleethub.shared.net import free_port


@contextlib.contextmanager
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test only, on a fixed free port (a restart comes back on it), removed after.

    Not under pytest's basetemp, for the reason `tests/conftest.py` gives (PostgreSQL's system user must
    reach it when we are root).
    """
    root = Path(tempfile.mkdtemp(prefix="fleethub-outage-pg-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(root / "pg", port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def own_nats(data_dir: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream of this test only, on a fixed free port, storing under `data_dir`."""
    server = EmbeddedNats(data_dir, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def asyncpg_url(server: EmbeddedPostgres) -> str:
    """The SQLAlchemy URL of `server`'s fleethub database."""
    return server.url.replace("postgresql://", "postgresql+asyncpg://", 1)


@dataclass(frozen=True)
class Answer:
    """One answer the hub gave: what was asked, the status, `Retry-After`, the content type and the body."""

    what: str
    status: int
    retry_after: str | None
    content_type: str
    body: str
    at: float


@dataclass
class Recorder:
    """Every answer of a set of request loops, run until `stop` is set."""

    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, what: str, r: httpx.Response) -> httpx.Response:
        self.answers.append(Answer(what, r.status_code, r.headers.get("retry-after"),
                                   r.headers.get("content-type", ""), r.text[:4000], time.monotonic()))
        return r

    async def loop(self, what: str, request: Callable[[], Awaitable[httpx.Response]], pause: float = 0.05) -> None:
        """Send `request` again and again until `stop`, noting every answer (a transport error is noted too:
        the hub must answer, not drop the connection)."""
        while not self.stop.is_set():
            try:
                self.note(what, await request())
            except httpx.HTTPError as exc:
                self.errors.append(f"{what}: {exc!r}")
            await asyncio.sleep(pause)

    def statuses(self) -> dict[str, dict[int, int]]:
        """Per request kind, how many answers of each status."""
        out: dict[str, dict[int, int]] = {}
        for a in self.answers:
            out.setdefault(a.what, {}).setdefault(a.status, 0)
            out[a.what][a.status] += 1
        return out

    def server_errors(self, allowed: frozenset[int] = frozenset({503})) -> list[Answer]:
        """The 5xx answers other than `allowed`."""
        return [a for a in self.answers if a.status >= 500 and a.status not in allowed]

    def unclear_503s(self, naming: str) -> list[Answer]:
        """503s without `Retry-After`, or whose message does not contain `naming`, or with a traceback."""
        return [a for a in self.answers if a.status == 503 and (
            not a.retry_after or naming not in a.body.lower() or "traceback" in a.body.lower())]


def user_server_pids() -> dict[str, list[int]]:
    """The live user-server processes of this machine that a test of ours started, by service prefix
    (`/user/<name>/`): those whose environment holds `JUPYTERHUB_SERVICE_PREFIX`."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        for var in environ.split(b"\0"):
            if var.startswith(b"JUPYTERHUB_SERVICE_PREFIX="):
                found.setdefault(var.split(b"=", 1)[1].decode(errors="replace"), []).append(int(entry.name))
    return found
