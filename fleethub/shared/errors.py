"""The one error hierarchy of fleethub; HTTP services render it in one place (`fleethub.shared.http`).

    FleethubError (500)
    ├── ConfigError, NotMigrated
    ├── BadRequest (400), Forbidden (403), NotFound (404), Conflict (409)
    ├── TooManyRequests (429, Retry-After)
    └── Unavailable (503, Retry-After): a dependency is away; the client may retry
        ├── DatabaseUnavailable: PostgreSQL refused or lost the connection
        └── BusError: NATS or JetStream did not do what was asked
"""

from __future__ import annotations


class FleethubError(Exception):
    """Base of every error fleethub raises on purpose.

    Attributes:
        status: the HTTP status an HTTP service answers with.
        message: text safe to show to a client (never a secret).
    """

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class ConfigError(FleethubError):
    """The configuration is invalid; the message names the setting."""


class BadRequest(FleethubError):
    """The client sent something invalid (400)."""

    status = 400


class Forbidden(FleethubError):
    """Missing credentials or insufficient scopes (403, as JupyterHub answers)."""

    status = 403


class NotFound(FleethubError):
    """The resource does not exist, or the caller may not know it does (404)."""

    status = 404


class Conflict(FleethubError):
    """The resource already exists (409)."""

    status = 409


class TooManyRequests(FleethubError):
    """A spawn limit was reached (429); `retry_after` seconds go in the `Retry-After` header."""

    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotMigrated(FleethubError):
    """The database schema is not at the version this code needs."""


class Unavailable(FleethubError):
    """A dependency (PostgreSQL, NATS) is away (503); `retry_after` seconds go in the `Retry-After` header.

    Nothing the request asked for was done (or it was done whole, for a commit that answered): the client
    may send the same request again.
    """

    status = 503
    retry_after = 2


class DatabaseUnavailable(Unavailable):
    """PostgreSQL refused or lost the connection (restarting, failing over, unreachable, pool exhausted)."""

    def __init__(self, message: str = "The database is unavailable; try again in a few seconds") -> None:
        super().__init__(message)


class BusError(Unavailable):
    """NATS or JetStream did not do what was asked (after retries)."""
