"""Child-process care: becoming a subreaper, reaping orphans, checking and ending process groups.

On our machines PID 1 does not reap orphans, so any fleethub process that starts processes reaps
what it starts; `fleethub up` also becomes the subreaper of everything below it, so the servers of
a crashed spawner worker are re-parented to it (and adopted by another worker) instead of to PID 1.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux); returns whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid` from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def orphaned_children(keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Live processes re-parented to this process (a subreaper) that it did not start itself."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        st = _stat(int(entry))
        if st is not None and st[1] == me and st[0] != "Z":
            found.append(int(entry))
    return found


def end_processes(pids: list[int], grace: float = 5.0) -> None:
    """End (TERM, then KILL after `grace` s) the process groups of `pids`; reap those that are ours.

    Synchronous on purpose: it runs in shutdown paths, inside or outside an event loop.
    """
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        for pid in pending:
            _try_reap(pid)
        pending = [pid for pid in pending if pid_alive(pid)]
        if pending:
            time.sleep(0.05)
    for pid in pending:
        signal_group(pid, signal.SIGKILL)
    for pid in pending:
        for _ in range(100):
            _try_reap(pid)
            if not pid_alive(pid):
                break
            time.sleep(0.02)


def zombie_children(keep: set[int] | frozenset[int] = frozenset()) -> set[int]:
    """Zombie children of this process, but for `keep`."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in keep:
            st = _stat(int(entry))
            if st is not None and st[1] == me and st[0] == "Z":
                found.add(int(entry))
    return found


def reap_orphans(keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Reap zombie children of this process that nobody else waits for (pids not in `keep`)."""
    me = os.getpid()
    reaped: list[int] = []
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:
        return reaped
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in keep:
            continue
        st = _stat(pid)
        if st is None or st[1] != me or st[0] != "Z":
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
            reaped.append(pid)
        except ChildProcessError:
            pass
    return reaped


async def reap_forever(keep: set[int], interval: float = 1.0) -> None:
    """Reap orphaned zombie children until cancelled (pids in `keep` are waited for elsewhere)."""
    while True:
        reap_orphans(keep)
        await asyncio.sleep(interval)


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (or to `pid` alone if it leads none)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


async def end_group(pid: int, grace: float = 5.0, *, group: bool = True) -> None:
    """SIGTERM the group of `pid` (`pid` alone if not `group`), wait up to `grace` seconds, then SIGKILL it;
    reap it if it is ours."""
    send = signal_group if group else _signal_one
    send(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        _try_reap(pid)
        if not pid_alive(pid):
            return
        await asyncio.sleep(0.05)
    send(pid, signal.SIGKILL)
    for _ in range(100):
        _try_reap(pid)
        if not pid_alive(pid):
            return
        await asyncio.sleep(0.02)


async def end_child(pid: int, child: asyncio.subprocess.Process | None, grace: float = 5.0, *,
                    group: bool = True) -> None:
    """`end_group(pid, grace, group=group)`, then wait (up to 5 s) for `child`, the asyncio handle of `pid`
    when this process started it, so its transport is closed."""
    await end_group(pid, grace, group=group)
    if child is not None:
        try:
            await asyncio.wait_for(child.wait(), 5)
        except TimeoutError:
            pass


def _signal_one(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _try_reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
