"""The two hubs as this benchmark starts them: bench/api's installers and start-up (imported, not copied), each
with the same user server (`floor.COMMAND`, tests/support/fake_singleuser.py) and the mark that lets the
benchmark find every server it caused.

JupyterHub runs it with its SimpleLocalProcessSpawner (LocalProcessSpawner without system users: the
servers run as the hub's own user, with HOME under the bench's work dir), which gives it the same
contract as fleethub's `local` backend: `JUPYTERHUB_SERVICE_URL`/`_PREFIX`/`_USER` in the environment.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import hubs
from floor import COMMAND, MARK_VAR
from hubs import Hub, request
from proctree import BenchError

PROBE_USER = "probe"


def jupyterhub_extra(workdir: Path, mark: str, spawn_limit: int | None) -> str:
    limit = f"c.JupyterHub.concurrent_spawn_limit = {spawn_limit}\n" if spawn_limit is not None else ""
    return textwrap.dedent(f"""\
        # bench/spawn: the same user server as fleethub's
        c.JupyterHub.spawner_class = "simple"
        c.SimpleLocalProcessSpawner.home_dir_template = {str(workdir / "home" / "{username}")!r}
        c.Spawner.cmd = {COMMAND!r}
        c.Spawner.environment = {{{MARK_VAR!r}: {mark!r}}}
        """) + limit


def fleethub_extra(mark: str, spawn_limit: int | None) -> dict[str, str]:
    env = {"FLEETHUB_SPAWNER__CMD": json.dumps(COMMAND),
           "FLEETHUB_SPAWNER__ENVIRONMENT": json.dumps({MARK_VAR: mark})}
    if spawn_limit is not None:
        env["FLEETHUB_API__CONCURRENT_SPAWN_LIMIT"] = str(spawn_limit)
    return env


async def start(key: str, workdir: Path, chp: str, mark: str, spawn_limit: int | None,
                baseline: Path | None = None, up_args: tuple[str, ...] = ()) -> Hub:
    """A fresh hub of kind `key`: "jh" (JupyterHub), "fh" (fleethub of this checkout) or "fb" (fleethub from the
    checkout `baseline`, another commit run the same way: `python -m fleethub` there, its code first on the path)."""
    if key == "jh":
        return await hubs.start_jupyterhub(workdir, chp, jupyterhub_extra(workdir, mark, spawn_limit))
    if key == "fh":
        return await hubs.start_fleethub(workdir, fleethub_extra(mark, spawn_limit), up_args)
    assert baseline is not None
    saved = hubs.ROOT
    hubs.ROOT = baseline  # start_fleethub runs `python -m fleethub` (and `fleethub token`) in ROOT
    try:
        hub = await hubs.start_fleethub(workdir, {**fleethub_extra(mark, spawn_limit), "PYTHONPATH": str(baseline)},
                                         up_args)
    finally:
        hubs.ROOT = saved
    hub.key, hub.label = "fb", "fleethub baseline"
    return hub


async def create_users(hub: Hub, names: list[str]) -> None:
    """The storm's users and the prober's (admin token, on the hub's API port)."""
    for i in range(0, len(names), 1000):
        r = await request(hub.port, "POST", "/hub/api/users", token=hub.admin_token,
                          body={"usernames": names[i:i + 1000]}, timeout=300)
        if r.status not in (200, 201):
            raise BenchError(f"{hub.label}: POST /hub/api/users answered {r.status}: {r.body[:300]!r}")
