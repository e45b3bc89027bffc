"""The `system-user` backend: each server runs as its user's own Unix account (`[spawner.system_user]`).

Built on the `local` backend (same identity: a free port and the `FH_SERVER_ID` marker; same log file,
opened by the worker and handed to the server as its output, so the log dir stays the hub's), with the
account's uid, gid, supplementary groups (`os.getgrouplist`), `HOME`, `USER`, `SHELL` and the home as cwd.
Two ways to become the user:

- directly, when the worker is root and `mediator` is empty: the as-user helper
  (`fleethub.services.spawner.asuser`) is started in the home, in a session of its own, and sets the
  groups, gid and uid before it execs the server (asyncio's `user=`/`group=` are not in uvloop);
- through `mediator` (SudoSpawner's model, e.g. `sudo -n -E -u {username} --`), so the worker need not
  be root: the mediator runs the as-user helper (`fleethub.services.spawner.asuser`), which restores
  PATH, enters the home, starts a session and execs the server. `-E` is needed: sudo's `env_reset` would
  drop `JUPYTERHUB_*` and `FH_SERVER_ID` (the token never goes on a command line); sudoers must grant
  SETENV for the helper. A worker that is not root also polls and stops adopted servers through the
  helper, as the user (it can neither read their /proc environment nor signal them itself).

A process counts as the server only if it carries the marker *and* belongs wholly to the account's uid:
a marker faked by another user in their own process is not ours. Never as root: an account of uid 0 is
refused, and so is a name that maps to none (unless `create_system_users`: `useradd`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Any

from fleethub.services.spawner.asuser import KEEP_VAR, PATH_VAR
from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.services.spawner.backends.local import LocalBackend
from fleethub.services.spawner.marks import carries, marked_processes, owner, start_time
from fleethub.shared.backend_settings import SystemUserSettings, uid_problem
from fleethub.shared.errors import ConfigError
from fleethub.shared.procs import end_child, pid_alive
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

HELPER = [sys.executable, "-I", "-m", "fleethub.services.spawner.asuser"]
"""The as-user helper (the worker's own interpreter; name it in sudoers). `-I` matters: started as root in
the user's home (direct mode), it must not import from there (cwd, PYTHONPATH, user site)."""

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
MEDIATOR_WAIT = 10.0  # seconds a start waits for the mediator's server to show (sudo + helper: ~0.1 s)
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")


class AccountRefused(Exception):
    """The server cannot run as this user's account; the message says why and what to do."""


@dataclass(frozen=True)
class Account:
    """A Unix account a server runs as."""

    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str
    shell: str


def unix_name(config: SystemUserSettings, user: str) -> str:
    """The Unix account name of hub user `user` (`username_map`, else the same name).

    Raises:
        AccountRefused: the name is not a valid Unix account name.
    """
    name = config.username_map.get(user, user)
    if not _NAME_RE.fullmatch(name) or name.isdigit():
        if user in config.username_map:
            raise AccountRefused(f"spawner.system_user.username_map maps hub user {user!r} to {name!r}, which is "
                                 "not a valid Unix account name")
        raise AccountRefused(f"hub user {user!r} is not a valid Unix account name (letters, digits, '.', '_', "
                             "'-', up to 32): map it to an account in spawner.system_user.username_map")
    return name


def _expand_home(path: str, home: str) -> str:
    """`~` and `~/...` as the account's home (notebook_dir = "~/notebooks")."""
    return home + path[1:] if path == "~" or path.startswith("~/") else path


def _checked(pw: pwd.struct_passwd, user: str, uid_range: tuple[int, int]) -> Account:
    """The account of `pw`, if a server may run as it (a stat on the local disk: no thread hand-off)."""
    if pw.pw_uid == 0:
        raise AccountRefused(f"refusing to run the server of {user!r} as root: account {pw.pw_name!r} has uid 0")
    problem = uid_problem(pw.pw_uid, uid_range)
    if problem is not None:
        raise AccountRefused(f"refusing to run the server of {user!r} as account {pw.pw_name!r}: it {problem}")
    if pw.pw_uid == os.geteuid():  # it could read the worker's environment (database password, hub key)
        raise AccountRefused(f"refusing to run the server of {user!r} as the worker's own account {pw.pw_name!r}: "
                             "map the hub user to another account (spawner.system_user.username_map)")
    if not os.path.isdir(pw.pw_dir):
        raise AccountRefused(f"the home directory {pw.pw_dir} of account {pw.pw_name!r} does not exist")
    return Account(name=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid, groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
                   home=pw.pw_dir, shell=pw.pw_shell or "/bin/sh")


def _mediator(config: SystemUserSettings, name: str) -> list[str]:
    return [part.replace("{username}", name) for part in config.mediator]


class SystemUserBackend(LocalBackend):
    """Runs each server as its user's Unix account, directly (root) or through a mediator."""

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        self.root = os.geteuid() == 0
        if not self.root and not settings.spawner.system_user.mediator:
            raise ConfigError("spawner.system_user.mediator is empty and the worker is not root: set a mediator "
                              "(e.g. ['sudo', '-n', '-E', '-u', '{username}', '--']) or run the worker as root")
        self._starting: dict[str, asyncio.subprocess.Process] = {}  # marker → the process I started
        self._seen: dict[str, tuple[int, int]] = {}  # marker → (pid, start time) the as-user helper found

    def identity(self, spec: ServerSpec) -> dict[str, Any]:
        account = spec.config.system_user.username_map.get(spec.user, spec.user)
        return {**super().identity(spec), "account": account}

    async def _account(self, config: SystemUserSettings, user: str) -> Account:
        name = unix_name(config, user)
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            if not config.create_system_users:
                raise AccountRefused(f"no Unix account named {name!r} on this host: an administrator creates it "
                                     "(or turns on spawner.system_user.create_system_users)") from None
            pw = await self._create(config, name)
        return _checked(pw, user, config.uid_range)

    async def _create(self, config: SystemUserSettings, name: str) -> pwd.struct_passwd:
        command = [part.replace("{username}", name) for part in config.useradd]
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await proc.communicate()
        try:
            pw = pwd.getpwnam(name)  # made by another worker at the same time is as good
        except KeyError:
            said = output.decode(errors="replace").strip()
            raise AccountRefused(f"could not create the Unix account {name!r} ({command[0]} exited "
                                 f"{proc.returncode}: {said})") from None
        log.info("created the Unix account %s (uid %d)", name, pw.pw_uid)
        return pw

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        config = spec.config.system_user
        account = await self._account(config, spec.user)
        env = self._env(spec, identity)
        env.update(USER=account.name, LOGNAME=account.name, HOME=account.home, SHELL=account.shell)
        if "JUPYTERHUB_ROOT_DIR" in env:
            env["JUPYTERHUB_ROOT_DIR"] = _expand_home(env["JUPYTERHUB_ROOT_DIR"], account.home)
        command = [*spec.config.cmd, *spec.config.args]
        state = {**identity, "account": account.name, "uid": account.uid}
        if config.mediator:
            # sudo resets PATH (secure_path): the command is found here, and PATH restored by the helper
            command[0] = shutil.which(command[0], path=env.get("PATH")) or command[0]
            if "PATH" in env:
                env[PATH_VAR] = env["PATH"]
            env[KEEP_VAR] = ",".join(name for name in env if name not in (PATH_VAR,))
            argv = [*_mediator(config, account.name), *HELPER, "exec", "--", *command]
            cwd = "/"
        elif self.root:
            # the helper drops to the account before its exec (asyncio's user=/group= are not in every loop)
            groups = ",".join(str(g) for g in account.groups)
            argv = [*HELPER, "exec", "--as", f"{account.uid}:{account.gid}:{groups}", "--", *command]
            cwd = account.home
        else:
            raise AccountRefused("the worker is not root and spawner.system_user.mediator is empty: it cannot "
                                 f"run a server as {account.name!r}")
        proc = await self._spawn(spec, argv, env, cwd=cwd)
        self._starting[str(identity["marker"])] = proc
        await self._until_found(state, proc)
        return state if config.mediator else {**state, "pid": proc.pid}

    async def _until_found(self, state: dict[str, Any], mediator: asyncio.subprocess.Process) -> None:
        """Return once the server the mediator starts can be found from its identity (another worker's
        `locate` after mine died), or the mediator ended (a failed start: its log says why)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MEDIATOR_WAIT
        while mediator.returncode is None and loop.time() < deadline:
            if await self._server_pids(state):
                return
            await asyncio.sleep(0.02 if self.root else 0.1)

    # --- finding the server: marker and uid ------------------------------------------------------

    def _uid(self, state: dict[str, Any]) -> int | None:
        uid = state.get("uid")
        if uid is None:
            try:
                uid = pwd.getpwnam(str(state.get("account"))).pw_uid
            except KeyError:
                return None
        return int(uid) if int(uid) != 0 else None  # nothing of root's is ever a server of this backend

    async def _as_user(self, state: dict[str, Any], *args: str) -> str:
        """Run the as-user helper through the worker's mediator as `state`'s account; its output."""
        config = self.settings.spawner.system_user
        argv = [*_mediator(config, str(state["account"])), *HELPER, *args]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the as-user helper ({argv[0]} … {args[0]}) exited {proc.returncode}: "
                               f"{err.decode(errors='replace').strip()[-500:]}")
        return out.decode()

    async def _server_pids(self, state: dict[str, Any]) -> list[int]:
        """The live session leaders of the account that carry the server's marker."""
        marker, uid = str(state.get("marker") or ""), self._uid(state)
        if not marker or uid is None:
            return []
        if self.root:
            pid = int(state.get("pid") or 0) or self._found.get(marker, 0)
            if pid > 0 and pid_alive(pid) and owner(pid) == uid and carries(pid, marker):
                return [pid]
            found = marked_processes(marker, uid=uid)
        else:
            # what the helper found before, if that process still runs (same start time: not a reused pid) as
            # the account: a poll of an adopted server costs no sudo
            seen = self._seen.get(marker)
            if seen is not None and start_time(seen[0]) == seen[1] and owner(seen[0]) == uid:
                return [seen[0]]
            found = [int(p) for p in json.loads(await self._as_user(state, "find", marker))]
            began = start_time(found[0]) if found else None
            if began is not None:
                self._seen[marker] = (found[0], began)
            else:
                self._seen.pop(marker, None)
        if found:
            self._found[marker] = found[0]
        else:
            self._found.pop(marker, None)
        return found

    def _mine(self, marker: str) -> asyncio.subprocess.Process | None:
        """The process I started for `marker` (the helper that becomes the server, or the mediator, which
        waits for it), while it runs: mine before it has dropped to the account or exec'd the server."""
        proc = self._starting.get(marker)
        if proc is not None and proc.returncode is not None:
            del self._starting[marker]
            return None
        return proc

    async def locate(self, state: dict[str, Any]) -> dict[str, Any] | None:
        pids = await self._server_pids(state)
        if not pids:
            return None
        uid = self._uid(state)
        return {**state, "pid": pids[0], "uid": uid}

    async def poll(self, state: dict[str, Any]) -> bool:
        if self._mine(str(state.get("marker"))) is not None:
            return True  # not yet past the helper's exec, or running (sudo waits for its command)
        return bool(await self._server_pids(state))

    async def stop(self, state: dict[str, Any]) -> None:
        marker = str(state.get("marker") or "")
        if not marker or self._uid(state) is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE * 2
        while True:
            await self._end(state, marker)
            # a stop right after start may come before the helper's exec: end what appears until the
            # process I started (the server, or the mediator waiting for it) is gone
            mine = self._mine(marker)
            if mine is None or loop.time() > deadline:
                break
            try:
                await asyncio.wait_for(asyncio.shield(mine.wait()), 0.2)
            except TimeoutError:
                continue
        self._found.pop(marker, None)
        self._seen.pop(marker, None)

    async def _end(self, state: dict[str, Any], marker: str) -> None:
        if not self.root:
            await self._as_user(state, "end", marker, f"{STOP_GRACE:g}")
            return
        uid = self._uid(state)
        for pid in await self._server_pids(state):
            await self._end_group(pid)
        # a mediator (sudo, root's) whose command has not exec'd the server yet: TERM, which sudo relays
        for pid in marked_processes(marker, uid=0):
            await self._end_group(pid, whole=False)
        for pid in marked_processes(marker, uid=uid, leaders=False):  # kernels, in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def _end_group(self, pid: int, *, whole: bool = True) -> None:
        """End `pid` (its process group if `whole`), and wait for it if it is my child."""
        await end_child(pid, self._children.get(pid), STOP_GRACE, group=whole)
