"""Loading plug-ins (spawner backends, authenticators) by name from Python entry points."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from fleethub.shared.errors import ConfigError


def load_plugin(group: str, name: str, builtins: dict[str, Callable[[], type]], setting: str) -> type:
    """The class registered as `name` in entry point `group`, else a built-in one.

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
    known = sorted({ep.name for ep in entry_points(group=group)} | set(builtins))
    raise ConfigError(f"{setting}: unknown {group.rsplit('.', 1)[-1][:-1]} {name!r}; known: {', '.join(known)}")
