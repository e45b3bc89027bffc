"""The `Secret` setting type: masked in every JSON dump except the one handed to a child process."""

from __future__ import annotations

from typing import Annotated

from pydantic import PlainSerializer, SecretStr, SerializationInfo

_REVEAL_SECRETS = "reveal_secrets"  # serialization context key: only `settings_json` sets it


def _secret_json(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context
    if isinstance(context, dict) and context.get(_REVEAL_SECRETS):
        return value.get_secret_value()
    return str(value)  # masked, as pydantic dumps a SecretStr


Secret = Annotated[SecretStr, PlainSerializer(_secret_json, when_used="json")]
"""A `SecretStr` masked in every JSON dump except the one `settings_json` makes for a child process.

Every secret setting has this type: a plain `SecretStr` would reach the child masked (the round-trip
test in tests/unit/shared/test_settings.py fails for it).
"""


