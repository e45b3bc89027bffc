"""Secrets: API token generation and hashing, password hashing, HMAC signing and derived tokens.

Generated tokens carry 128 random bits, so one SHA-256 digest is a safe index for them (a fast,
unsalted hash is fine for high-entropy secrets). Passwords are low-entropy: scrypt, salted, slow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_PREFIX = "scrypt"


def new_token() -> str:
    """A new API token: 32 hex characters, like JupyterHub's."""
    return secrets.token_hex(16)


def hash_token(token: str) -> str:
    """The stored form of an API token (hex SHA-256); the token itself is never stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    """A salted scrypt hash, self-describing: `scrypt$n$r$p$salt$digest`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"{_SCRYPT_PREFIX}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (constant-time compare; False for a malformed hash)."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != _SCRYPT_PREFIX:
            return False
        salt = base64.urlsafe_b64decode(salt_b64)
        expected = base64.urlsafe_b64decode(digest_b64)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def sign(key: str, purpose: str, value: str) -> str:
    """An HMAC-SHA256 tag (urlsafe base64, no padding) binding `value` to `purpose` under `key`."""
    mac = hmac.new(key.encode("utf-8"), f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify_signature(key: str, purpose: str, value: str, tag: str) -> bool:
    """Constant-time check of a tag made by `sign`."""
    return hmac.compare_digest(sign(key, purpose, value), tag)


def server_token(key: str, spawn_id: str) -> str:
    """The API token of one spawn, derived from the hub key so it never travels on the bus.

    The api stores its hash when it records the spawn; the spawner derives the same token to put in
    the server's environment.
    """
    return hmac.new(key.encode("utf-8"), f"server-token\x00{spawn_id}".encode(), hashlib.sha256).hexdigest()[:32]


def service_token(key: str, name: str) -> str:
    """The API token of a hub-managed service configured without one, derived from the hub key: the api
    stores its hash at start, the spawner worker running the service derives the same value."""
    return hmac.new(key.encode("utf-8"), f"service-token\x00{name}".encode(), hashlib.sha256).hexdigest()[:32]


def service_api_token(api_token: str | None, managed: bool, key: str, name: str) -> str | None:
    """A service's token: the configured one, else a derived one for a managed service, else None."""
    if api_token is not None:
        return api_token
    return service_token(key, name) if managed else None
