"""Real PAM for tests: a service file of our own in /etc/pam.d, Unix accounts with passwords (`chpasswd`) and
Unix groups, each removed on exit whatever the outcome; `threads_in_pam`, to see a PAM call in progress.

Never the `su` service (pam_rootok accepts any password for root). Needs root and Debian's `passwd`
(useradd, usermod, chpasswd, chage, groupadd) and libpam-modules (pam_unix, pam_exec).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pamela

from tests.support.unix_users import remove_account, require_root_tools, unix_user

PAM_DIR = Path("/etc/pam.d")
FAST = "pam_unix without the failure delay"
FAST_STACK = """\
auth     required pam_unix.so nodelay
account  required pam_unix.so
session  required pam_unix.so
"""


@contextmanager
def pam_service(stack: str = FAST_STACK, why: str = FAST) -> Iterator[str]:
    """A PAM service named `fleethub-test-<random>` whose file holds `stack`; yields its name."""
    require_root_tools()
    name = f"fleethub-test-{secrets.token_hex(4)}"
    path = PAM_DIR / name
    tmp = PAM_DIR / f".{name}.tmp"  # written whole, then renamed: PAM never reads half a file
    try:
        tmp.write_text(f"# {name}: a fleethub test service ({why}), removed when its test ends\n{stack}")
        tmp.chmod(0o644)
        os.replace(tmp, path)
        yield name
    finally:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}: {done.stderr}"


def set_password(name: str, password: str) -> None:
    """Give account `name` this password (`chpasswd`, through stdin: never on a command line)."""
    _run("chpasswd", stdin=f"{name}:{password}\n")


@contextmanager
def unix_group() -> Iterator[str]:
    """A new Unix group (unique name), removed on exit; yields its name."""
    require_root_tools("groupadd", "groupdel")
    name = f"fhg{secrets.token_hex(5)}"
    _run("groupadd", "--", name)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", "--", name], capture_output=True)


@contextmanager
def pam_user(password: str, *groups: str) -> Iterator[str]:
    """A new account with `password`, also a member of `groups` (which must exist), removed on exit; yields
    its name (lowercase, so a valid hub name as it is)."""
    require_root_tools("chpasswd", "usermod")
    with unix_user("fhp") as entry:
        set_password(entry.pw_name, password)
        if groups:
            _run("usermod", "--append", "--groups", ",".join(groups), "--", entry.pw_name)
        yield entry.pw_name


@contextmanager
def badly_named_user(name: str, password: str) -> Iterator[str]:
    """An account named `name` although useradd's rules refuse it (`--badname`: upper case), with `password`,
    removed on exit."""
    require_root_tools("chpasswd")
    try:
        _run("useradd", "--badname", "--no-create-home", "--shell", "/bin/sh", "--", name)
        set_password(name, password)
        yield name
    finally:
        remove_account(name)


def lock(name: str) -> None:
    """`usermod -L`: the password hash is disabled (prefixed with '!')."""
    _run("usermod", "--lock", "--", name)


def expire(name: str) -> None:
    """`chage -E 0`: the account expired on 1 January 1970."""
    require_root_tools("chage")
    _run("chage", "--expiredate", "0", "--", name)


def clear_password(name: str) -> None:
    """`passwd -d`: the account has an empty password (which `nullok` services accept)."""
    _run("passwd", "--delete", "--", name)


def threads_in_pam() -> int:
    """How many threads of this process are inside `pamela.authenticate` right now."""
    here = pamela.authenticate.__code__
    count = 0
    for frame in sys._current_frames().values():
        walk: FrameType | None = frame
        while walk is not None and walk.f_code is not here:
            walk = walk.f_back
        count += walk is not None
    return count
