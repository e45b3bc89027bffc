"""What /proc shows of a process, read by a test from outside (never through the backend under test)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from fleethub.services.spawner.marks import MARKER_VAR
from fleethub.shared.procs import pid_alive


def status_ids(pid: int) -> dict[str, list[int]]:
    """`Uid`, `Gid` (real, effective, saved, filesystem) and `Groups` of `pid`."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
    return out


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` was started with."""
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in items if b"=" in item)


def marked(marker: str) -> list[int]:
    """Every live process carrying `marker` in its environment, whoever runs it."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") and pid_alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def processes_of(user: str) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes of Unix account `user`."""
    uid = pwd.getpwnam(user).pw_uid
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline:  # a zombie has none
            out.append((int(entry), cmdline))
    return out
