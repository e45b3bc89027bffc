"""The `local` backend: each server is a subprocess of the worker, in its own process group."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.shared.net import free_port
from fleethub.shared.private import open_private, private_dir
from fleethub.shared.procs import end_group, pid_alive
from fleethub.shared.service import reachable_host
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)


def _log_and_cwd(spec: ServerSpec, env: dict[str, str]) -> tuple[int, str | None]:
    """The server's output (its log file, opened for appending) and working directory (its HOME, if it exists).

    Plain blocking calls: a directory check and an open on the local disk take microseconds, less than a
    hand-off to a thread would.
    """
    out: int = asyncio.subprocess.DEVNULL
    if spec.log_path is not None:
        private_dir(spec.log_path.parent)  # the servers' logs are their users' business alone
        out = open_private(spec.log_path)
    home = env.get("HOME", "")
    return out, home if home and Path(home).is_dir() else None


class LocalBackend:
    """Runs `spawner.cmd + spawner.args` as a local process listening on a free port."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._warned_root = False

    def _command(self) -> list[str]:
        cmd = [*self.settings.spawner.cmd, *self.settings.spawner.args]
        if os.geteuid() == 0 and Path(cmd[0]).name == "jupyterhub-singleuser" and "--allow-root" not in cmd:
            if not self._warned_root:
                log.warning(
                    "running user servers as root with the local backend: every user can act as root on "
                    "this machine; passing --allow-root to jupyterhub-singleuser"
                )
                self._warned_root = True
            cmd.append("--allow-root")
        return cmd

    async def start(self, spec: ServerSpec) -> dict[str, Any]:
        ip = self.settings.spawner.ip
        port = free_port(ip)
        env = {**spec.env, "JUPYTERHUB_SERVICE_URL": f"http://{ip}:{port}{spec.prefix}"}
        out, cwd = _log_and_cwd(spec, env)
        command = self._command()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=cwd, stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:  # the exec failed: name the command (the error alone says only "No such file")
            raise OSError(f"cannot run the server command {command[0]!r}: {exc.strerror or exc}") from exc
        finally:
            if out != asyncio.subprocess.DEVNULL:
                os.close(out)
        self._children[proc.pid] = proc
        # wait in the background so the child never stays a zombie
        asyncio.get_running_loop().create_task(self._reap(proc))
        return {"pid": proc.pid, "ip": ip, "port": port}

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

    async def poll(self, state: dict[str, Any]) -> bool:
        pid = int(state.get("pid") or 0)
        child = self._children.get(pid)
        if child is not None:
            return child.returncode is None
        return pid_alive(pid)

    async def stop(self, state: dict[str, Any]) -> None:
        pid = int(state.get("pid") or 0)
        if pid <= 0:
            return
        child = self._children.get(pid)
        if child is not None and child.returncode is not None:
            return
        if child is None and not pid_alive(pid):
            return
        await end_group(pid)
        if child is not None:
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                pass
