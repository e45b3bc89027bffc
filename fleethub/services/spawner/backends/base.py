"""The backend interface of the spawner (`Backend`, `ServerSpec`), and how a backend is chosen (`load_backend`).

A backend starts, polls and stops one server; its state is a JSON dict saved in PostgreSQL
(`server_states.state`) so that any worker can poll or stop a server another worker started.

A spawn is recorded before anything exists: the worker asks `identity(spec)` for the server's planned
identity (a name derived from the server's key and spawn id — for `local` a free port and an environment
marker; a container name, a job name), saves it in `server_states.state`, and only then calls
`start(spec, identity)`. A worker that dies between the two leaves a row that names what it may have
created: `poll` and `stop` work from the identity alone (no pid, container id or job id needed), so the
worker that adopts the row either finds the server alive (`locate`) and keeps it, or ends it and starts
again.
Nothing a backend creates can be an orphan.
Backends are found through the entry point group `fleethub.spawners` (third parties add their own) or an
import path; `local`, `system-user`, `docker` and `batch` are built in. A worker process serves the backends
of `spawner.backends` (`fleethub.shared.profiles.served_backends`), one instance of each.

What a backend takes from `user_options` (a chosen image) is decided before the spawn is accepted, by
`fleethub.shared.backend_options` (the api refuses bad options with a 400); the backend gets the
result as `ServerSpec.config`, the effective `[spawner]` settings of this spawn (profile overrides
applied). A backend reads its settings from `spec.config`, never from the settings it was built with,
except for what it needs to reach its system (an engine's address).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fleethub.shared.backend_options import ENTRY_POINT_GROUP
from fleethub.shared.plugins import load_plugin
from fleethub.shared.settings import ServiceSettings, SpawnerSettings

Progress = Callable[[str], Awaitable[None]]
"""Sends one progress message of the spawn to the user (`ServerProgress`, shown on the spawn page)."""


async def _no_progress(message: str) -> None:
    """The progress of a start nobody watches (tests of a backend alone)."""


@dataclass(frozen=True)
class ServerSpec:
    """Everything a backend needs to start one server.

    `env` is the server's whole environment, built by the worker for every backend
    (`services/spawner/env.py`: the `spawner.env_keep` allow list, the JupyterHub contract,
    `spawner.environment`). A backend adds `JUPYTERHUB_SERVICE_URL` (and, if it marks processes, its
    identity marker) and never its own process's environment.
    """

    user: str
    server_name: str
    spawn_id: str
    prefix: str
    env: dict[str, str]
    user_options: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    config: SpawnerSettings = field(default_factory=SpawnerSettings)
    """The effective `[spawner]` settings of this spawn: its profile's overrides and options applied."""
    progress: Progress = _no_progress
    """Where the backend reports how the start goes ("queued", "pulling image", ...)."""
    auth_state: dict[str, Any] | None = field(default=None, repr=False)
    """The user's auth_state, decrypted (with `auth.enable_auth_state`; else None), as the authenticator's
    `pre_spawn_start` and the `pre_spawn_hook` saw it. A secret: never logged (left out of the spec's repr),
    never put into the identity or state a backend returns (those are stored in plain)."""


class Backend(Protocol):
    """Plans, starts, polls and stops servers."""

    def identity(self, spec: ServerSpec) -> dict[str, Any]:
        """The planned identity of `spec`'s server (JSON), recorded before `start` is called.

        It must be derived from the server's key and spawn id (never from what `start` returns), so that
        `poll` and `stop` given only this dict find whatever a `start` with it created, even one whose
        worker died before it could save the result. It must hold no secret (it is stored in plain).
        """

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        """Start the server under `identity`; return its state (JSON): `identity` plus what start learnt
        (a pid, a container id), enough to poll and stop it later.

        The backend adds `JUPYTERHUB_SERVICE_URL` (where the server listens) to the environment.
        """

    async def locate(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The state of the server `state` names (perhaps only its identity) if it runs, completed with what
        the backend finds out (a pid, a container id); None if nothing of it runs."""

    def target(self, state: dict[str, Any]) -> str:
        """The origin the proxy forwards to, e.g. http://127.0.0.1:51234."""

    async def poll(self, state: dict[str, Any]) -> bool:
        """Whether the server is still running (it may have been started by another worker; `state` may be
        only its identity)."""

    async def stop(self, state: dict[str, Any]) -> None:
        """Stop the server (found from its identity if `state` holds nothing more); returns once it is gone.
        Stopping a gone server, or one never started, is not an error."""


def _local() -> type:
    from fleethub.services.spawner.backends.local import LocalBackend

    return LocalBackend


def _system_user() -> type:
    from fleethub.services.spawner.backends.system_user import SystemUserBackend

    return SystemUserBackend


def _docker() -> type:
    from fleethub.services.spawner.backends.docker import DockerBackend

    return DockerBackend


def _batch() -> type:
    from fleethub.services.spawner.backends.batch import BatchBackend

    return BatchBackend


BUILTIN: dict[str, Callable[[], type]] = {"local": _local, "system-user": _system_user, "docker": _docker,
                                          "batch": _batch}


def load_backend(settings: ServiceSettings, name: str | None = None) -> Backend:
    """The backend `name` (default `spawner.backend`), built with `settings`.

    Raises:
        ConfigError: no such backend.
    """
    cls = load_plugin(ENTRY_POINT_GROUP, name or settings.spawner.backend, BUILTIN,
                      "spawner.backend (FLEETHUB_SPAWNER__BACKEND)")
    return cls(settings)  # type: ignore[no-any-return]
