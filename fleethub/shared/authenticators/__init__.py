"""Authenticators: the interface (`base`), the allow rules (`rules`), the built-ins and how one is chosen.

Built in: `password` and `dummy` (`local`), `oauth` (`oauth`), `github` (`github`), `ldap` (`ldap`) and
`pam` (`pam`). Third parties add their own through the entry point group `fleethub.authenticators`, or
`auth.authenticator = "module:Class"`: a subclass of `Authenticator` (see docs/authenticators.md).
Shared because several services use the authenticator: auth at login, the api for the credentials of a
token request and pre-spawn refreshes, spawner workers for `pre_spawn_start`.
"""

from fleethub.shared.authenticators.base import Authenticator, AuthUser, LoginRefused, Redirect
from fleethub.shared.authenticators.loading import (
    BUILTIN,
    ENTRY_POINT_GROUP,
    as_user,
    load_authenticator,
    warn_without_allow_rule,
)
from fleethub.shared.authenticators.local import DummyAuthenticator, PasswordAuthenticator
from fleethub.shared.authenticators.rules import Verdict, decide, has_allow_rule

__all__ = [
    "BUILTIN", "ENTRY_POINT_GROUP", "AuthUser", "Authenticator", "DummyAuthenticator", "LoginRefused",
    "PasswordAuthenticator", "Redirect", "Verdict", "as_user", "decide", "has_allow_rule", "load_authenticator",
    "warn_without_allow_rule",
]
