"""What every idle-culler test checks: of two running servers, the idle one is culled and the one with
traffic through the proxy is kept."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.cluster import wait_for


async def start_servers(api: httpx.AsyncClient, users: tuple[str, ...]) -> None:
    """Create `users`, start their default servers and wait until each answers through the proxy."""
    assert (await api.post("/hub/api/users", json={"usernames": list(users)})).status_code == 201
    for user in users:
        assert (await api.post(f"/hub/api/users/{user}/server")).status_code in (201, 202)
    for user in users:
        await wait_for(lambda u=user: _ok(api, f"/user/{u}/x"), timeout=20, what=f"{user}'s server")


async def idle_culled_busy_kept(api: httpx.AsyncClient, idle: str, busy: str, logs: Callable[[], str]) -> None:
    """Keep `busy` in use through the proxy until `idle`'s server is culled, then a few more rounds;
    `busy`'s server must still be ready."""
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            await api.get(f"/user/{busy}/api/contents")
            await asyncio.sleep(0.3)

    async def culled() -> bool:
        return "" not in (await api.get(f"/hub/api/users/{idle}")).json()["servers"]

    task = asyncio.create_task(traffic())
    try:
        await wait_for(culled, timeout=40, interval=0.2, what=f"the idle server culled\n{logs()}")
        await asyncio.sleep(3)  # several more culling rounds
        model = (await api.get(f"/hub/api/users/{busy}")).json()
        assert model["servers"].get("", {}).get("ready"), model
    finally:
        stop.set()
        await task


async def _ok(api: httpx.AsyncClient, path: str) -> bool:
    return (await api.get(path)).status_code == 200


async def real_culler_culls_idle(api: httpx.AsyncClient, api_url: str, env: dict[str, str], log_path: Path) -> None:
    """Run the real jupyterhub-idle-culler against `api_url` until it culled `idle` and kept `busy` (both
    started here); its log is checked for the same."""
    await start_servers(api, ("idle", "busy"))
    log = open(log_path, "wb")  # closed below
    culler = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub_idle_culler", f"--url={api_url}", "--timeout=4",
         "--cull-every=1", "--concurrency=2"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        await idle_culled_busy_kept(api, "idle", "busy", lambda: log_path.read_text()[-3000:])
    finally:
        culler.terminate()
        culler.wait(10)
        log.close()
    text = log_path.read_text()
    assert "culling server idle" in text.lower(), text[-3000:]
    assert "Culling server busy" not in text
