"""Plug-ins by name: entry points, built-ins, and import paths (`module:Class`)."""

from __future__ import annotations

import pytest

from fleethub.shared.errors import ConfigError
from fleethub.shared.plugins import load_plugin

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
