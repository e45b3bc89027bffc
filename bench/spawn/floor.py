"""The exec floor: the same user-server command started N times at once, without a hub, until each answers.

Also the clean-up of every process the benchmark caused to be started (floor servers and the hubs' user
servers alike): each gets `MARK_VAR` in its environment, and `kill_marked` ends whatever still carries it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fleethub.shared.net import free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "support" / "fake_singleuser.py"
COMMAND = [sys.executable, str(FAKE)]  # the user server of both hubs and of the floor
MARK_VAR = "BENCH_SPAWN_MARK"
POLL = 0.01  # seconds between tries of one server: finer than either hub's readiness check


@dataclass
class Floor:
    n: int
    all_s: float  # until the last of the N answered
    median_s: float  # the median server's own time to answer
    retries: int  # servers started again because their port was taken


async def _status(port: int, path: str) -> int | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()


async def exec_floor(n: int, mark: str, timeout: float = 120.0) -> Floor:
    """Start `COMMAND` n times at once (the environment contract of both hubs: service URL and prefix) and
    poll each every 10 ms until it answers 200; the processes are ended afterwards."""
    procs: list[asyncio.subprocess.Process] = []
    retries = 0
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETHUB_", "JUPYTERHUB_"))}
    t0 = time.perf_counter()

    async def one(i: int) -> float:
        nonlocal retries
        prefix = f"/user/floor{i}/"
        while True:
            port = free_port()
            env = {**base, MARK_VAR: mark, "JUPYTERHUB_USER": f"floor{i}", "JUPYTERHUB_SERVER_NAME": "",
                   "JUPYTERHUB_SERVICE_PREFIX": prefix, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}"}
            proc = await asyncio.create_subprocess_exec(*COMMAND, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            procs.append(proc)
            while await _status(port, f"{prefix}api") != 200:
                if proc.returncode is not None:
                    break
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"floor server {i} did not answer within {timeout:.0f} s")
                await asyncio.sleep(POLL)
            else:
                return time.perf_counter() - t0
            # its port was taken meanwhile (free_port only found it free): once more, on another one
            retries += 1
            if retries > n:
                raise RuntimeError(f"floor servers keep exiting (status {proc.returncode})")

    try:
        times = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        await asyncio.gather(*(proc.wait() for proc in procs))
    times = sorted(times)
    return Floor(n, times[-1], times[len(times) // 2], retries)


def marked(mark: str) -> list[int]:
    """Pids of processes whose environment carries `MARK_VAR=mark`."""
    needle = f"{MARK_VAR}={mark}".encode()
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if needle in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def kill_marked(mark: str) -> int:
    """SIGKILL every process left carrying the mark; how many there were."""
    pids = marked(mark)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)
