"""Real Unix accounts for tests: created with `useradd`, removed with `userdel -r` whatever the outcome,
with names unique per test; `grant_traverse`, which lets such an account run this checkout's Python
(CI clones into a 0700 `mktemp -d`); a sudoers rule that exists for one test.

Needs root, `useradd`/`userdel` (Debian `passwd`) and, for the mediator, `sudo` and `visudo`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleethub.shared.procs import pid_alive

REPO = Path(__file__).resolve().parents[2]


def require_root_tools(*tools: str) -> None:
    """Fail (never skip) when the test cannot run here: not root, or a tool missing."""
    assert os.geteuid() == 0, "these tests create Unix accounts: run them as root (CI runs as root)"
    missing = [tool for tool in ("useradd", "userdel", *tools) if shutil.which(tool) is None]
    assert not missing, f"missing {missing}: apt-get install passwd sudo"


def unique_name(prefix: str = "fhu") -> str:
    """A fresh account name (valid for useradd, 13 characters)."""
    return f"{prefix}{secrets.token_hex(5)}"


def kill_account_processes(uid: int) -> None:
    """SIGKILL every process of `uid` (userdel refuses an account in use)."""
    for _ in range(50):
        left = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
                    left.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
        if not left:
            return
        time.sleep(0.05)


def remove_account(name: str) -> None:
    """Remove account `name`, its home and its processes (no error if it does not exist)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return
    kill_account_processes(pw.pw_uid)
    done = subprocess.run(["userdel", "-r", "-f", name], capture_output=True, text=True)
    if done.returncode not in (0, 12):  # 12: the home could not be removed (already gone)
        raise RuntimeError(f"userdel {name} exited {done.returncode}: {done.stderr}")


@contextmanager
def unix_user(prefix: str = "fhu", *, groups: Iterable[str] = ()) -> Iterator[pwd.struct_passwd]:
    """A new account with a home (mode 0700) and a login shell, removed on exit; `groups`: extra groups
    (created, and removed on exit)."""
    require_root_tools()
    name = unique_name(prefix)
    made_groups: list[str] = []
    try:
        for group in groups:
            subprocess.run(["groupadd", group], check=True, capture_output=True)
            made_groups.append(group)
        extra = ["--groups", ",".join(made_groups)] if made_groups else []
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", *extra, "--", name],
                       check=True, capture_output=True)
        pw = pwd.getpwnam(name)
        os.chmod(pw.pw_dir, 0o700)
        yield pw
    finally:
        remove_account(name)
        for group in made_groups:
            subprocess.run(["groupdel", group], capture_output=True)


