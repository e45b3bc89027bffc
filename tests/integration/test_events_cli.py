"""`fleethub events` as a real process against an auth-enabled NATS (the `fleethub up` configuration), reading as
the read-only `events` account: everything stored, `--type`, `--since`, `--follow` until Ctrl-C, and clear
errors; the account's refusals (commands, the route table, deleting the stream) are in test_bus_permissions."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleethub.shared.bus import Bus
from fleethub.shared.bus.natsconfig import seed_file
from fleethub.shared.events import Envelope, ServerReady, ServerStopped, SpawnServer, UserCreated
from fleethub.shared.net import free_port
from tests.support.cluster import env_without_fleethub, wait_for
from tests.support.securenats import SecureNats, secure_nats

pytestmark = pytest.mark.integration
NS = "evcli"


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[SecureNats]:
    with secure_nats(tmp_path / "securenats", NS) as server:
        yield server


@pytest.fixture
async def spawner(secure: SecureNats) -> AsyncIterator[Bus]:
    """The api declares the streams; the spawner publishes server events (each as its own identity)."""
    api, spawner = secure.bus("api"), secure.bus("spawner")
    try:
        await api.connect()
        await api.ensure_topology()
        await api.publish(UserCreated(name="ann"))
        await api.publish(SpawnServer(user="ann", spawn_id="s1"))  # a command: never printed
        await spawner.connect()
        await spawner.ensure_topology(timeout=10)
        yield spawner
    finally:
        await api.close()
        await spawner.close()


def _run(secure: SecureNats | str, *args: str) -> subprocess.CompletedProcess[str]:
    """`fleethub events ARGS` on `secure` (or on the NATS at a URL)."""
    url = secure if isinstance(secure, str) else secure.url
    return subprocess.run([sys.executable, "-m", "fleethub", "events", *args], env=_env(url),
                          capture_output=True, text=True, timeout=60)


def _env(url: str) -> dict[str, str]:
    return {**env_without_fleethub(), "FLEETHUB_NATS_URL": url, "FLEETHUB_NATS_NAMESPACE": NS}


def _nkey(secure: SecureNats) -> list[str]:
    return ["--nkey-file", str(seed_file(secure.keys, "events"))]


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def _ready(user: str) -> ServerReady:
    return ServerReady(user=user, spawn_id=f"{user}-1", url=f"/user/{user}/", target="http://127.0.0.1:9")


async def test_events_print_as_json_lines_filtered_by_type_and_time(secure: SecureNats, spawner: Bus) -> None:
    await spawner.publish(_ready("ann"))
    middle = datetime.now(UTC)
    sent = [await spawner.publish(m) for m in (_ready("bob"), ServerStopped(user="ann", spawn_id="ann-1"))]

    every = _run(secure, *_nkey(secure))
    assert every.returncode == 0, every.stderr
    assert [e["type"] for e in _lines(every.stdout)] == ["user.created", "server.ready", "server.ready",
                                                         "server.stopped"]
    first = _lines(every.stdout)[0]
    assert set(first) == set(Envelope.model_fields) and first["data"]["name"] == "ann"  # the documented envelope
    assert every.stderr == ""

    servers = _run(secure, *_nkey(secure), "--type", "server.*", "--type", "user.deleted")
    assert [e["type"] for e in _lines(servers.stdout)] == ["server.ready", "server.ready", "server.stopped"]
    stops = _run(secure, *_nkey(secure), "--type", "server.stopped")
    assert [e["data"]["user"] for e in _lines(stops.stdout)] == ["ann"]

    since = _run(secure, *_nkey(secure), "--since", middle.isoformat())
    assert [e["id"] for e in _lines(since.stdout)] == [env.id for env in sent]
    recent = _run(secure, *_nkey(secure), "--since", "1h")
    assert len(_lines(recent.stdout)) == 4
    future = _run(secure, *_nkey(secure), "--since", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and future.stdout == ""
    assert secure.violations() == [], secure.violations()


async def test_follow_prints_new_events_until_ctrl_c(secure: SecureNats, spawner: Bus) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fleethub", "events", "--follow", *_nkey(secure)],
                            env=_env(secure.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        first = json.loads(await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30))
        assert first["type"] == "user.created"
        env = await spawner.publish(_ready("cy"))
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
        assert json.loads(line)["id"] == env.id
        assert proc.poll() is None  # still following
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_bad_arguments_and_an_unreachable_nats_are_clear_errors(secure: SecureNats) -> None:
    for args, message in ((("--since", "last tuesday"), "--since 'last tuesday': not an ISO time"),
                          (("--type", "server.redy"), "--type: no event type matches 'server.redy'"),
                          (("--nkey-file", "/nonexistent/ev.nk"), "--nkey-file /nonexistent/ev.nk: no such file")):
        out = _run(secure, *args)
        assert out.returncode == 2 and message in out.stderr and out.stdout == "", out.stderr
    dead = _run(f"nats://127.0.0.1:{free_port()}", "--timeout", "1")
    assert dead.returncode == 2 and "cannot reach NATS at nats://127.0.0.1:" in dead.stderr, dead.stderr
    assert "Traceback" not in dead.stderr
    # a server that refuses the credentials (none given, on an auth-enabled NATS) says so
    refused = _run(secure, "--timeout", "3")
    assert refused.returncode == 2 and "refused" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


async def test_the_documented_consumer_example_reads_and_acks_as_the_events_account(
        secure: SecureNats, spawner: Bus, repo_root: Path) -> None:
    example = repo_root / "examples" / "events_consumer.py"
    assert example.read_text().strip() in (repo_root / "docs" / "events.md").read_text()
    env = {**env_without_fleethub(), "NATS_URL": secure.url, "FLEETHUB_NAMESPACE": NS,
           "EVENTS_SEED": str(seed_file(secure.keys, "events"))}
    proc = subprocess.Popen([sys.executable, str(example)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        first = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
        assert first.split()[1] == "user.created", first
        env_ready = await spawner.publish(_ready("dee"))
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
        assert line.split()[:2] == [env_ready.id, "server.ready"], line

        reader = secure.bus("events")  # the account may read its own consumer's state
        await reader.connect()
        try:
            async def all_acked() -> bool:
                info = await reader.js.consumer_info(reader.names.evt_stream, "my-audit")
                return info.num_ack_pending == 0 and info.num_pending == 0

            await wait_for(all_acked, timeout=10, what="the example's acks")
        finally:
            await reader.close()
    finally:
        proc.kill()
        proc.wait()
    assert secure.violations() == [], secure.violations()
