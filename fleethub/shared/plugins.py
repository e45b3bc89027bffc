"""Loading plug-ins (spawner backends, authenticators) by name from Python entry points."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from fleethub.shared.errors import ConfigError


def load_plugin(group: str, name: str, builtins: dict[str, Callable[[], type]], setting: str) -> type:
    """The class registered as `name` in entry point `group`, else a built-in one, else — when `name` is an
    import path, `package.module:Class` (as JupyterHub's `spawner_class` takes one) — the class it names.

    Args:
        group: entry point group, e.g. "fleethub.spawners".
        name: the configured name.
        builtins: name → a function importing the built-in class (lazily).
        setting: the setting and its variable, for the error message.

    Raises:
        ConfigError: nothing of that name.
    """
    for ep in entry_points(group=group):
        if ep.name == name:
            loaded: Any = ep.load()
            return loaded  # type: ignore[no-any-return]
    if name in builtins:
        return builtins[name]()
    if ":" in name:
        return _import_path(name, setting)
    known = sorted({ep.name for ep in entry_points(group=group)} | set(builtins))
    raise ConfigError(f"{setting}: unknown {group.rsplit('.', 1)[-1][:-1]} {name!r}; known: {', '.join(known)}")


def _import_path(path: str, setting: str) -> type:
    """The class at `module:attribute`.

    Raises:
        ConfigError: the module does not import, or has no such class.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{setting}: cannot import {module_name!r} (from {path!r}): {exc}") from None
    found = getattr(module, attr, None)
    if not isinstance(found, type):
        raise ConfigError(f"{setting}: {path!r} names no class (module {module_name!r} has no class {attr!r})")
    return found
