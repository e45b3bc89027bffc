"""Who is asking: API tokens, the hub login cookie, XSRF tokens and `next` URL validation.

Shared by auth (which creates sessions) and api (which reads them). Cookies follow JupyterHub's
names and paths (jupyterhub-contract.md §g); their values are random secrets whose SHA-256 is stored,
so a database leak yields no usable cookie or token.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import ApiToken, HubServiceRow, LoginSession, User
from fleethub.shared.events import utcnow
from fleethub.shared.paths import has_dot_segment
from fleethub.shared.security import hash_token, sign, verify_signature

LOGIN_COOKIE = "jupyterhub-hub-login"
SESSION_COOKIE = "jupyterhub-session-id"
XSRF_COOKIE = "_xsrf"
HUB_PATH = "/hub/"
_AUTH_RE = re.compile(r"^\s*(token|bearer)\s+(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Identity:
    """The owner of a request's credentials: a user, or (tokens only) a service.

    `user_id` is the owner's row id in its own table (`users` or `services`, per `kind`).
    """

    user_id: int
    name: str
    admin: bool
    via: str  # "token" | "cookie"
    token_id: int | None = None
    token_kind: str | None = None
    token_scopes: tuple[str, ...] = ()
    session_id: str | None = None
    spawn_id: str | None = None
    kind: str = "user"  # "user" | "service"
    client_id: str | None = None  # the OAuth client a token was issued to


def token_from_header(value: str | None) -> str | None:
    """The token of an `Authorization: token|bearer <t>` header (scheme case-insensitive)."""
    if not value:
        return None
    m = _AUTH_RE.match(value)
    return m.group(2) if m else None


class TokenCache:
    """A short-lived per-process cache of token → identity, sparing a database round trip per request.

    Entries live `ttl` seconds, so a token revoked (or a user deleted) through another replica keeps
    working here only until that replica's `token.revoked` / `user.deleted` event arrives (milliseconds),
    and at most `ttl` seconds if the event is lost (core subscriptions are at-most-once).
    """

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Identity | None]] = {}

    def get(self, hashed: str) -> tuple[bool, Identity | None]:
        """(hit, identity): a hit may be a cached "no such token" (None)."""
        hit = self._entries.get(hashed)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, hashed: str, identity: Identity | None) -> None:
        """Remember `identity` (or its absence) for `ttl` seconds; bounded by `max_entries`."""
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[hashed] = (time.monotonic() + self.ttl, identity)

    def drop(self, hashed: str) -> None:
        """Forget one token (after revoking it)."""
        self._entries.pop(hashed, None)

    def drop_token(self, token_id: int) -> None:
        """Forget a token known only by its id (a `token.revoked` event from another replica)."""
        for key, (_, ident) in list(self._entries.items()):
            if ident is not None and ident.token_id == token_id:
                del self._entries[key]

    def drop_user_named(self, name: str, kind: str = "user") -> None:
        """Forget every cached token of the user (or service) `name` (deleted, renamed, admin changed)."""
        for key, (_, ident) in list(self._entries.items()):
            if ident is not None and ident.name == name and ident.kind == kind:
                del self._entries[key]

    def clear(self) -> None:
        """Forget everything (after a bus reconnect: events may have been missed)."""
        self._entries.clear()


async def identity_from_token(session: AsyncSession, token: str, cache: TokenCache | None = None) -> Identity | None:
    """The identity of an API token, or None if it is unknown or expired."""
    hashed = hash_token(token)
    if cache is not None:
        hit, ident = cache.get(hashed)
        if hit:
            return ident
    row = (
        await session.execute(
            select(ApiToken, User, HubServiceRow)
            .outerjoin(User, User.id == ApiToken.user_id)
            .outerjoin(HubServiceRow, HubServiceRow.id == ApiToken.service_id)
            .where(ApiToken.hashed == hashed)
        )
    ).first()
    ident = None
    if row is not None:
        tok, user, svc = row
        owner = user if user is not None else svc
        if owner is not None and (tok.expires_at is None or tok.expires_at > utcnow()):
            ident = Identity(owner.id, owner.name, owner.admin, "token", tok.id, tok.kind, tuple(tok.scopes or ()),
                             tok.session_id, tok.spawn_id, "user" if user is not None else "service",
                             tok.client_id)
    if cache is not None:
        cache.put(hashed, ident)
    return ident


async def identity_from_cookie(session: AsyncSession, cookie: str | None) -> Identity | None:
    """The identity of a hub login cookie, or None."""
    if not cookie or len(cookie) > 200:
        return None
    row = (
        await session.execute(
            select(LoginSession, User).join(User, User.id == LoginSession.user_id)
            .where(LoginSession.hashed == hash_token(cookie))
        )
    ).first()
    if row is None:
        return None
    sess, user = row
    if sess.expires_at <= utcnow():
        return None
    return Identity(user.id, user.name, user.admin, "cookie", session_id=sess.session_id)


async def create_login_session(session: AsyncSession, user_id: int, max_age_days: float) -> tuple[str, str]:
    """A new login session: returns (cookie value, session id). Only the cookie's hash is stored.

    The session id is always new, never the browser's `jupyterhub-session-id` cookie: that cookie is
    unsigned, and XSRF tokens are bound to the session id, so a planted value must not survive login.
    """
    cookie = secrets.token_urlsafe(32)
    sid = uuid.uuid4().hex
    session.add(LoginSession(user_id=user_id, hashed=hash_token(cookie), session_id=sid,
                             expires_at=utcnow() + timedelta(days=max_age_days)))
    return cookie, sid


async def end_login_session(session: AsyncSession, cookie: str | None) -> tuple[int, str] | None:
    """Delete the session of `cookie`; returns its (user id, session id) if there was one."""
    if not cookie or len(cookie) > 200:
        return None
    row = (await session.execute(
        delete(LoginSession).where(LoginSession.hashed == hash_token(cookie))
        .returning(LoginSession.user_id, LoginSession.session_id)
    )).first()
    return (int(row[0]), str(row[1])) if row else None


def secure_cookies(public_url: str) -> bool:
    """Whether cookies get the Secure flag: the hub is served over https."""
    return public_url.lower().startswith("https://")


def set_login_cookies(response: Response, cookie: str, session_id: str, max_age_days: float, secure: bool) -> None:
    """Set the hub login cookie (path /hub/) and the session-id cookie (path /)."""
    max_age = int(max_age_days * 86400)
    response.set_cookie(LOGIN_COOKIE, cookie, max_age=max_age, path=HUB_PATH, httponly=True, secure=secure,
                        samesite="lax")
    response.set_cookie(SESSION_COOKIE, session_id, path="/", httponly=True, secure=secure, samesite="lax")


def clear_login_cookies(response: Response, secure: bool = False) -> None:
    """Remove every hub cookie (the removals carry `Secure` too on an https hub, like the cookies)."""
    response.delete_cookie(LOGIN_COOKIE, path=HUB_PATH, secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(XSRF_COOKIE, path=HUB_PATH, secure=secure, samesite="lax")


def new_xsrf(secret_key: str, session_id: str | None = None) -> str:
    """A signed XSRF token `<nonce>.<hmac>`, bound to the login session (if any).

    The same value goes in the `_xsrf` cookie and in forms. Binding it to the session id (which only
    the server knows to belong to this login) means a token obtained in another session, or planted
    by cookie tossing, does not pass for this one.
    """
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{sign(secret_key, 'xsrf', _xsrf_message(session_id, nonce))}"


def xsrf_valid(secret_key: str, cookie: str | None, submitted: str | None, session_id: str | None = None) -> bool:
    """Whether the submitted token equals the cookie and carries our signature for `session_id`."""
    if not cookie or not submitted or len(cookie) > 200 or len(submitted) > 200:
        return False
    if not secrets.compare_digest(cookie.encode(), submitted.encode()):
        return False
    nonce, _, tag = cookie.partition(".")
    return bool(nonce and tag) and verify_signature(secret_key, "xsrf", _xsrf_message(session_id, nonce), tag)


def _xsrf_message(session_id: str | None, nonce: str) -> str:
    return f"{session_id or ''}:{nonce}"


def set_xsrf_cookie(response: Response, value: str, secure: bool) -> None:
    """The XSRF cookie: readable by pages (not HttpOnly), path /hub/."""
    response.set_cookie(XSRF_COOKIE, value, path=HUB_PATH, httponly=False, secure=secure, samesite="lax")


def validate_next(next_url: str | None, public_url: str, default: str = "/hub/home") -> str:
    """A safe redirect target: a same-origin path, or `default`.

    Rejects protocol-relative URLs (`//host`, `///host`, `/\\host`), backslashes, control characters,
    other hosts, our own host followed by `//evil` (CVE-2026-33709's trick), and paths with a `.` or `..`
    segment, encoded or not (`/user/alice/%2e%2e/bob/` is bob's prefix to a browser).
    """
    if not next_url or len(next_url) > 2000:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in next_url) or "\\" in next_url:
        return default
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc:
        ours = urlsplit(public_url)
        if parts.scheme not in ("", ours.scheme) or parts.netloc != ours.netloc:
            return default
        next_url = (parts.path + (f"?{parts.query}" if parts.query else "")
                    + (f"#{parts.fragment}" if parts.fragment else ""))
        parts = urlsplit(next_url)
    if not next_url.startswith("/") or next_url.startswith("//") or parts.netloc or has_dot_segment(parts.path):
        return default
    return next_url
