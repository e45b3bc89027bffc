"""Which backend, with which settings, runs a spawn: profiles (`[[spawner.profiles]]`) and `user_options`.

The api resolves a start's `user_options` here (an unknown profile or an option the backend refuses is a
400 before anything is written) and records the backend with the spawn; the worker that carries the
spawn out resolves the same options again to the same effective `[spawner]` settings (the profile's
overrides, then what the backend takes from the options, e.g. a chosen image).

With no profiles configured there is one implicit profile, `default`, on `spawner.backend`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fleethub.shared.backend_settings import Profile
from fleethub.shared.errors import BadRequest, ConfigError

if TYPE_CHECKING:
    from fleethub.shared.settings import SpawnerSettings

PROFILE_OPTION = "profile"
MAX_OPTIONS_BYTES = 64 * 1024
"""The largest `user_options` (as JSON) a start takes: its spawn command must stay well within the bus's
command limit (256 KiB) and NATS's max_payload (1 MiB), or it would never be carried out."""
IMPLICIT = "default"


@dataclass(frozen=True)
class Choice:
    """A resolved spawn: its profile's slug, backend name, effective `[spawner]` settings and the options
    as recorded (with the profile named)."""

    profile: str
    backend: str
    config: SpawnerSettings
    user_options: dict[str, Any]


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def with_overrides(spawner: SpawnerSettings, overrides: Mapping[str, Any]) -> SpawnerSettings:
    """`spawner` with `overrides` merged in (sections merged key by key), validated.

    Raises:
        ValueError: the result is not valid settings (the message names the setting).
    """
    if not overrides:
        return spawner
    data = _merge(spawner.model_dump(mode="python"), overrides)
    data["profiles"] = []  # the effective settings of one profile hold no profiles
    try:
        return type(spawner).model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None


def profiles_of(spawner: SpawnerSettings) -> list[Profile]:
    """The configured profiles, or the implicit one."""
    if spawner.profiles:
        return list(spawner.profiles)
    return [Profile(display_name="Default", slug=IMPLICIT, default=True, backend=spawner.backend)]


def default_profile(spawner: SpawnerSettings) -> Profile:
    profiles = profiles_of(spawner)
    return next((p for p in profiles if p.default), profiles[0])


def backend_of(spawner: SpawnerSettings, profile: Profile) -> str:
    return profile.backend or spawner.backend


def backend_names(spawner: SpawnerSettings) -> list[str]:
    """Every backend the settings name (spawner.backend first, then the profiles'), each once."""
    names = [spawner.backend, *(backend_of(spawner, p) for p in spawner.profiles)]
    return list(dict.fromkeys(names))


def served_backends(spawner: SpawnerSettings) -> list[str]:
    """The backends one worker process serves: `spawner.backends`, or every backend named."""
    return list(dict.fromkeys(spawner.backends)) if spawner.backends else backend_names(spawner)


Configure = Callable[["SpawnerSettings", Mapping[str, Any]], "SpawnerSettings"]


def resolve(spawner: SpawnerSettings, user_options: Mapping[str, Any],
            configure_for: Callable[[str], Configure | None] | None = None) -> Choice:
    """The choice `user_options` makes: its profile (`user_options['profile']`, else the default one),
    the profile's backend and settings, then what that backend takes from the options.

    `configure_for(backend)` gives the backend class's `configure` (None: it takes no options).

    Raises:
        BadRequest: an unknown profile, options the backend refuses, or options larger than
            `MAX_OPTIONS_BYTES`.
        ConfigError: a profile's overrides are not valid settings.
    """
    size = len(json.dumps(user_options, ensure_ascii=False, default=str).encode())
    if size > MAX_OPTIONS_BYTES:  # the command carrying them must fit the bus (COMMAND_MAX_BYTES, max_payload)
        raise BadRequest(f"user_options too large: {size} bytes (the limit is {MAX_OPTIONS_BYTES})")
    profiles = profiles_of(spawner)
    # with no profiles configured, `profile` is an option like any other (a client's own), as JupyterHub's
    # spawners take options they do not know
    wanted = user_options.get(PROFILE_OPTION) if spawner.profiles else None
    if wanted is None or wanted == "":
        profile = default_profile(spawner)
    else:
        if not isinstance(wanted, str):
            raise BadRequest("user_options.profile must be a string")
        found = [p for p in profiles if p.key() == wanted]
        if not found:
            known = ", ".join(p.key() for p in profiles)
            raise BadRequest(f"unknown profile {wanted[:64]!r}; this hub offers: {known}")
        profile = found[0]
    try:
        config = with_overrides(spawner, profile.overrides)
    except ValueError as exc:
        raise ConfigError(f"spawner.profiles {profile.key()!r} overrides: {exc}") from None
    backend = backend_of(spawner, profile)
    configure = configure_for(backend) if configure_for is not None else None
    if configure is not None:
        try:
            config = configure(config, user_options)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    # the chosen profile is recorded with the options (its slug), so a later change of the default does not
    # change what this spawn was; with no profiles configured the options stay exactly as the client sent them
    options = {**user_options, PROFILE_OPTION: profile.key()} if spawner.profiles else dict(user_options)
    return Choice(profile=profile.key(), backend=backend, config=config, user_options=options)
