"""Loading plug-ins by name from Python entry points or import paths: classes (spawner backends,
authenticators) and functions (the spawner's `pre_spawn_hook` / `post_stop_hook`)."""

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


def load_callable(group: str, name: str, setting: str) -> Callable[..., Any]:
    """The function registered as `name` in entry point `group`, else — when `name` is an import path,
    `package.module:function` — the callable it names.

    Args:
        group: entry point group, e.g. "fleethub.hooks".
        name: the configured name.
        setting: the setting and its variable, for the error message.

    Raises:
        ConfigError: nothing of that name, or what it names cannot be called.
    """
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                loaded: Any = ep.load()
            except Exception as exc:
                raise ConfigError(f"{setting}: the entry point {name!r} of {group} does not load: {exc}") from None
            if not callable(loaded):
                raise ConfigError(f"{setting}: the entry point {name!r} of {group} is not callable")
            return loaded  # type: ignore[no-any-return]
    if ":" in name:
        found = _import_attr(name, setting)
        if not callable(found):
            raise ConfigError(f"{setting}: {name!r} names nothing callable")
        return found  # type: ignore[no-any-return]
    known = sorted(ep.name for ep in entry_points(group=group))
    raise ConfigError(f"{setting}: {name!r} is neither an entry point of {group} (known: "
                      f"{', '.join(known) or 'none'}) nor an import path 'module:function'")


def _import_attr(path: str, setting: str) -> Any:
    """The attribute at `module:attribute` (None if the module has none).

    Raises:
        ConfigError: the module does not import.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{setting}: cannot import {module_name!r} (from {path!r}): {exc}") from None
    return getattr(module, attr, None)


def _import_path(path: str, setting: str) -> type:
    """The class at `module:attribute`.

    Raises:
        ConfigError: the module does not import, or has no such class.
    """
    found = _import_attr(path, setting)
    if not isinstance(found, type):
        module_name, _, attr = path.partition(":")
        raise ConfigError(f"{setting}: {path!r} names no class (module {module_name!r} has no class {attr!r})")
    return found
