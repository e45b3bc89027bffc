"""The rules a new password must pass (`[auth.password]`), and generated passwords that pass them.

Every place that sets a password checks them: sign-up, the REST API, `fleethub passwd`, the change-password
page, the initial-password file and `fleethub up`'s generated first password. Checking an existing password
(a login) does not: a rule made stricter later must not lock anyone out.
"""

from __future__ import annotations

import functools
import secrets
from importlib import resources

from fleethub.shared.authenticator_settings import PasswordSettings
from fleethub.shared.errors import BadRequest

MAX_PASSWORD_LENGTH = 1000
COMMON_PASSWORDS_FILE = "common_passwords.txt"
_GENERATED_LENGTH = 20


@functools.cache
def common_passwords() -> frozenset[str]:
    """The packaged list of common passwords (lower case), read once on first use."""
    text = resources.files("fleethub.shared").joinpath(COMMON_PASSWORDS_FILE).read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def check_password_rules(password: str, username: str, rules: PasswordSettings) -> None:
    """Refuse a new password that breaks a rule; the message says which (and never shows the password).

    Raises:
        BadRequest: too short or too long, on the common-password list, or the user's own name.
    """
    if len(password) < rules.minimum_password_length:
        raise BadRequest(f"Password must be at least {rules.minimum_password_length} characters long.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadRequest(f"Password must be at most {MAX_PASSWORD_LENGTH} characters long.")
    if password.strip().lower() == username.strip().lower():
        raise BadRequest("Password must not be the user name.")
    if rules.check_common_password and password.lower() in common_passwords():
        raise BadRequest("Password is too common (it is on the list of the most used passwords); choose another.")


def generate_password(rules: PasswordSettings) -> str:
    """A random password (URL-safe characters) that passes `rules` for any user name."""
    length = max(_GENERATED_LENGTH, rules.minimum_password_length)
    return secrets.token_urlsafe(length)[:length]
