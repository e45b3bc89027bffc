"""The `docker` backend: each server runs in a container of a Docker Engine (settings `[spawner.docker]`).

The container's name is its identity: `name_template` filled in with the user's and server's names
(escaped to what a container name may hold), so a worker that adopts a spawn finds the container by name
alone. Labels on the container (`fleethub.user`, `fleethub.server`, `fleethub.spawn_id`) say which spawn
made it: a container of an older spawn under the same name is removed before a new one is created, and
`locate`, `poll` and `stop` act only on the container of the spawn they are given. A container of that name
that fleethub did not make for this server is never touched: the start fails and says so.

With host networking (`network_name = "host"`, the default) the server listens on a free port of the
host chosen in `identity`; on any other network it listens on port 8888 of the container's address there.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from string import ascii_lowercase, digits
from typing import Any

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.services.spawner.backends.docker_engine import Engine, EngineError, EngineUnreachable, parse_address
from fleethub.services.spawner.backends.local import MARKER_VAR, marker_of
from fleethub.shared.backend_settings import DockerSettings, parse_size
from fleethub.shared.errors import ConfigError
from fleethub.shared.net import free_port
from fleethub.shared.private import open_private, private_dir
from fleethub.shared.service import reachable_host
from fleethub.shared.settings import ServiceSettings, SpawnerSettings

log = logging.getLogger(__name__)

LABEL_USER = "fleethub.user"
LABEL_SERVER = "fleethub.server"
LABEL_SPAWN = "fleethub.spawn_id"
CONTAINER_PORT = 8888
"""The port a server listens on inside its container when it is not on the host's network."""
STOP_GRACE = 5
"""Seconds a server has to exit after SIGTERM before the engine kills it."""
POLL_REUSE = 1.0
"""Seconds a poll that saw the container run is trusted without asking the engine again: the readiness
wait polls every `spawner.poll_interval` (50 ms), and an inspect costs about 2 ms of CPU."""

_SAFE = frozenset(ascii_lowercase + digits)


class ContainerError(RuntimeError):
    """A container could not be created or started; the message says why, for the user."""


def escape(name: str) -> str:
    """`name` as a part of a container or volume name: lower-case letters and digits kept, every other
    byte of its UTF-8 form written `-xx` (hex). Injective; the result never holds `.` or `_`."""
    return "".join(ch if ch in _SAFE else "".join(f"-{b:02x}" for b in ch.encode()) for ch in name)


def _fill(template: str, values: dict[str, str]) -> str:
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def container_name(template: str, user: str, server: str) -> str:
    """The container of `user`'s server `server`: `template` with `{username}`, `{servername}` and
    `{servername_suffix}` (`.<server>`, or nothing for the default server) filled in, escaped.

    The suffix starts with `.`, which no escaped name holds, so user `a-b` (escaped `a-2db`) and user `a`'s
    server `2db` never share a container.
    """
    user_part, server_part = escape(user), escape(server)
    return _fill(template, {"username": user_part, "servername": server_part,
                            "servername_suffix": f".{server_part}" if server else ""})


def volume_binds(volumes: dict[str, str], user: str) -> list[str]:
    """`volumes` (host path or volume name → container path, `:ro` allowed) as HostConfig Binds, with
    `{username}` (escaped) filled in on both sides."""
    values = {"username": escape(user)}
    return [f"{_fill(host, values)}:{_fill(inside, values)}" for host, inside in volumes.items()]


def resources(config: SpawnerSettings) -> dict[str, int]:
    """The HostConfig fields of the spawn's limits: Memory and NanoCpus (the limits, enforced by the
    kernel), MemoryReservation and CpuShares (the guarantees: a soft floor and a weight, 1024 a CPU)."""
    out = {}
    if config.mem_limit is not None:
        out["Memory"] = parse_size(config.mem_limit) or 0
    if config.mem_guarantee is not None:
        out["MemoryReservation"] = parse_size(config.mem_guarantee) or 0
    if config.cpu_limit is not None:
        out["NanoCpus"] = round(config.cpu_limit * 1e9)
    if config.cpu_guarantee is not None:
        out["CpuShares"] = max(2, round(config.cpu_guarantee * 1024))
    return out


