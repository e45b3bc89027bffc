"""Files and directories only their owner may read: mode 0600 and 0700 whatever the umask, and the
walk that tightens a whole data dir (`tighten`).

Everything under the data dir (`.fleethub`) holds a secret or state: the runtime file with the database
URL, the first admin's password, the embedded PostgreSQL's password, cluster and log, NATS's JetStream
store and log, the user servers' logs. One exception: run as root, the embedded PostgreSQL runs as its
own system user, who must pass through the data dir to reach its cluster, so the data dir itself may be
0710 with that user's group (`traverse_gid`), never readable by anyone else.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 whatever the umask or the old file's mode.

    Written to a temporary file beside it and renamed over it: a reader (or a crash) never sees half a
    file, and a symlink planted at `path` is replaced, not followed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """A descriptor of `path` opened with `flags`, the file made 0600 if it was looser (a log, a lock)."""
    fd = os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_dir(path: Path) -> Path:
    """`path` as a directory of mode 0700 (created, or tightened if it grants anything to others); its
    missing parents are created too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(DIR_MODE)
    return path


@dataclass(frozen=True)
class Loosened:
    """An entry whose mode granted group or others access, and the mode it had."""

    path: Path
    mode: int


def _wanted(mode: int, is_root: bool, gid: int, traverse_gid: int | None) -> int:
    keep = 0o700
    if is_root and traverse_gid is not None and gid == traverse_gid:
        keep |= 0o010  # the embedded PostgreSQL's system user passes through (see the module docstring)
    return stat.S_IMODE(mode) & keep


def loose_entries(root: Path, traverse_gid: int | None = None) -> list[Loosened]:
    """Every file, directory or socket under `root` (and `root` itself) whose mode grants group or others
    any access (beyond the traverse exception); symlinks are not followed."""
    found = []
    for here, dirs, files in os.walk(root):
        for name in [None, *dirs, *files] if here == str(root) else [*dirs, *files]:
            path = Path(here) / name if name is not None else root
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue  # gone meanwhile (a server's temporary file)
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_IMODE(st.st_mode) != _wanted(st.st_mode, path == root, st.st_gid, traverse_gid):
                found.append(Loosened(path, stat.S_IMODE(st.st_mode)))
    return found


def tighten(root: Path, traverse_gid: int | None = None) -> list[Loosened]:
    """Take from every entry under `root` what its mode grants group and others (see `loose_entries`);
    returns what was loosened before."""
    found = loose_entries(root, traverse_gid)
    for entry in found:
        try:
            st = entry.path.lstat()
            entry.path.chmod(_wanted(st.st_mode, entry.path == root, st.st_gid, traverse_gid))
        except FileNotFoundError:
            continue
    return found
