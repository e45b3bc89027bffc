"""Real Unix accounts for tests (`useradd` / `userdel -r`), and the directory modes that let them run this
venv's Python.

A test's user runs the venv's `jupyterhub-singleuser` (a Slurm job, a process of its own account), so every
directory above the venv and above the interpreter it links to must be searchable by others. CI runs in a
clone under a 0700 temp dir and our interpreter may live under /root: `traversable` adds o+x where it is
missing and takes it away again afterwards (only the bit it added, so a mode changed meanwhile by someone
else keeps their change). Another process doing the same at the same time (two test sessions on one
machine) can take the bit away under us: the machine's test sessions are meant to run one at a time.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL = "apt-get install passwd sudo (useradd, userdel, sudo)"


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


@contextmanager
def unix_user(prefix: str = "fhu") -> Iterator[pwd.struct_passwd]:
    """A new Unix account (a fresh name, its own group, a home directory), removed with its home and any
    process left of it afterwards.

    Raises:
        RuntimeError: we are not root, or useradd is missing (the message says what to install).
    """
    if os.geteuid() != 0:
        raise RuntimeError("tests with Unix accounts run as root (useradd)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        raise RuntimeError(f"tests with Unix accounts need useradd and userdel: {INSTALL}")
    name = f"{prefix}{secrets.token_hex(4)}"
    _run("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", "--", name)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30)
        _run("userdel", "--remove", "--", name)


def _ancestors(path: Path) -> list[Path]:
    out = []
    for parent in [path, *path.parents]:
        if parent != Path("/"):
            out.append(parent)
    return out


_ADDED: dict[Path, int] = {}  # directories whose o+x this process added → how many holders need it


@contextmanager
def traversable(*paths: Path) -> Iterator[list[Path]]:
    """Make `paths` and every directory above them searchable by others (o+x) for the duration; yields the
    directories changed. The bit is taken away again (only the bit that was added) when the last holder in
    this process is done: overlapping users (a session fixture and a test's) never take it from each other.
    """
    held: list[Path] = []
    try:
        for path in paths:
            for directory in _ancestors(path):
                if not directory.is_dir() or directory in held:
                    continue
                if directory not in _ADDED:
                    mode = directory.stat().st_mode
                    if mode & stat.S_IXOTH:
                        continue
                    directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                    _ADDED[directory] = 0
                _ADDED[directory] += 1
                held.append(directory)
        yield held
    finally:
        for directory in reversed(held):
            _ADDED[directory] -= 1
            if _ADDED[directory] > 0:
                continue
            del _ADDED[directory]
            try:
                directory.chmod(stat.S_IMODE(directory.stat().st_mode) & ~stat.S_IXOTH)
            except FileNotFoundError:
                pass


def python_paths() -> list[Path]:
    """The directories a user must traverse to run this interpreter and venv (its bin, its real binary,
    its standard library)."""
    venv_bin = Path(sys.executable).parent
    real = Path(os.path.realpath(sys.executable)).parent
    return [venv_bin, real, Path(sys.base_prefix) / "lib", Path(sys.prefix)]
