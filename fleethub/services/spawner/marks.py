"""Finding a user server's processes by their marker: the environment variable `FH_SERVER_ID` set at exec.

Standard library only (and `fleethub.shared.procs`), so that the as-user helper (`asuser`), run through a
mediator for every poll of an adopted server, starts in a few milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleethub.shared.procs import pid_alive

MARKER_VAR = "FH_SERVER_ID"
"""The environment variable that marks a user server's process with its identity."""


def carries(pid: int, marker: str) -> bool | None:
    """Whether process `pid` carries `marker` (None: its environment cannot be read — another user's
    process, seen by a worker that is not root)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return None
    return f"{MARKER_VAR}={marker}".encode() in environ.split(b"\0")


def owner(pid: int) -> int | None:
    """The uid of process `pid` if its real, effective, saved and filesystem uids are all that one;
    None if they differ (a setuid program midway) or the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                uids = {int(u) for u in line.split()[1:]}
                return uids.pop() if len(uids) == 1 else None
    except (OSError, ValueError):
        return None
    return None


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, world-readable): a pid with the same start time is the
    same process, not a reused pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[19])


def marked_processes(marker: str, *, uid: int | None = None, leaders: bool = True) -> list[int]:
    """The live processes on this machine that carry `marker` (and belong wholly to `uid`, if given).

    `leaders`: only session leaders — the server itself, not what it started in its session (kernels
    that start sessions of their own are leaders too, as with the local backend).
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if leaders:
            try:
                if os.getsid(pid) != pid:
                    continue
            except OSError:
                continue
        if uid is not None and owner(pid) != uid:
            continue
        if carries(pid, marker) and pid_alive(pid):
            found.append(pid)
    return found
