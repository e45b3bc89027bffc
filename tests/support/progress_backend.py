"""A backend double for the spawn-pending page's browser tests: the local backend, whose start first
reports `STEPS` as progress. For users whose name starts with `gated` or `failing`, each step waits until the
test opens it (the file `<data_dir>/gates/<user>.<n>` exists), so a test sees the page between two steps;
a `failing` user's start then fails after the first step, with a message holding markup.
Configured by import path: `spawner.backend = "tests.support.progress_backend:ProgressBackend"`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fleethub.services.spawner.backends import ServerSpec
from fleethub.services.spawner.backends.local import LocalBackend

STEPS = ("Preparing the environment", "Mounting the home directory", "Starting the server process")
FAILURE = "no room for <{user}>'s server on this node"


def gate(data_dir: Path, user: str, step: int) -> Path:
    """The file that lets `user`'s start go past step `step` (0-based)."""
    return data_dir / "gates" / f"{user}.{step}"


async def _opened(path: Path) -> None:
    while not path.exists():  # a file the test makes: nothing to subscribe to in a backend double
        await asyncio.sleep(0.05)


class ProgressBackend(LocalBackend):
    """`LocalBackend` whose start reports its steps (gated for `gated*` users, failing for `failing*`)."""

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        for n, step in enumerate(STEPS):
            await spec.progress(step)
            if spec.user.startswith(("gated", "failing")):
                await _opened(gate(self.settings.data_dir, spec.user, n))
            if spec.user.startswith("failing"):
                raise RuntimeError(FAILURE.format(user=spec.user))
        return await super().start(spec, identity)
