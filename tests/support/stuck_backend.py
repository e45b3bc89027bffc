"""A backend double for the fault suite: the local backend, except that for users whose name starts with
`stuck` its `start()` creates the server process and then never returns (a backend whose create call
hangs: a container runtime or batch scheduler that does not answer). Configured by import path:
`spawner.backend = "tests.support.stuck_backend:StuckBackend"`."""

from __future__ import annotations

import asyncio
from typing import Any

from fleethub.services.spawner.backends import ServerSpec
from fleethub.services.spawner.backends.local import LocalBackend


class StuckBackend(LocalBackend):
    """`LocalBackend` whose start hangs, after the process exists, for `stuck*` users."""

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        state = await super().start(spec, identity)
        if spec.user.startswith("stuck"):
            await asyncio.Event().wait()  # the process runs; start never says so
        return state
