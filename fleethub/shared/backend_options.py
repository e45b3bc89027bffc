"""What each backend takes from a spawn's `user_options`, usable by the api without the backend itself.

The api decides, before it accepts a start, which profile and backend run it and whether the backend
takes the options (`fleethub.shared.profiles.resolve` with `configure_for`): a disallowed image is a 400,
not a failed spawn. The built-in backends' rules are here; a third-party backend (entry point or import
path) may give its class a `configure(config, user_options) -> config` classmethod (raising ValueError
to refuse) and it is used the same way.

The spawn form (`/hub/spawn`) is made here too: `options_form(config, prefix=...)` gives a backend's
fields as HTML (the docker backend: a select of `allowed_images`; a third-party class may have an
`options_form` classmethod of the same signature), and `options_from_form` turns the posted fields into
`user_options`. When the form offers several profiles, each profile's fields are named
`<slug>:<option>` (two docker profiles would otherwise both post `image`); only the chosen profile's
fields are kept, with the prefix taken off.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from html import escape
from typing import TYPE_CHECKING, Any, TypeVar

from fleethub.shared.plugins import load_plugin
from fleethub.shared.profiles import PROFILE_OPTION, Configure

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


_F = TypeVar("_F")


def _builtin_or_plugin(name: str, builtin: dict[str, _F | None], attr: str) -> _F | None:
    """`builtin[name]` for a backend of ours; for a third-party backend, its class's callable `attr` (None
    when it has none).

    Raises:
        ConfigError: no backend of that name.
    """
    if name in builtin:
        return builtin[name]
    cls = load_plugin(ENTRY_POINT_GROUP, name, {}, "spawner backend")
    found = getattr(cls, attr, None)
    return found if callable(found) else None


_BUILTIN_CONFIGURE: dict[str, Configure | None] = {
    "local": None, "system-user": None, "docker": configure_docker, "batch": None,
}


def configure_for(name: str) -> Configure | None:
    """The option rules of backend `name` (None: it takes none beyond the profile).

    Raises:
        ConfigError: no backend of that name.
    """
    return _builtin_or_plugin(name, _BUILTIN_CONFIGURE, "configure")


OptionsForm = Callable[..., str]
"""`options_form(config, *, prefix="") -> html`: a backend's fields in the spawn form, each field named
`prefix + option`; "" when the backend offers nothing under these settings. Every value must be escaped."""

FIELD_SEP = ":"


def docker_options_form(config: SpawnerSettings, *, prefix: str = "") -> str:
    """A select of `docker.allowed_images` (by display name; the configured image chosen), or "" if there
    are none to choose from."""
    allowed = config.docker.allowed_images
    if not allowed:
        return ""
    options = "".join(
        f'<option value="{escape(name, quote=True)}"{" selected" if image == config.docker.image else ""}>'
        f"{escape(name)} ({escape(image)})</option>"
        for name, image in allowed.items()
    )
    name = escape(prefix + "image", quote=True)
    return f'<label>Image <select name="{name}">{options}</select></label>'


_BUILTIN_FORMS: dict[str, OptionsForm | None] = {
    "local": None, "system-user": None, "docker": docker_options_form, "batch": None,
}


def options_form_for(name: str) -> OptionsForm | None:
    """The spawn-form fields of backend `name` (None: it offers none); a third-party backend's class
    gives them with an `options_form` classmethod.

    Raises:
        ConfigError: no backend of that name.
    """
    return _builtin_or_plugin(name, _BUILTIN_FORMS, "options_form")


def field_prefix(slug: str) -> str:
    """How the fields of profile `slug` are named in a form offering several profiles."""
    return f"{slug}{FIELD_SEP}"


def options_from_form(fields: Mapping[str, list[str]], *, profiles: Collection[str],
                      default: str) -> dict[str, Any]:
    """`user_options` of a posted spawn form: `profile` and the chosen profile's fields.

    A field posted once becomes a string, one posted several times a list of strings (JupyterHub's
    default `options_from_form` keeps every field a list; a string is what the REST API's clients send
    and what the backends' rules expect). Fields named `_...` (the XSRF token) are not options; a field
    `<slug>:<option>` of another profile than the chosen one (`profile`, else `default`) is dropped.
    """
    chosen = fields.get(PROFILE_OPTION) or [""]
    slug = chosen[0] or default
    options: dict[str, Any] = {}
    for key, values in fields.items():
        if key.startswith("_") or not values:
            continue
        owner, sep, option = key.partition(FIELD_SEP)
        if sep and owner in profiles:
            if owner != slug or not option:
                continue
            key = option
        options[key] = values[0] if len(values) == 1 else list(values)
    return options
