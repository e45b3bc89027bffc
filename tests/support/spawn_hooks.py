"""Hooks for tests of `spawner.pre_spawn_hook` / `post_stop_hook`, named by import path
(`tests.support.spawn_hooks:add_env`). They run in the spawner worker process; `HOOK_LOG` in the worker's
environment names the file the post-stop hook appends its calls to (one JSON line each)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os

from fleethub.services.spawner.backends import ServerSpec
from fleethub.services.spawner.hooks import StopInfo


def add_env(spec: ServerSpec) -> ServerSpec:
    """A plain function: the server gets `HOOKED` (its user's name) in its environment."""
    return dataclasses.replace(spec, env={**spec.env, "HOOKED": f"pre-{spec.user}"})


async def add_env_async(spec: ServerSpec) -> ServerSpec | None:
    """A coroutine function; users named `plain*` get the spec unchanged (None)."""
    await asyncio.sleep(0)
    if spec.user.startswith("plain"):
        return None
    return dataclasses.replace(spec, env={**spec.env, "HOOKED": f"async-{spec.user}"})


def refuse(spec: ServerSpec) -> None:
    """Refuses users named `refused*` with a message for them; lets the others through unchanged."""
    if spec.user.startswith("refused"):
        raise PermissionError(f"{spec.user} has used up this month's compute quota")


def record_stop(info: StopInfo) -> None:
    """Appends the call to `$HOOK_LOG`; fails (after recording) for users named `crash*`."""
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps(dataclasses.asdict(info)) + "\n")
    if info.user.startswith("crash"):
        raise RuntimeError("post_stop_hook failed on purpose")


def saw_auth_state(spec: ServerSpec) -> ServerSpec:
    """The server gets `HOOK_SAW_TOKEN`: the token of the auth_state the hook was handed ("none" without one)."""
    token = (spec.auth_state or {}).get("token", "none")
    return dataclasses.replace(spec, env={**spec.env, "HOOK_SAW_TOKEN": str(token)})
