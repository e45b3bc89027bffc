"""auth and api as real processes (`python -m fleethub run …`): they register, serve, and leave cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleethub.shared.bus import Bus
from fleethub.shared.events import RegistryEntry
from fleethub.shared.settings import ServiceSettings, child_env
from tests.support.cluster import migrated, wait_for

pytestmark = pytest.mark.integration


async def _registered(bus: Bus) -> dict[str, RegistryEntry]:
    return {entry.service: entry for entry in (await bus.registry.snapshot()).values()}


async def test_services_register_serve_and_stop(settings: ServiceSettings, tmp_path: Path) -> None:
    await migrated(settings.require_database_url())
    logs = {name: tmp_path / f"{name}.log" for name in ("auth", "api")}
    procs = {name: _start(name, path, settings) for name, path in logs.items()}
    bus = Bus(settings.nats_url, settings.nats_namespace, "test")
    await bus.connect()
    await bus.ensure_topology()
    try:
        entries = await wait_for(lambda: _both(bus), timeout=30, what="auth and api in the registry")
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{entries['api'].url}/hub/api/")
            assert r.status_code == 200 and r.json() == {"version": "5.4.0"}
            assert r.headers["x-jupyterhub-version"] == "5.4.0"
            r = await client.get(f"{entries['auth'].url}/hub/login")
            assert r.status_code == 200 and 'name="_xsrf"' in r.text
            assert (await client.get(f"{entries['auth'].url}/hub/health")).status_code == 200
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM, not a crash
            assert proc.wait(15) in (0, -signal.SIGTERM), logs[name].read_text()
            assert "Application shutdown complete" in logs[name].read_text()
        assert await _registered(bus) == {}  # each removed its own entry on the way out
        for path in logs.values():
            assert "Traceback" not in path.read_text(), path.read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await bus.close()


def _start(name: str, log_path: Path, settings: ServiceSettings) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "fleethub", "run", name], env=child_env(settings),
                                stdout=log, stderr=subprocess.STDOUT)


async def _both(bus: Bus) -> dict[str, RegistryEntry] | None:
    found = await _registered(bus)
    return found if {"auth", "api"} <= found.keys() else None
