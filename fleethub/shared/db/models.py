"""The ORM tables. Each table has one writing service, named in its docstring; others only read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fleethub.shared.lifecycle import DesiredState


class Base(DeclarativeBase):
    """Declarative base of every fleethub table."""


TZ = DateTime(timezone=True)


class User(Base):
    """A hub user (written by auth and api)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    last_activity: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    auth_state: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    auth_refreshed: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    """When the user's authentication was last checked: at login and at each `refresh_user` (revision 0009)."""


# in the order GET /users?sort=last_activity reads it (either way), so a page needs no sort
Index("ix_users_last_activity", User.last_activity.asc().nulls_first(), User.id)


class Group(Base):
    """A group of users (written by api): members inherit its roles and shares."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class GroupMember(Base):
    """A user's membership of a group (written by api)."""

    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class HubServiceRow(Base):
    """A service known to the hub (written by api): synced from `[[services]]` or created at run time."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    from_config: Mapped[bool] = mapped_column(Boolean, default=False)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    oauth_client_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    oauth_redirect_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    oauth_no_confirm: Mapped[bool] = mapped_column(Boolean, default=False)
    # runtime services: what their OAuth clients' tokens may carry beyond the defaults (config ones: settings)
    oauth_client_allowed_scopes: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    display: Mapped[bool] = mapped_column(Boolean, default=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class Role(Base):
    """A custom role (written by api): from `[[roles]]` (`from_config`) or created through the API."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    from_config: Mapped[bool] = mapped_column(Boolean, default=False)


class UserRole(Base):
    """A role granted to a user (written by api)."""

    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True)


class GroupRole(Base):
    """A role granted to a group's members (written by api)."""

    __tablename__ = "group_roles"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True)


class ServiceRole(Base):
    """A role granted to a service (written by api)."""

    __tablename__ = "service_roles"

    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True)


class Account(Base):
    """A password account of the `password` authenticator (written by auth): it belongs to a user row,
    follows it through a rename and goes with it on delete."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    approved: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class LoginThrottle(Base):
    """Recent failed password attempts of one user name or one client address (written by auth and api,
    the two services that check passwords): every replica reads and counts in the same rows."""

    __tablename__ = "login_throttle"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "user" or "client"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_attempt: Mapped[datetime] = mapped_column(TZ, server_default=func.now(), index=True)
    blocked_until: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class LoginSession(Base):
    """A browser login (written by auth): the cookie holds a random value, the row its hash."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(TZ)


# the kind of a service's own API token (configured, derived for a managed service, or given at run time)
CONFIG_TOKEN_KIND = "config"


class ApiToken(Base):
    """An API token of a user or a service (written by api and auth); only its SHA-256 hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True,
                                                   nullable=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="api", server_default="api")
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    spawn_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_activity: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # the OAuth client it was issued to


class OAuthCode(Base):
    """A single-use OAuth authorization code (written and consumed by auth); only its hash is stored."""

    __tablename__ = "oauth_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(1024))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(TZ, index=True)


class Server(Base):
    """A server's desired state (written by api; the culler only requests stops, through `lifecycle.transition`):
    which spawn should run, with what options."""

    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    desired: Mapped[str] = mapped_column(String(16), default=DesiredState.STOPPED,
                                         server_default=DesiredState.STOPPED, index=True)
    spawn_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    user_options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    requested_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_activity: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    backend: Mapped[str] = mapped_column(String(255), default="", server_default="")
    """The backend of the spawn (its profile's), set by a start; its stop goes to that backend's workers."""


class Share(Base):
    """A server shared with a user or a group (written by api): `scopes` on that one server."""

    __tablename__ = "shares"
    __table_args__ = (UniqueConstraint("server_id", "user_id"), UniqueConstraint("server_id", "group_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True,
                                                 nullable=True)
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class ShareCode(Base):
    """An invitation to share a server (written by api); only the code's hash is stored."""

    __tablename__ = "share_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(TZ, index=True)
    exchange_count: Mapped[int] = mapped_column(Integer, default=0)
    last_exchanged_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)


class ServerState(Base):
    """A server's actual state (written by spawner): status, where it runs, its backend state and lease.

    Keyed by names rather than by `servers.id` so a stop can finish after the user row is deleted.
    """

    __tablename__ = "server_states"
    __table_args__ = (Index("ix_server_states_lease", "status", "lease_expires"),)

    user_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    server_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    spawn_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | running | stopping | stopped | failed
    backend: Mapped[str] = mapped_column(String(255), default="", server_default="")
    """The backend running the spawn: only its workers adopt the row."""
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    target: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    started: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    stopped: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    updated: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class OutboxMessage(Base):
    """A message committed with the state change it announces, published by the outbox relay."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "origin", "id", postgresql_where="published_at IS NULL"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # cmd | evt
    # the service whose relay publishes it (its NATS identity may publish the subject; no other relay claims it)
    origin: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)


class HubSecret(Base):
    """Hub-wide generated secrets (written by `fleethub migrate`)."""

    __tablename__ = "hub_secrets"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DeadLetterRow(Base):
    """A message a consumer gave up on, with why (written by every service that consumes, through
    `fleethub.shared.deadletters`); the body is kept as bytes, never rendered unescaped."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("stream", "stream_seq", "consumer", name="uq_dead_letters_message"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    stream_seq: Mapped[int] = mapped_column(BigInteger)
    subject: Mapped[str] = mapped_column(Text)
    num_delivered: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(TZ, server_default=func.now(), index=True)