GRANTS = Path("/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()) / "fleethub-test-grants.json"
"""Who holds which loosened mode, machine-wide: test sessions that run at once (two suites, two checkouts)
share ancestors such as /root, and the first to finish must not take a bit another one still needs."""


@contextmanager
def _grants() -> Iterator[dict[str, dict[str, Any]]]:
    """The registry of loosened modes (path -> {"mode": original, "holders": [pid, ...]}), under a lock."""
    with open(GRANTS.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            registry: dict[str, dict[str, Any]] = json.loads(GRANTS.read_text()) if GRANTS.exists() else {}
        except ValueError:
            registry = {}
        for key, entry in list(registry.items()):  # holders that died without releasing
            entry["holders"] = [pid for pid in entry["holders"] if pid_alive(pid)]
            if not entry["holders"]:  # nobody holds it any more: its mode is restored now
                del registry[key]
                with contextlib.suppress(FileNotFoundError):
                    Path(key).chmod(entry["mode"])
        yield registry
        GRANTS.write_text(json.dumps(registry))


def _loosen(path: Path, bits: int, registry: dict[str, dict[str, Any]], changed: dict[Path, int]) -> None:
    mode = stat.S_IMODE(path.lstat().st_mode)
    if path in changed:  # this grant holds it already (an ancestor of several of its paths): one hold, one release
        path.chmod(mode | bits)
        return
    entry = registry.get(str(path))
    if entry is None and mode & bits == bits:
        return
    if entry is None:
        entry = registry[str(path)] = {"mode": mode, "holders": []}
    entry["holders"].append(os.getpid())
    changed.setdefault(path, entry["mode"])
    path.chmod(mode | bits)


def _release(changed: dict[Path, int]) -> None:
    with _grants() as registry:
        for path in changed:
            entry = registry.get(str(path))
            if entry is None:
                continue
            if os.getpid() in entry["holders"]:
                entry["holders"].remove(os.getpid())
            if not entry["holders"]:
                del registry[str(path)]
                try:
                    path.chmod(entry["mode"])
                except FileNotFoundError:
                    pass


@contextmanager
def grant_traverse(paths: Iterable[Path], *, readable: Iterable[Path] = ()) -> Iterator[dict[Path, int]]:
    """Let any account reach `paths` and read the trees `readable`, for the duration; every mode changed is
    restored on exit (by the last holder, when test sessions run at once: `GRANTS`). Yields what was
    changed (path → its original mode).

    `paths`: o+x on every ancestor directory (and on the path itself when it is a directory) — a clone under
    a 0700 temporary directory, or an interpreter under /root, is otherwise out of a test account's reach.
    `readable`: o+r on the files and o+rx on the directories of those trees (a venv made under umask 077).
    """
    changed: dict[Path, int] = {}
    try:
        with _grants() as registry:
            for path in paths:
                path = Path(path).absolute()
                chain = [*reversed(path.parents), path] if path.is_dir() else list(reversed(path.parents))
                for directory in chain:
                    _loosen(directory, stat.S_IXOTH, registry, changed)
            for root in readable:
                if Path(root).is_file():
                    _loosen(Path(root), stat.S_IROTH, registry, changed)
                for here, _dirs, files in os.walk(root):
                    _loosen(Path(here), stat.S_IROTH | stat.S_IXOTH, registry, changed)
                    for name in files:
                        entry = Path(here) / name
                        if not entry.is_symlink():
                            _loosen(entry, stat.S_IROTH, registry, changed)
        yield changed
    finally:
        _release(changed)


@contextmanager
def venv_reachable(*extra: Path) -> Iterator[dict[Path, int]]:
    """`grant_traverse` for this interpreter, its venv and this checkout's `fleethub` package (an editable
    install), and the files `extra`: what an account needs to run `jupyterhub-singleuser`, the as-user
    helper or a test's server script from here."""
    venv = Path(sys.prefix)
    real = Path(os.path.realpath(sys.executable))
    reach = [venv, real, REPO / "fleethub", *extra]
    with grant_traverse(reach, readable=[venv, REPO / "fleethub", *extra]) as changed:
        yield changed


@contextmanager
def sudoers_rule(text: str) -> Iterator[Path]:
    """`text` as a file of /etc/sudoers.d (checked with visudo) for the duration."""
    require_root_tools("sudo", "visudo")
    path = Path("/etc/sudoers.d") / f"fleethub-test-{secrets.token_hex(4)}"
    tmp = path.with_name("." + path.name)  # sudo ignores names with a dot
    tmp.write_text(text)
    tmp.chmod(0o440)
    try:
        check = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True)
        assert check.returncode == 0, f"sudoers rule refused by visudo: {check.stdout}{check.stderr}\n{text}"
        os.replace(tmp, path)
        yield path
    finally:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def python_paths() -> list[Path]:
    """What an account must reach to run this interpreter and venv: the venv, the real binary, its
    standard library (for `traversable`)."""
    return [Path(sys.prefix), Path(os.path.realpath(sys.executable)), Path(sys.base_prefix) / "lib"]


@contextmanager
def traversable(*paths: Path) -> Iterator[dict[Path, int]]:
    """`grant_traverse(paths)`: o+x on `paths` and every directory above them, for the duration."""
    with grant_traverse(paths) as changed:
        yield changed
