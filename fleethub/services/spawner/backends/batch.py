"""Placeholder of the `batch` backend while it is being built (replaced by its implementation)."""

from __future__ import annotations

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings


class BatchBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        raise ConfigError("spawner.backend: the batch backend is not available in this build")
