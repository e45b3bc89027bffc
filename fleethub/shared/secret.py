"""The `Secret` setting type (masked in every JSON dump except the one handed to a child process), and how
an `auth.crypt_key` key is read."""

from __future__ import annotations

import base64
import binascii
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


def crypt_key_bytes(text: str) -> bytes:
    """The 32 raw bytes of an `auth.crypt_key` key, given as JupyterHub accepts it: base64 (44 characters,
    URL-safe or standard alphabet), hex (64 characters), or 32 characters as they are.

    Raises:
        ValueError: not 32 bytes in any of those forms (the message never repeats the key).
    """
    text = text.strip()
    raw = text.encode()
    if len(raw) == 44:
        try:
            decoded = base64.b64decode(raw.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
        except binascii.Error:
            decoded = b""
        if len(decoded) == 32:
            return decoded
    elif len(raw) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if len(raw) != 32:
        raise ValueError("is not 32 bytes, base64 (44 characters) or hex (64 characters) encoded")
    return raw