def container_env(spec: ServerSpec, service_url: str) -> list[str]:
    """The container's Env: the spawn's environment without what describes the worker's machine (its
    `env_keep` variables, the host account's HOME and SHELL) unless `spawner.environment` sets it (the
    image defines its own PATH and home), plus JUPYTERHUB_SERVICE_URL and the marker."""
    env = dict(spec.env)
    for key in (*spec.config.env_keep, "HOME", "SHELL"):
        if key not in spec.config.environment:
            env.pop(key, None)
    env["JUPYTERHUB_SERVICE_URL"] = service_url
    env[MARKER_VAR] = marker_of(spec)
    return [f"{k}={v}" for k, v in env.items()]


def create_request(spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
    """The body of the container create request of `spec`'s server."""
    d = spec.config.docker
    cmd = [*(d.cmd if d.cmd is not None else spec.config.cmd), *spec.config.args]
    # no raw sockets (the engine grants CAP_NET_RAW by default): on the host's network a container's root could
    # capture the loopback traffic of the proxy, the hub and every other server (cookies, tokens); on a
    # shared network, spoof its neighbours. `extra_host_config` may set CapDrop otherwise.
    host_config: dict[str, Any] = {"NetworkMode": d.network_name, "Binds": volume_binds(d.volumes, spec.user),
                                   "CapDrop": ["NET_RAW"], **resources(spec.config)}
    body: dict[str, Any] = {"Image": d.image, **({"Cmd": cmd} if cmd else {})}
    body.update(d.extra_create_kwargs)
    body["Env"] = [*body.get("Env", []),
                   *container_env(spec, f"http://{identity['ip']}:{identity['port']}{spec.prefix}")]
    body["HostConfig"] = {**host_config, **body.get("HostConfig", {}), **d.extra_host_config}
    body["Labels"] = {**body.get("Labels", {}), LABEL_USER: spec.user, LABEL_SERVER: spec.server_name,
                      LABEL_SPAWN: spec.spawn_id}
    return body


def _labels(info: dict[str, Any]) -> dict[str, str]:
    return dict((info.get("Config") or {}).get("Labels") or {})


def _of_server(info: dict[str, Any], user: str, server: str) -> bool:
    labels = _labels(info)
    return labels.get(LABEL_USER) == user and labels.get(LABEL_SERVER) == server


def _of_spawn(info: dict[str, Any], state: dict[str, Any]) -> bool:
    return _of_server(info, state["user"], state["server"]) and _labels(info).get(LABEL_SPAWN) == state["spawn_id"]


def _running(info: dict[str, Any]) -> bool:
    return bool((info.get("State") or {}).get("Running"))


def _network_ip(info: dict[str, Any], network: str) -> str | None:
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    return (networks.get(network) or {}).get("IPAddress") or None


class DockerBackend:
    """Runs each server in a container of the engine at `spawner.docker.host`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        text = settings.spawner.docker.engine_address()
        try:
            self.engine = Engine(parse_address(text))
        except ValueError as exc:
            raise ConfigError(f"spawner.docker.host: {exc}") from None
        self._not_created: set[str] = set()  # spawns whose start failed before the engine made anything
        self._seen_running: dict[tuple[str, str], float] = {}  # (name, spawn id) → when a poll saw it run

    def identity(self, spec: ServerSpec) -> dict[str, Any]:
        d: DockerSettings = spec.config.docker
        host_network = d.network_name == "host"
        ip = spec.config.ip if host_network else "0.0.0.0"
        port = free_port(ip if ip not in ("", "::") else "0.0.0.0") if host_network else CONTAINER_PORT
        return {"name": container_name(d.name_template, spec.user, spec.server_name), "user": spec.user,
                "server": spec.server_name, "spawn_id": spec.spawn_id, "ip": ip, "port": port,
                "network": d.network_name, "remove": d.remove,
                "log_path": str(spec.log_path) if spec.log_path is not None else None}

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        name = str(identity["name"])
        creating = False
        try:
            await spec.progress(f"Creating container {name}")
            await self._clear(name, spec)
            creating = True
            try:
                cid = await self.engine.create(name, create_request(spec, identity))
            except EngineUnreachable:
                raise
            except EngineError as exc:
                if exc.status == 404:
                    raise ContainerError(
                        f"image {spec.config.docker.image!r} is not on the Docker engine at "
                        f"{self.engine.address.text}: pull or load it there first ({exc})") from None
                raise ContainerError(f"the Docker engine refused to create container {name}: {exc}") from None
            await spec.progress(f"Starting container {name}")
            try:
                await self.engine.start(cid)
            except EngineError as exc:
                raise ContainerError(f"container {name} did not start: {exc}") from None
            state = {**identity, "id": cid}
            if identity["network"] != "host":
                info = await self.engine.inspect(cid)
                address = _network_ip(info or {}, str(identity["network"]))
                if address is None:
                    raise ContainerError(f"container {name} has no address on network {identity['network']!r}")
                state["address"] = address
            return state
        except EngineUnreachable as exc:
            if not creating or not exc.sent:
                # the engine made nothing: the stop that follows a failed start need not reach it either
                self._not_created.add(spec.spawn_id)
            raise ContainerError(str(exc)) from None

    async def _clear(self, name: str, spec: ServerSpec) -> None:
        """Remove a container of this server left under `name` by an earlier spawn; refuse a foreign one."""
        info = await self.engine.inspect(name)
        if info is None:
            return
        if not _of_server(info, spec.user, spec.server_name):
            raise ContainerError(
                f"a container named {name} exists that fleethub did not make for this server: remove it, or "
                "change spawner.docker.name_template")
        log.info("removing container %s of spawn %s before starting spawn %s", name,
                 _labels(info).get(LABEL_SPAWN), spec.spawn_id)
        await self.engine.remove(str(info["Id"]))

    async def _find(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The container of the spawn `state` names (running or not), found by name; None if there is none."""
        info = await self.engine.inspect(str(state["name"]))
        return info if info is not None and _of_spawn(info, state) else None

    async def locate(self, state: dict[str, Any]) -> dict[str, Any] | None:
        info = await self._find(state)
        if info is None or not _running(info):
            return None
        found = {**state, "id": info["Id"]}
        if state.get("network", "host") != "host":
            found["address"] = _network_ip(info, str(state["network"])) or state.get("address")
        return found

    def target(self, state: dict[str, Any]) -> str:
        ip = str(state.get("address") or state["ip"])
        if ip in ("0.0.0.0", "", "::"):
            ip = self.engine.address.hostname or reachable_host()
        return f"http://{ip}:{state['port']}"

    async def poll(self, state: dict[str, Any]) -> bool:
        key = (str(state["name"]), str(state["spawn_id"]))
        now = time.monotonic()
        if now - self._seen_running.get(key, -POLL_REUSE) < POLL_REUSE:
            return True
        info = await self._find(state)
        if info is not None and _running(info):
            self._seen_running[key] = now
            return True
        self._seen_running.pop(key, None)
        if info is not None:
            await self._dispose(info, state)  # its server is over
        return False

    async def stop(self, state: dict[str, Any]) -> None:
        self._seen_running.pop((str(state.get("name")), str(state.get("spawn_id"))), None)
        if state.get("spawn_id") in self._not_created:
            self._not_created.discard(state["spawn_id"])
            return
        info = await self._find(state)
        if info is None:
            return
        await self.engine.stop(str(info["Id"]), STOP_GRACE)
        await self._dispose(info, state)

    async def _dispose(self, info: dict[str, Any], state: dict[str, Any]) -> None:
        """Remove the stopped container if `remove` is on, its output first kept in the spawn's log file
        (where the user reads why a server failed, as with the `local` backend)."""
        if not state.get("remove", True):
            return  # the container keeps its own output (`docker logs`)
        if state.get("log_path"):
            try:
                output = await self.engine.logs(str(info["Id"]))
                after = await self.engine.inspect(str(info["Id"]))
            except EngineError as exc:
                log.warning("could not keep the output of container %s: %s", state["name"], exc)
            else:
                _append_log(Path(str(state["log_path"])), output, str(state["name"]), after or info)
        await self.engine.remove(str(info["Id"]))


def _append_log(path: Path, output: bytes, name: str, info: dict[str, Any]) -> None:
    """Append a removed container's output and how it ended to the spawn's log file (mode 0600).

    Plain blocking calls: a write of at most a few hundred kilobytes to the local disk.
    """
    status = info.get("State") or {}
    ended = f"container {name} exited with code {status.get('ExitCode')}"
    if status.get("OOMKilled"):
        ended += " (killed: out of memory, spawner.mem_limit)"
    if status.get("Error"):
        ended += f": {status['Error']}"
    private_dir(path.parent)
    fd = open_private(path)
    try:
        os.write(fd, output + f"[fleethub] {ended}\n".encode())
    finally:
        os.close(fd)
