"""`Hooks`: how a pre-spawn hook's result is taken and a post-stop hook's failure kept from the stop (the
hooks themselves run in a real worker in tests/integration/spawner/test_hooks.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading

import pytest

from fleethub.services.spawner.backends import ServerSpec
from fleethub.services.spawner.hooks import HookFailed, Hooks, StopInfo
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import SpawnerSettings

MOD = "tests.unit.services.spawner.test_hooks"
CALLS: list[object] = []


def sync_hook(spec: ServerSpec) -> ServerSpec:
    CALLS.append(threading.current_thread() is threading.main_thread())
    return dataclasses.replace(spec, env={**spec.env, "SYNC": "1"})


async def async_hook(spec: ServerSpec) -> None:
    CALLS.append("async")


def renaming_hook(spec: ServerSpec) -> ServerSpec:
    return dataclasses.replace(spec, user="root")


def wrong_type_hook(spec: ServerSpec) -> dict[str, str]:
    return {"env": "x"}


def failing_hook(spec: ServerSpec) -> None:
    raise ValueError("no GPU left for you")


def bare_failing_hook(spec: ServerSpec) -> None:
    raise KeyError


async def slow_hook(spec: ServerSpec) -> None:
    await asyncio.sleep(30)


async def failing_post_stop(info: StopInfo) -> None:
    CALLS.append(info.reason)
    raise RuntimeError("cleanup service away")


def _spec(hook: str | None) -> ServerSpec:
    return ServerSpec(user="alice", server_name="", spawn_id="s1", prefix="/user/alice/", env={"A": "1"},
                      config=SpawnerSettings(pre_spawn_hook=hook))


async def test_a_sync_hook_runs_in_a_thread_and_changes_the_spec() -> None:
    CALLS.clear()
    spec = _spec(f"{MOD}:sync_hook")
    out = await Hooks(spec.config).pre_spawn(spec)
    assert out.env == {"A": "1", "SYNC": "1"} and CALLS == [False]


async def test_an_async_hook_returning_none_keeps_the_spec() -> None:
    CALLS.clear()
    spec = _spec(f"{MOD}:async_hook")
    assert await Hooks(spec.config).pre_spawn(spec) is spec and CALLS == ["async"]
    plain = _spec(None)
    assert await Hooks(plain.config).pre_spawn(plain) is plain


@pytest.mark.parametrize("hook, message", [
    ("failing_hook", "no GPU left for you"),
    ("bare_failing_hook", "KeyError"),
    ("renaming_hook", "changed the spawn's user, which it may not"),
    ("wrong_type_hook", "returned a dict, not a ServerSpec or None"),
])
async def test_a_refusal_or_a_wrong_result_fails_the_spawn_with_a_message(hook: str, message: str) -> None:
    spec = _spec(f"{MOD}:{hook}")
    with pytest.raises(HookFailed, match=message):
        await Hooks(spec.config).pre_spawn(spec)


async def test_a_hook_that_does_not_return_fails_the_spawn_after_the_start_timeout() -> None:
    spec = dataclasses.replace(_spec(f"{MOD}:slow_hook"),
                               config=SpawnerSettings(pre_spawn_hook=f"{MOD}:slow_hook", start_timeout=0.2))
    with pytest.raises(HookFailed, match=r"did not return within 0\.2s \(spawner\.start_timeout\)"):
        await Hooks(spec.config).pre_spawn(spec)


def test_a_bad_hook_name_stops_the_worker_at_start_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^spawner.pre_spawn_hook \(FLEETHUB_SPAWNER__PRE_SPAWN_HOOK\)"):
        Hooks(SpawnerSettings(pre_spawn_hook=f"{MOD}:no_such_hook"))
    with pytest.raises(ConfigError, match=r"^spawner.post_stop_hook"):
        Hooks(SpawnerSettings(post_stop_hook="no_such_module_here:hook"))
    with pytest.raises(ConfigError, match=r"^spawner.pre_spawn_hook"):  # a profile's own hook too
        Hooks(SpawnerSettings(profiles=[{"display_name": "P", "slug": "p",
                                         "overrides": {"pre_spawn_hook": "no_such_module_here:hook"}}]))


async def test_a_failing_post_stop_hook_is_logged_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    CALLS.clear()
    hooks = Hooks(SpawnerSettings(post_stop_hook=f"{MOD}:failing_post_stop"))
    with caplog.at_level(logging.ERROR, logger="fleethub.services.spawner.hooks"):
        hooks.after_stop(StopInfo("alice", "", "s1", {"pid": 1}, "exited"))  # returns at once
        assert CALLS == []
        for _ in range(100):
            if caplog.records:
                break
            await asyncio.sleep(0.01)
    assert CALLS == ["exited"]
    assert "post_stop_hook tests.unit.services.spawner.test_hooks:failing_post_stop failed" in caplog.text
    assert "cleanup service away" in caplog.text
