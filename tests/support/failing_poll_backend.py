"""A backend double: the local backend, except that once the file `<data_dir>/poll-fails` exists its
`poll` raises for servers of users whose name starts with `broken` (a scheduler or engine that stopped
answering for some servers). Configured by import path:
`spawner.backend = "tests.support.failing_poll_backend:PollFailsBackend"`."""

from __future__ import annotations

from typing import Any

from fleethub.services.spawner.backends.local import LocalBackend


class PollFailsBackend(LocalBackend):
    """`LocalBackend` whose poll raises for `broken*` users' servers once `<data_dir>/poll-fails` exists."""

    async def poll(self, state: dict[str, Any]) -> bool:
        if str(state.get("marker", "")).startswith("broken") and (self.settings.data_dir / "poll-fails").exists():
            raise RuntimeError("the backend's system does not answer")
        return await super().poll(state)
