"""The "worker" of the contract's adoption tests (tests/support/backend_contract.py), run as a process of its own.

`python contract_worker.py <job.json>`: it builds the backend from the settings handed down in
`FLEETHUB_SETTINGS_JSON` (`load_backend`, or the factory `module:function` named in the job), asks
`identity(spec)`, writes it to the job's `identity_file` (as the worker records it in PostgreSQL), calls
`start` and SIGKILLs itself, never reporting the state:

- `kill_at = "found"`: from a thread of its own, as soon as another instance of the backend (another
  worker's view, nothing shared in memory) locates the server, whether or not `start` has returned;
- `kill_at = "returned"`: right after `start` returned, before anything is done with its result.

Before the kill it writes `{"start_returned": bool}` to `note_file` (what the test reports).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from fleethub.services.spawner.backends import ServerSpec, load_backend
from fleethub.shared.settings import ServiceSettings, SpawnerSettings, load_settings


def _build(settings: ServiceSettings, job: dict[str, Any]) -> Any:
    factory = job.get("factory")
    if factory:
        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)(settings)
    return load_backend(settings, job["backend"])


def _write(path: str, data: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # the test never reads half a file


def _die(note_file: str, start_returned: bool) -> None:
    _write(note_file, {"start_returned": start_returned})
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(settings: ServiceSettings, job: dict[str, Any], identity: dict[str, Any], returned: threading.Event) -> None:
    """Kill this process once another backend instance locates the server (a thread: the loop may be busy)."""
    other = _build(settings, job)

    async def watch() -> None:
        while await other.locate(identity) is None:
            await asyncio.sleep(0.01)

    asyncio.run(watch())
    _die(job["note_file"], returned.is_set())


async def main(job: dict[str, Any]) -> None:
    settings = load_settings()
    backend = _build(settings, job)
    s = job["spec"]
    spec = ServerSpec(user=s["user"], server_name=s["server_name"], spawn_id=s["spawn_id"], prefix=s["prefix"],
                      env=s["env"], log_path=Path(s["log_path"]) if s.get("log_path") else None,
                      config=SpawnerSettings.model_validate(s["config"]))
    identity = backend.identity(spec)
    _write(job["identity_file"], identity)
    returned = threading.Event()
    if job["kill_at"] == "found":
        threading.Thread(target=_watch, args=(settings, job, identity, returned), daemon=True).start()
    await backend.start(spec, identity)
    returned.set()
    if job["kill_at"] == "returned":
        _die(job["note_file"], True)
    await asyncio.Event().wait()  # the watcher kills us


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
