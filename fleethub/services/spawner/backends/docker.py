"""Placeholder of the `docker` backend while it is being built (replaced by its implementation)."""

from __future__ import annotations

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings


class DockerBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        raise ConfigError("spawner.backend: the docker backend is not available in this build")
