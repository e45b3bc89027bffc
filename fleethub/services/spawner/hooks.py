"""`spawner.pre_spawn_hook` and `spawner.post_stop_hook`: a deployment's own code around a spawn.

Each is named by an entry point of the group `fleethub.hooks` or an import path `module:function`, and runs
in the spawner worker process that carries the spawn or the stop out (never in the api): its module must be
importable there, and it sees the worker's privileges. A hook may be a plain function (run in a thread,
so a slow one does not hold up the worker's other spawns) or a coroutine function (awaited in the worker's
event loop: it must not block).

- `pre_spawn_hook(spec: ServerSpec)`: called before the backend plans the server (`Backend.identity`), after
  the authenticator's `pre_spawn_start` (so `spec.auth_state` holds the user's decrypted auth_state with
  `auth.enable_auth_state`); it may return a changed `ServerSpec`
  (`dataclasses.replace(spec, env={**spec.env, ...})`) or None (the spec as it was). An exception fails the
  spawn with its message. The hook of a spawn is its effective setting (a profile may override it).
- `post_stop_hook(info: StopInfo)`: called once after a server stopped — by a stop, because it exited, or
  because its spawn failed — with the user, server name, spawn id, the backend's state and the reason. It
  runs in the background: an exception is logged, and the stop never waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleethub.services.spawner.backends import ServerSpec
from fleethub.shared.plugins import load_callable
from fleethub.shared.settings import SpawnerSettings

log = logging.getLogger(__name__)

GROUP = "fleethub.hooks"
PRE_SPAWN = "spawner.pre_spawn_hook (FLEETHUB_SPAWNER__PRE_SPAWN_HOOK)"
POST_STOP = "spawner.post_stop_hook (FLEETHUB_SPAWNER__POST_STOP_HOOK)"
_FIXED = ("user", "server_name", "spawn_id", "prefix")  # what names the server: a hook cannot change it


class HookFailed(Exception):
    """The pre-spawn hook refused the spawn (or returned something that is not a spec); the message says why."""


@dataclass(frozen=True)
class StopInfo:
    """What `post_stop_hook` is told about a server that stopped."""

    user: str
    server_name: str
    spawn_id: str
    state: dict[str, Any]
    """The backend's state of the server (its identity at least; empty if its spawn failed before it had one)."""
    reason: str
    """Why it stopped: the stop's reason ("api", "culled", ...), "exited", or "failed"."""
    message: str | None = field(default=None)
    """The failure's message, for reason "failed"."""


def checked_spec(result: Any, spec: ServerSpec, who: str) -> ServerSpec:
    """What a hook (or the authenticator's `pre_spawn_start`) returned for `spec`, as the spec to go on with.

    Raises:
        HookFailed: neither None nor a spec of the same server.
    """
    if result is None:
        return spec
    if not isinstance(result, ServerSpec):
        raise HookFailed(f"{who} returned a {type(result).__name__}, not a ServerSpec or None")
    changed = [f for f in _FIXED if getattr(result, f) != getattr(spec, f)]
    if changed:
        raise HookFailed(f"{who} changed the spawn's {', '.join(changed)}, which it may not")
    return result


async def _call(hook: Callable[..., Any], arg: Any) -> Any:
    if inspect.iscoroutinefunction(hook):
        return await hook(arg)
    result = await asyncio.to_thread(hook, arg)
    if inspect.isawaitable(result):
        result = await result
    return result


class Hooks:
    """One worker's hooks, loaded when the worker starts (a bad name stops it, naming the setting)."""

    def __init__(self, spawner: SpawnerSettings) -> None:
        self._loaded: dict[str, Callable[..., Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.post_stop_name = spawner.post_stop_hook
        names = {spawner.pre_spawn_hook, *(p.overrides.get("pre_spawn_hook") for p in spawner.profiles)}
        for name in sorted(n for n in names if isinstance(n, str) and n):
            self._load(name, PRE_SPAWN)
        if self.post_stop_name:
            self._load(self.post_stop_name, POST_STOP)

    def _load(self, name: str, setting: str) -> Callable[..., Any]:
        if name not in self._loaded:
            self._loaded[name] = load_callable(GROUP, name, setting)
        return self._loaded[name]

    async def pre_spawn(self, spec: ServerSpec) -> ServerSpec:
        """`spec` as the spawn's pre-spawn hook leaves it (itself when there is none).

        Raises:
            HookFailed: the hook raised (its message), or returned neither None nor a spec of the same server.
        """
        name = spec.config.pre_spawn_hook
        if not name:
            return spec
        timeout = spec.config.start_timeout
        try:
            hook = self._load(name, PRE_SPAWN)
            result = await asyncio.wait_for(_call(hook, spec), timeout)
        except TimeoutError:
            raise HookFailed(f"pre_spawn_hook {name} did not return within {timeout:g}s "
                             "(spawner.start_timeout)") from None
        except Exception as exc:
            log.warning("pre_spawn_hook %s refused the spawn %s of %s/%s", name, spec.spawn_id, spec.user,
                        spec.server_name, exc_info=True)
            raise HookFailed(str(exc) or type(exc).__name__) from exc
        return checked_spec(result, spec, f"pre_spawn_hook {name}")

    def after_stop(self, info: StopInfo) -> None:
        """Run the post-stop hook for `info` in the background (nothing when none is set)."""
        if not self.post_stop_name:
            return
        task = asyncio.get_running_loop().create_task(self._post_stop(self.post_stop_name, info))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_stop(self, name: str, info: StopInfo) -> None:
        try:
            await _call(self._load(name, POST_STOP), info)
        except Exception:
            log.exception("post_stop_hook %s failed for the spawn %s of %s/%s (%s)", name, info.spawn_id, info.user,
                          info.server_name, info.reason)
