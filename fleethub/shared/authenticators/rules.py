"""Who may log in and who is an admin, after an authenticator has said who someone is (JupyterHub 5's rules).

In order:
1. `auth.blocked_users` never log in (whatever else says so).
2. Admin: `auth.admin_users`, or a member of an admin group (`auth.admin_groups` and the authenticator's own)
   when the authenticator knows groups — with admin groups configured, a user outside them is not an admin
   (unless listed in admin_users); otherwise the authenticator's answer, or the flag stays as it is.
3. Allowed if any of: an admin; `allow_all`; in `allowed_users`; a member of an allowed group; the
   authenticator's own rule (`AuthUser.allowed`: an approved password account, a GitHub organization);
   `allow_existing_users` and already a hub user. Nobody else: with no allow rule at all, nobody but the
   admins gets in (a warning at start says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleethub.shared.authenticators.base import Authenticator, AuthUser


@dataclass(frozen=True)
class Verdict:
    """The outcome of the rules for one login."""

    allowed: bool
    admin: bool | None
    """The admin flag to record (None: leave it as it is)."""
    reason: str
    """Why (for the log): the rule that let the user in, or why they were refused."""


def allow_all(authenticator: Authenticator) -> bool:
    """`auth.allow_all`, or the authenticator's default for it."""
    configured = authenticator.settings.auth.allow_all
    return authenticator.default_allow_all() if configured is None else configured


def allow_existing_users(authenticator: Authenticator) -> bool:
    """`auth.allow_existing_users`, default true exactly when `allowed_users` is set (as JupyterHub 5)."""
    a = authenticator.settings.auth
    return bool(a.allowed_users) if a.allow_existing_users is None else a.allow_existing_users


def decide(authenticator: Authenticator, user: AuthUser, *, exists: bool) -> Verdict:
    """Apply the rules to `user`; `exists`: whether the user is already in the hub's database."""
    a = authenticator.settings.auth
    name = user.name
    if name in a.blocked_users:
        return Verdict(False, None, "in blocked_users")
    groups = set(user.groups or ())
    admin_groups = set(authenticator.admin_groups)
    admin = user.admin
    if name in a.admin_users:
        admin = True
    elif admin_groups and user.groups is not None:
        admin = bool(groups & admin_groups) or bool(user.admin)
    if admin:
        return Verdict(True, True, "an admin")
    for ok, why in (
        (allow_all(authenticator), "allow_all"),
        (name in a.allowed_users, "in allowed_users"),
        (bool(groups & set(authenticator.allowed_groups)), "in an allowed group"),
        (user.allowed is True, f"allowed by the {authenticator.name} authenticator"),
        (exists and allow_existing_users(authenticator), "an existing user (allow_existing_users)"),
    ):
        if ok:
            return Verdict(True, admin, why)
    return Verdict(False, admin, "no allow rule lets them in")


def has_allow_rule(authenticator: Authenticator) -> bool:
    """Whether any rule can let a non-admin in (else a warning at start: nobody but the admins logs in)."""
    a = authenticator.settings.auth
    return bool(allow_all(authenticator) or a.allowed_users or authenticator.allowed_groups
                or allow_existing_users(authenticator) or authenticator.grants_access)
