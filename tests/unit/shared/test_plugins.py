"""Plug-ins by name: entry points, built-ins, and import paths (`module:Class`, `module:function`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleethub.shared.errors import ConfigError
from fleethub.shared.plugins import load_callable, load_plugin

GROUP = "fleethub.spawners"
SETTING = "spawner.backend (FLEETHUB_SPAWNER__BACKEND)"


def test_a_builtin_and_an_import_path() -> None:
    assert load_plugin(GROUP, "mine", {"mine": lambda: dict}, SETTING) is dict
    assert load_plugin(GROUP, "collections:OrderedDict", {}, SETTING).__name__ == "OrderedDict"


@pytest.mark.parametrize("name, named", [
    ("nowhere", "unknown spawner 'nowhere'"),
    ("no_such_module_here:Backend", "cannot import 'no_such_module_here'"),
    ("collections:NoSuchClass", "names no class"),
    ("os:sep", "names no class"),
])
def test_bad_names_are_refused_naming_the_setting(name: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as err:
        load_plugin(GROUP, name, {}, SETTING)
    assert str(err.value).startswith("spawner.backend (FLEETHUB_SPAWNER__BACKEND)")


HOOKS = "fleethub.hooks"
HOOK_SETTING = "spawner.pre_spawn_hook (FLEETHUB_SPAWNER__PRE_SPAWN_HOOK)"


def test_a_function_by_import_path_or_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_callable(HOOKS, "os.path:basename", HOOK_SETTING) is os.path.basename
    # a distribution that registers a hook (as `pip install` of a deployment's package leaves it)
    dist = tmp_path / "site_hooks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: site-hooks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fleethub.hooks]\nbase = os.path:basename\nbroken = os.path:nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_callable(HOOKS, "base", HOOK_SETTING) is os.path.basename
    with pytest.raises(ConfigError, match=r"the entry point 'broken' of fleethub\.hooks does not load") as err:
        load_callable(HOOKS, "broken", HOOK_SETTING)
    assert str(err.value).startswith(HOOK_SETTING)
    with pytest.raises(ConfigError, match=r"known: base, broken"):
        load_callable(HOOKS, "nowhere", HOOK_SETTING)


@pytest.mark.parametrize("name, named", [
    ("nowhere", "'nowhere' is neither an entry point of fleethub.hooks"),
    ("no_such_module_here:hook", "cannot import 'no_such_module_here'"),
    ("os:no_such_function", "names nothing callable"),
    ("os:sep", "names nothing callable"),
])
def test_bad_hook_names_are_refused_naming_the_setting(name: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as err:
        load_callable(HOOKS, name, HOOK_SETTING)
    assert str(err.value).startswith(HOOK_SETTING)
