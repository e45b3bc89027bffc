"""Users' `auth_state` encrypted at rest with the keys of `auth.crypt_key` (as JupyterHub's CryptKeeper).

The `users.auth_state` column (JSONB) holds either the state itself (written while no key was set) or
`{SEALED: "<Fernet token>"}`: the state as JSON, encrypted and authenticated with the first key.
Any configured key decrypts, so keys rotate by adding a new one first; a state that no configured key
opens reads as None (logged), never as an error.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger(__name__)

SEALED = "fleethub:sealed"
"""The only key of a stored, encrypted auth_state."""


def is_sealed(stored: Any) -> bool:
    """Whether a stored auth_state is the encrypted form."""
    return isinstance(stored, dict) and len(stored) == 1 and isinstance(stored.get(SEALED), str)


class AuthStateCrypt:
    """Seals and opens auth_state with a list of 32-byte keys (the first encrypts; none: no encryption)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        """
        Args:
            keys: raw 32-byte keys (`AuthSettings.crypt_keys`), the one that encrypts first.
        """
        fernets = [Fernet(base64.urlsafe_b64encode(key)) for key in keys]
        self._first = fernets[0] if fernets else None
        self._any = MultiFernet(fernets) if fernets else None

    @property
    def enabled(self) -> bool:
        """Whether a key is configured (auth_state is encrypted when written)."""
        return self._any is not None

    def seal(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The form to store: encrypted with the first key, or `state` itself without a key."""
        if state is None or self._any is None:
            return state
        return {SEALED: self._any.encrypt(json.dumps(state).encode()).decode()}

    def open(self, stored: dict[str, Any] | None, owner: str = "?") -> dict[str, Any] | None:
        """The state of a stored auth_state; None (with a warning naming `owner`) if no key opens it."""
        if not is_sealed(stored):
            return stored
        assert stored is not None
        if self._any is None:
            log.warning("auth_state of user %r is encrypted but auth.crypt_key is not set: read as null", owner)
            return None
        try:
            state = json.loads(self._any.decrypt(stored[SEALED].encode()))
        except (InvalidToken, ValueError):
            log.warning("auth_state of user %r is encrypted with a key not in auth.crypt_key: read as null", owner)
            return None
        return state if isinstance(state, dict) else None

    def reseal(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """The stored form again if it should change (plaintext, or sealed with a key other than the
        first); None if it is fine as it is, or if no key opens it (it stays, unreadable)."""
        if stored is None or self._first is None or self._any is None:
            return None
        if not is_sealed(stored):
            return self.seal(stored)
        token = stored[SEALED].encode()
        try:
            self._first.decrypt(token)
            return None
        except InvalidToken:
            pass
        try:
            return {SEALED: self._any.rotate(token).decode()}
        except InvalidToken:
            return None
