"""Processes the benchmark starts, and what /proc says about their trees (CPU, RSS, fds, sockets).

Every process is started in its own session with its output in a log file; `Proc.stop` ends it
with SIGTERM, then SIGKILL for whatever of its tree is left, and reaps it. A failure names the
process and shows the end of its log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fleethub.shared.embedded import log_tail  # run.py puts the repository on sys.path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


class Proc:
    """One started process with its log."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.started = time.perf_counter()
            self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def failure(self, what: str) -> BenchError:
        state = "not started" if self.popen is None else (
            f"exited with status {self.popen.returncode}" if self.popen.poll() is not None else "still running")
        return BenchError(f"{self.name} {what} ({state}); end of {self.log}:\n{log_tail(self.log, 3000) or '(no log)'}")

    def check(self) -> None:
        if not self.alive():
            raise self.failure("is not running")

    def tree(self) -> list[int]:
        return tree_pids(self.pid) if self.alive() else []

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the rest of the tree; always reaps."""
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            family = tree_pids(p.pid)
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.name} did not stop within {timeout:.0f} s of SIGTERM: killing it", flush=True)
                p.kill()
                p.wait(10)
            # anything of its tree still there (a worker its supervisor left behind) goes too
            deadline = time.monotonic() + 5
            left = [pid for pid in family if pid != p.pid and _alive(pid)]
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = [pid for pid in left if _alive(pid)]
            for pid in left:
                print(f"  ! {self.name}: process {pid} of its tree outlived it: killing it", flush=True)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            p.wait()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def _alive(pid: int) -> bool:
    f = _stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def tree_pids(root: int) -> list[int]:
    """`root` and every live descendant, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if f is None or f[0] in ("Z", "X"):
            continue
        children.setdefault(int(f[1]), []).append(int(entry.name))
    out = [root] if _alive(root) else []
    todo = list(out)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """Sum of utime + stime of `pids`, in seconds."""
    ticks = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            ticks += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def socket_inodes(pids: Iterable[int]) -> tuple[int, set[int]]:
    """(number of open fds, inodes of the sockets among them) of `pids`."""
    fds = 0
    inodes: set[int] = set()
    for pid in pids:
        try:
            entries = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in entries:
            fds += 1
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return fds, inodes


@dataclass
class TcpSocket:
    local_port: int
    remote_port: int
    state: str
    inode: int


def tcp_sockets() -> list[TcpSocket]:
    """The IPv4 and IPv6 TCP sockets of this network namespace (/proc/net/tcp{,6})."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            out.append(TcpSocket(int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                                 TCP_STATES.get(f[3], f[3]), int(f[9])))
    return out


@dataclass
class TreeSample:
    """What one process tree holds at one moment."""

    pids: int
    rss: int  # bytes, summed over the tree
    pss: int  # bytes, summed over the tree (shared pages split between sharers)
    fds: int
    sockets: int
    states: dict[str, int]  # TCP sockets of the tree by state
    to_port: dict[str, int]  # TCP sockets of the tree to `port` by state

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def sample_tree(root: int, port: int | None = None) -> TreeSample:
    pids = tree_pids(root)
    fds, inodes = socket_inodes(pids)
    states: dict[str, int] = {}
    to_port: dict[str, int] = {}
    for s in tcp_sockets():
        if s.inode in inodes:
            states[s.state] = states.get(s.state, 0) + 1
            if port is not None and s.remote_port == port:
                to_port[s.state] = to_port.get(s.state, 0) + 1
    return TreeSample(len(pids), sum(rss_bytes(p) for p in pids), sum(pss_bytes(p) for p in pids), fds,
                      len(inodes), states, to_port)


def established_to(port: int) -> int:
    """ESTABLISHED TCP connections on this machine whose remote end is `port` (any process)."""
    return sum(1 for s in tcp_sockets() if s.remote_port == port and s.state == "ESTABLISHED")


async def until_sigterm(run: Callable[[], Awaitable[None]], cleanup: Callable[[], None]) -> None:
    """Await `run()`: a first SIGTERM cancels it (the caller then cleans up), a second one cleans up and
    exits at once."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    terms = 0

    def on_term() -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            task.cancel()
        else:
            cleanup()
            os._exit(143)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    await run()
