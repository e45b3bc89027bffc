"""The authenticators, moved to `fleethub.shared.authenticators` (the api checks credentials too).

This name stays because entry points installed before the move name
`fleethub.services.auth.authenticators:PasswordAuthenticator` (and `DummyAuthenticator`): an
environment keeps them until the package is reinstalled.
"""

from __future__ import annotations

from fleethub.shared.authenticators import (
    BUILTIN,
    ENTRY_POINT_GROUP,
    Authenticator,
    DummyAuthenticator,
    PasswordAuthenticator,
    allowed,
    load_authenticator,
)

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Authenticator",
    "DummyAuthenticator",
    "PasswordAuthenticator",
    "allowed",
    "load_authenticator",
]
