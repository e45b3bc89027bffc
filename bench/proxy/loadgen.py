"""Running wrk and reading its report."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from dataclasses import dataclass

from proctree import BenchError

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


RUNNING: set[int] = set()  # wrk processes not known to be reaped


def stop_all() -> None:
    """Kill and reap every wrk still running (after an interrupted run)."""
    for pid in list(RUNNING):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        RUNNING.discard(pid)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: run `apt-get install -y wrk` (Debian/Ubuntu), then try again")
    return path


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors (connect, read, write, timeout)
    non2xx: int
    cpu_s: float = 0.0  # CPU seconds the proxy's process tree used meanwhile

    @property
    def cpu_us_per_req(self) -> float | None:
        return self.cpu_s / self.requests * 1e6 if self.requests else None


def parse_wrk(out: str) -> WrkResult:
    def need(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out)
        if m is None:
            raise BenchError(f"cannot read wrk's report (no {pattern!r}):\n{out[-1500:]}")
        return m

    dist = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M)}
    if 50 not in dist or 99 not in dist:
        raise BenchError(f"wrk printed no latency distribution:\n{out[-1500:]}")
    total = need(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)")
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m is not None:
        errors = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(need(r"Requests/sec:\s+([0-9.]+)").group(1)),
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1000,
        p50_ms=dist[50],
        p99_ms=dist[99],
        errors=errors,
        non2xx=int(m.group(1)) if m else 0,
    )


async def run_wrk(url: str, threads: int, conns: int, duration: float) -> WrkResult:
    """`wrk -t -c -d --latency URL`, with a deadline of twice the duration plus 30 s."""
    args = [wrk_binary(), f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "10s", url]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    RUNNING.add(proc.pid)
    try:
        async with asyncio.timeout(duration * 2 + 30):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"wrk against {url} did not finish in time") from None
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    RUNNING.discard(proc.pid)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk against {url} failed (status {proc.returncode}):\n{text[-1500:]}")
    return parse_wrk(text)
