"""docs/authenticators.md lists every field of the built-in authenticators' sections, under its section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from fleethub.shared.authenticator_settings import (
    GitHubSettings,
    LdapSettings,
    OAuthSettings,
    PamSettings,
    PasswordSettings,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "authenticators.md"


def _section(name: str) -> str:
    text = DOC.read_text()
    start = text.index(f"### `{name}`")
    end = text.find("\n### ", start + 1)
    return text[start:end if end != -1 else len(text)]


@pytest.mark.parametrize(("name", "section", "inherited"), [
    ("oauth", OAuthSettings, None), ("github", GitHubSettings, OAuthSettings), ("ldap", LdapSettings, None),
    ("pam", PamSettings, None), ("password", PasswordSettings, None),
])
def test_every_section_field_is_in_the_table(name: str, section: type[BaseModel],
                                              inherited: type[BaseModel] | None) -> None:
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", _section(name), re.MULTILINE))
    fields = set(section.model_fields) - set(inherited.model_fields if inherited else ())
    assert fields - listed == set(), f"add these fields of [auth.{name}] to docs/authenticators.md"
    assert listed - set(section.model_fields) == set(), f"the table of [auth.{name}] names fields it does not have"
