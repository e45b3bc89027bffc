"""The authenticator interface: what a login method implements, and the user model it returns.

Two kinds of login share it (JupyterHub's Authenticator model, our own code):

- **form logins** (`password`, `ldap`, `pam`, `dummy`): the hub's login page posts a user name and a
  password, and `authenticate()` answers with the user, or None;
- **redirect logins** (`oauth`, `github`): the login page shows a "Sign in with …" button leading to
  `/hub/oauth_login`, which asks `authorize_url()` where to send the browser; the provider sends it back
  to `/hub/oauth_callback`, where `callback()` turns the provider's answer into the user. The hub keeps the
  `state` it generated and whatever `authorize_url()` asked it to keep (PKCE verifier, nonce) in a signed,
  short-lived, HttpOnly cookie, and checks `state` before `callback()` is called.

Whatever the kind, the answer is an `AuthUser`. The hub then runs `auth.post_auth_hook`, the allow rules
(`fleethub.shared.authenticators.rules`), records the login, stores `auth_state` (encrypted) and — with
`auth.manage_groups` — the user's groups. Refreshing (`refresh_user`) runs in the background every
`auth.auth_refresh_age` and, with `auth.refresh_pre_spawn`, before a spawn. `pre_spawn_start` runs in the
spawner worker, with the user's auth_state, before the backend plans the server.

Authenticators are constructed once per process with the settings (every service may construct one: auth
for logins, the api for a token request with credentials and pre-spawn refreshes, spawner workers for
`pre_spawn_start`), so the constructor must not do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.errors import BadRequest
from fleethub.shared.names import normalize_username
from fleethub.shared.settings import ServiceSettings


@dataclass(frozen=True)
class AuthUser:
    """Who logged in, as the authenticator knows them."""

    name: str
    """The hub user name (normalized: `normalize_name`)."""
    admin: bool | None = None
    """True/False: the authenticator decided (e.g. from admin groups); None: leave the user's flag as it is
    (`auth.admin_users` still makes an admin)."""
    groups: list[str] | None = None
    """The user's groups at the provider (checked against allowed/admin groups; the hub groups with
    `auth.manage_groups`); None: the authenticator does not know groups."""
    auth_state: dict[str, Any] | None = None
    """What to keep of the login (tokens, attributes), JSON; stored encrypted with `auth.enable_auth_state`.
    None: keep what is stored."""
    allowed: bool | None = None
    """The authenticator's own allow rule (an approved password account, a GitHub organization): True lets
    the user in even without a hub-wide allow rule; None: no opinion. The block list still wins."""

    def with_(self, **changes: Any) -> AuthUser:
        """A copy with `changes` applied."""
        return replace(self, **changes)


class LoginRefused(Exception):
    """A login that must not go on, with the message shown to the user (on the login page, or the error
    page of a redirect login): a provider error, a state mismatch, a failed ID-token check."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Redirect:
    """Where `authorize_url` sends the browser, and what the hub must keep until the callback."""

    url: str
    keep: dict[str, str] = field(default_factory=dict)
    """Strings the callback needs (PKCE verifier, nonce): kept in the signed state cookie, never in a URL."""


class Authenticator:
    """Base class of every authenticator: subclasses implement `authenticate` (form logins) or
    `authorize_url` and `callback` (redirect logins); the rest has working defaults."""

    name: ClassVar[str] = ""
    """The name `auth.authenticator` uses (and the UserLoggedIn event reports)."""
    stored_names: ClassVar[bool] = False
    """Whether the names `authenticate` answers are the user rows' own (taken as they are, even a name an
    older release stored unnormalized), rather than names to normalize."""
    login_service: str = ""
    """Non-empty for redirect logins: the login page's button says "Sign in with <login_service>" (an instance
    may set its own from its settings)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    @property
    def grants_access(self) -> bool:
        """Whether the authenticator has an allow rule of its own (`AuthUser.allowed`), so that a hub without
        allowed_users or allow_all still lets people in (password accounts, GitHub organizations)."""
        return False

    def default_allow_all(self) -> bool:
        """`auth.allow_all` when it is not set: false (JupyterHub 5: nobody without an allow rule)."""
        return False

    @property
    def redirects(self) -> bool:
        """Whether logins go through another site (`authorize_url`/`callback`) rather than the form."""
        return bool(self.login_service)

    @property
    def allowed_groups(self) -> list[str]:
        """Groups whose members may log in: `auth.allowed_groups` (an authenticator adds its section's)."""
        return list(self.settings.auth.allowed_groups)

    @property
    def admin_groups(self) -> list[str]:
        """Groups whose members are admins: `auth.admin_groups` (an authenticator adds its section's)."""
        return list(self.settings.auth.admin_groups)

    def normalize_name(self, username: str) -> str | None:
        """The hub user name for `username` (NFKC, lowercase, checked); None if it cannot be one."""
        try:
            return normalize_username(username)
        except BadRequest:
            return None

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | str | None:
        """A form login: the user if `password` is right for `username`, else None (or raise `LoginRefused`
        with a message for the user). `session` is the hub's database transaction (the password
        authenticator locks the account's row in it); others ignore it. A str is taken as `AuthUser(name)`."""
        raise LoginRefused(f"the {self.name} authenticator does not take a user name and password", 400)

    async def authorize_url(self, callback_url: str, state: str) -> Redirect:
        """A redirect login's first step: the provider's URL for the browser, carrying `state` and
        `callback_url`, and what to keep for `callback`."""
        raise LoginRefused(f"the {self.name} authenticator logs in with a user name and password", 400)

    async def callback(self, params: Mapping[str, str], kept: Mapping[str, str], callback_url: str) -> AuthUser | None:
        """A redirect login's second step: the provider's answer (the callback's query parameters, `state`
        already checked) and what `authorize_url` kept → the user, or None / `LoginRefused`."""
        raise LoginRefused(f"the {self.name} authenticator logs in with a user name and password", 400)

    async def refresh_user(self, user: AuthUser) -> AuthUser | bool:
        """Whether `user`'s authentication still holds (`user.auth_state` is the stored state, decrypted):
        True (nothing changed), an updated `AuthUser` (new tokens, groups, admin), or False (the user must
        log in again: their login sessions end)."""
        return True

    async def pre_spawn_start(self, user: AuthUser, spec: Any) -> Any:
        """In the spawner worker, before the backend plans the server: `spec` is the spawn's `ServerSpec`
        (fleethub.services.spawner.backends); return a changed one (`dataclasses.replace(spec, env=...)`, e.g.
        from `user.auth_state`) or None to leave it. An exception fails the spawn with its message."""
        return None

    async def logged_in(self, name: str) -> None:
        """After a login of `name` was recorded (the auth service, form and redirect logins alike): what the
        authenticator does when a login session begins (PAM: open a session). Errors are logged; the login
        stands."""

    async def logged_out(self, name: str) -> None:
        """After `/hub/logout` ended one of `name`'s login sessions: the counterpart of `logged_in` (PAM: close
        the session). Sessions that expire, or end by a refresh or an admin, do not come here. Errors are
        logged; the logout stands."""

    async def close(self) -> None:
        """Release what the authenticator holds (HTTP clients, connections)."""
