"""The backend interface of the spawner (`Backend`, `ServerSpec`), and how a backend is chosen (`load_backend`).

A backend starts, polls and stops one server; its state is a JSON dict saved in PostgreSQL
(`server_states.state`) so that any worker can poll or stop a server another worker started.
Backends are found through the entry point group `fleethub.spawners` (third parties add their own);
`local` is built in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fleethub.shared.plugins import load_plugin
from fleethub.shared.settings import ServiceSettings

ENTRY_POINT_GROUP = "fleethub.spawners"


@dataclass(frozen=True)
class ServerSpec:
    """Everything a backend needs to start one server.

    `env` is the server's whole environment, built by the worker for every backend
    (`services/spawner/env.py`: the `spawner.env_keep` allow list, the JupyterHub contract,
    `spawner.environment`). A backend adds `JUPYTERHUB_SERVICE_URL` and never its own process's environment.
    """

    user: str
    server_name: str
    spawn_id: str
    prefix: str
    env: dict[str, str]
    user_options: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None


class Backend(Protocol):
    """Starts, polls and stops servers."""

    async def start(self, spec: ServerSpec) -> dict[str, Any]:
        """Start the server; return its state (must be JSON), enough to poll and stop it later.

        The backend adds `JUPYTERHUB_SERVICE_URL` (where the server listens) to the environment.
        """

    def target(self, state: dict[str, Any]) -> str:
        """The origin the proxy forwards to, e.g. http://127.0.0.1:51234."""

    async def poll(self, state: dict[str, Any]) -> bool:
        """Whether the server is still running (it may have been started by another worker)."""

    async def stop(self, state: dict[str, Any]) -> None:
        """Stop the server; returns once it is gone. Stopping a gone server is not an error."""


def _local() -> type:
    from fleethub.services.spawner.backends.local import LocalBackend

    return LocalBackend


def load_backend(settings: ServiceSettings) -> Backend:
    """The backend named by `spawner.backend`.

    Raises:
        ConfigError: no such backend.
    """
    cls = load_plugin(ENTRY_POINT_GROUP, settings.spawner.backend, {"local": _local},
                      "spawner.backend (FLEETHUB_SPAWNER__BACKEND)")
    return cls(settings)  # type: ignore[no-any-return]
