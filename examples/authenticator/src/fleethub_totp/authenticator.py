"""A form login whose password is a time-based one-time code (TOTP, RFC 6238: HMAC-SHA1, 30-second steps,
six digits), checked against each user's enrolled secret.

The secrets live in a JSON file named by the setting `[auth.extra] totp_secrets_file` (environment
`FLEETHUB_AUTH__EXTRA__TOTP_SECRETS_FILE`): {"user name": "BASE32 SECRET", ...}, the
same secret the user's authenticator app was given (as a QR code). The file is read at every login, so users
are enrolled or removed without a restart; it must be readable by the auth service alone. Being in the file is
this authenticator's allow rule (`AuthUser.allowed`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticators import Authenticator, AuthUser
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

SECRETS_SETTING = "totp_secrets_file"
STEP = 30  # seconds a code lasts
DIGITS = 6
DRIFT = 1  # steps of clock difference accepted either way (a code typed just as it changed)


def totp(secret: bytes, counter: int, digits: int = DIGITS) -> str:
    """The code of `counter` (time // STEP): HOTP (RFC 4226) with dynamic truncation."""
    mac = hmac.new(secret, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    start = mac[-1] & 0x0F
    value = int.from_bytes(mac[start:start + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def _secrets(path: Path) -> dict[str, bytes]:
    """The enrolled users and their decoded secrets (a bad entry is skipped, logged without its secret)."""
    raw = json.loads(path.read_text())
    out = {}
    for name, secret in raw.items():
        try:
            text = secret.replace(" ", "").upper()
            out[name] = base64.b32decode(text + "=" * (-len(text) % 8))
        except (AttributeError, binascii.Error):
            log.warning("%s: the secret of %r is not base32: skipped", path, name)
    return out


class TotpAuthenticator(Authenticator):
    """User name plus one-time code; each code logs in once (per auth replica)."""

    name = "totp"

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        path = settings.auth.extra.get(SECRETS_SETTING)  # a third-party authenticator's own keys live there
        if not isinstance(path, str) or not path:
            raise ConfigError(f"auth.extra.{SECRETS_SETTING} (FLEETHUB_AUTH__EXTRA__{SECRETS_SETTING.upper()}) "
                              "must name the JSON file of the users' TOTP secrets")
        self._path = Path(path)
        self._last_used: dict[str, int] = {}  # replay guard: a code is spent once used

    @property
    def grants_access(self) -> bool:
        return True  # the enrolled users may log in without a hub-wide allow rule

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | None:
        name = self.normalize_name(username)
        code = password.replace(" ", "")
        if name is None or len(code) != DIGITS or not code.isdigit():
            return None
        secret = (await asyncio.to_thread(_secrets, self._path)).get(name)
        if secret is None:
            return None
        now = int(time.time()) // STEP
        for counter in range(now - DRIFT, now + DRIFT + 1):
            if hmac.compare_digest(totp(secret, counter), code):
                if counter <= self._last_used.get(name, -1):
                    return None  # this code (or a later one) was used already
                self._last_used[name] = counter
                return AuthUser(name, allowed=True)
        return None
