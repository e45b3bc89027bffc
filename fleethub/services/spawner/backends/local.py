"""The `local` backend: each server is a subprocess of the worker, in its own session (process group).

Its identity, recorded before the process is created, is the port it will listen on and a marker: the
environment variable `FH_SERVER_ID` (the server's key and spawn id, nothing secret) set in the
server's environment at exec (outside the `FLEETHUB_` namespace, which holds a worker's settings and never
reaches a server). Any worker on the machine finds the server from the marker alone, in
`/proc/<pid>/environ` of the session leaders (the server itself, not the kernels it starts, which inherit
the variable): there is no moment between fork and a pid file being written when it could not be found.
A recorded pid is trusted only while that process still carries the marker (pids are reused).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.services.spawner.marks import MARKER_VAR, carries, marked_processes
from fleethub.shared.names import encode_token
from fleethub.shared.net import free_port
from fleethub.shared.private import open_private, private_dir
from fleethub.shared.procs import end_child, pid_alive
from fleethub.shared.service import reachable_host
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

__all__ = ["MARKER_VAR", "LocalBackend", "marker_of"]

# seconds a port planned for a server is not planned for another: the kernel may give the same free port to
# the next look (nothing listens on it until the server binds it, seconds later in a storm), and two servers
# planned one port left one of them unable to bind while its readiness check was answered by the other's
PORT_HOLD = 120.0


def marker_of(spec: ServerSpec) -> str:
    """The marker of one spawn: `<user>.<server>.<spawn id>`, each part one token without dots."""
    return f"{encode_token(spec.user)}.{encode_token(spec.server_name)}.{spec.spawn_id}"


def _log_fd(spec: ServerSpec) -> int:
    """The server's output: its log file, opened for appending by the worker (the log dir stays the hub's).

    Plain blocking calls: a directory check and an open on the local disk take microseconds, less than a
    hand-off to a thread would.
    """
    if spec.log_path is None:
        return asyncio.subprocess.DEVNULL
    private_dir(spec.log_path.parent)  # the servers' logs are their users' business alone
    return open_private(spec.log_path)


def _home_dir(env: dict[str, str]) -> str | None:
    """The server's working directory: its HOME, if it exists."""
    home = env.get("HOME", "")
    return home if home and Path(home).is_dir() else None


class LocalBackend:
    """Runs `spawner.cmd + spawner.args` as a local process listening on a free port."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._found: dict[str, int] = {}  # marker → pid of servers found by marker (state without a pid)
        self._warned_root = False
        self._planned: dict[tuple[str, int], float] = {}  # (ip, port) planned for a server → held until

    def _command(self, spec: ServerSpec) -> list[str]:
        cmd = [*spec.config.cmd, *spec.config.args]
        if os.geteuid() == 0 and Path(cmd[0]).name == "jupyterhub-singleuser" and "--allow-root" not in cmd:
            if not self._warned_root:
                log.warning(
                    "running user servers as root with the local backend: every user can act as root on "
                    "this machine; passing --allow-root to jupyterhub-singleuser"
                )
                self._warned_root = True
            cmd.append("--allow-root")
        return cmd

    def identity(self, spec: ServerSpec) -> dict[str, Any]:
        ip = spec.config.ip
        return {"ip": ip, "port": self._plan_port(ip), "marker": marker_of(spec)}

    def _plan_port(self, ip: str) -> int:
        """A free port on `ip` not planned for another server of this worker within `PORT_HOLD` seconds."""
        now = time.monotonic()
        for planned in [p for p, until in self._planned.items() if until < now]:
            del self._planned[planned]
        for _ in range(100):
            port = free_port(ip)
            if (ip, port) not in self._planned:
                self._planned[ip, port] = now + PORT_HOLD
                return port
        raise OSError(f"no free port on {ip} that is not planned for another server")

    def _env(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, str]:
        """The server's environment: `spec.env`, where it listens, and its marker."""
        return {**spec.env, "JUPYTERHUB_SERVICE_URL": f"http://{identity['ip']}:{identity['port']}{spec.prefix}",
                MARKER_VAR: str(identity["marker"])}

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        env = self._env(spec, identity)
        proc = await self._spawn(spec, self._command(spec), env, cwd=_home_dir(env))
        return {**identity, "pid": proc.pid}

    async def _spawn(self, spec: ServerSpec, command: list[str], env: dict[str, str], *, cwd: str | None,
                     **popen: Any) -> asyncio.subprocess.Process:
        """Run `command` in a session of its own, output to the spawn's log; reaped in the background.

        `popen`: more arguments of the process's creation (`user`, `group`, `extra_groups`).
        """
        out = _log_fd(spec)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=cwd, stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True, **popen,
            )
        except OSError as exc:  # the exec failed: name the command (the error alone says only "No such file")
            raise OSError(f"cannot run the server command {command[0]!r}: {exc.strerror or exc}") from exc
        finally:
            if out != asyncio.subprocess.DEVNULL:
                os.close(out)
        self._children[proc.pid] = proc
        # wait in the background so the child never stays a zombie
        asyncio.get_running_loop().create_task(self._reap(proc))
        return proc

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        try:
            await proc.wait()
        finally:
            self._children.pop(proc.pid, None)

    def target(self, state: dict[str, Any]) -> str:
        ip = state["ip"]
        if ip in ("0.0.0.0", "", "::"):
            ip = reachable_host()
        return f"http://{ip}:{state['port']}"

    def _pids(self, state: dict[str, Any]) -> list[int]:
        """The live processes of the server `state` names: its recorded pid, else those carrying its marker."""
        marker = state.get("marker")
        pid = int(state.get("pid") or 0) or self._found.get(str(marker), 0)
        child = self._children.get(pid)
        if child is not None:
            return [pid] if child.returncode is None else []
        if pid > 0 and pid_alive(pid) and (marker is None or carries(pid, str(marker)) is not False):
            return [pid]
        if not marker:
            return []
        found = marked_processes(str(marker))  # a scan of /proc: remember what it finds for the next poll
        if found:
            self._found[str(marker)] = found[0]
        else:
            self._found.pop(str(marker), None)
        return found

    async def locate(self, state: dict[str, Any]) -> dict[str, Any] | None:
        pids = self._pids(state)
        return {**state, "pid": pids[0]} if pids else None

    async def poll(self, state: dict[str, Any]) -> bool:
        return bool(self._pids(state))

    async def stop(self, state: dict[str, Any]) -> None:
        for pid in self._pids(state):
            await end_child(pid, self._children.get(pid))
        self._found.pop(str(state.get("marker")), None)
