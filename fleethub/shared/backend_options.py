"""What each backend takes from a spawn's `user_options`, usable by the api without the backend itself.

The api decides, before it accepts a start, which profile and backend run it and whether the backend
takes the options (`fleethub.shared.profiles.resolve` with `configure_for`): a disallowed image is a 400,
not a failed spawn. The built-in backends' rules are here; a third-party backend (entry point or import
path) may give its class a `configure(config, user_options) -> config` classmethod (raising ValueError
to refuse) and it is used the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fleethub.shared.plugins import load_plugin
from fleethub.shared.profiles import Configure

if TYPE_CHECKING:
    from fleethub.shared.settings import SpawnerSettings

ENTRY_POINT_GROUP = "fleethub.spawners"
BUILTIN_NAMES = ("local", "system-user", "docker", "batch")


def configure_docker(config: SpawnerSettings, user_options: Mapping[str, Any]) -> SpawnerSettings:
    """`user_options['image']` chosen among `docker.allowed_images` (by display name or image).

    Raises:
        ValueError: an image that is not allowed.
    """
    wanted = user_options.get("image")
    if wanted is None or wanted == "":
        return config
    if isinstance(wanted, list) and len(wanted) == 1:
        wanted = wanted[0]  # a form field arrives as a list of one value
    if not isinstance(wanted, str):
        raise ValueError("user_options.image must be a string")
    allowed = config.docker.allowed_images
    if wanted in allowed:
        image = allowed[wanted]
    elif wanted in allowed.values() or (not allowed and wanted == config.docker.image):
        image = wanted
    else:
        offered = ", ".join(sorted(allowed)) if allowed else config.docker.image
        raise ValueError(f"image {wanted[:128]!r} is not allowed; choose one of: {offered}")
    return config.model_copy(update={"docker": config.docker.model_copy(update={"image": image})})


_BUILTIN_CONFIGURE: dict[str, Configure | None] = {
    "local": None, "system-user": None, "docker": configure_docker, "batch": None,
}


def configure_for(name: str) -> Configure | None:
    """The option rules of backend `name` (None: it takes none beyond the profile).

    Raises:
        ConfigError: no backend of that name.
    """
    if name in _BUILTIN_CONFIGURE:
        return _BUILTIN_CONFIGURE[name]
    cls = load_plugin(ENTRY_POINT_GROUP, name, {}, "spawner backend")
    configure = getattr(cls, "configure", None)
    return configure if callable(configure) else None
