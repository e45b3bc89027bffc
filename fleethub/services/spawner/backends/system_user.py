"""Placeholder of the `system_user` backend while it is being built (replaced by its implementation)."""

from __future__ import annotations

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings


class SystemUserBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        raise ConfigError("spawner.backend: the system_user backend is not available in this build")
