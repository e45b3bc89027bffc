"""The spawn form's content: the profiles offered (`[[spawner.profiles]]`, or the implicit one) with each
one's backend fields, and the `user_options` a posted form makes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from fleethub.shared.backend_options import field_prefix, options_form_for, options_from_form
from fleethub.shared.errors import ConfigError
from fleethub.shared.profiles import backend_of, default_profile, profiles_of, with_overrides
from fleethub.shared.settings import SpawnerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileChoice:
    """One profile of the spawn form (`spawn.html`); `fields` is its backend's HTML."""

    slug: str
    display_name: str
    description: str
    checked: bool
    fields: Markup = field(default_factory=Markup)


def _fields(spawner: SpawnerSettings, backend: str, overrides: Mapping[str, Any], prefix: str) -> Markup:
    try:
        config = with_overrides(spawner, overrides)
        form = options_form_for(backend)
        # the one HTML the template does not escape: a backend's `options_form` escapes its own values
        # (its contract, `OptionsForm`), and only it knows which of its markup is markup
        return Markup(form(config, prefix=prefix)) if form is not None else Markup("")
    except (ValueError, ConfigError) as exc:
        # the start of this profile says what is wrong (resolve raises it); the form still offers the others
        log.warning("no options form for backend %r: %s", backend, exc)
        return Markup("")


def offered(spawner: SpawnerSettings, chosen: str | None = None) -> list[ProfileChoice]:
    """What the form offers, `chosen` (a slug, default the default profile's) checked.

    One profile: its fields are named as the options (`image`, as DockerSpawner's form names it); several:
    `<slug>:<option>` (`options_from_form` keeps the chosen profile's)."""
    profiles = profiles_of(spawner)
    several = len(profiles) > 1
    checked = chosen if chosen in {p.key() for p in profiles} else default_profile(spawner).key()
    return [
        ProfileChoice(
            slug=p.key(), display_name=p.display_name, description=p.description, checked=p.key() == checked,
            fields=_fields(spawner, backend_of(spawner, p), p.overrides, field_prefix(p.key()) if several else ""),
        )
        for p in profiles
    ]


def offers_options(spawner: SpawnerSettings) -> bool:
    """Whether there is anything to choose (several profiles, or fields): the home page's "Start" then
    leads to the form instead of starting at once."""
    choices = offered(spawner)
    return len(choices) > 1 or any(c.fields for c in choices)


def user_options_of(spawner: SpawnerSettings, fields: Mapping[str, list[str]]) -> dict[str, Any]:
    """The `user_options` of a posted form (`options_from_form` with this hub's profiles)."""
    slugs = [p.key() for p in profiles_of(spawner)]
    return options_from_form(fields, profiles=slugs if len(slugs) > 1 else (), default=default_profile(spawner).key())
