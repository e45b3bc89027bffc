"""The one error hierarchy of fleethub; HTTP services render it in one place (`fleethub.shared.http`)."""

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


class BusError(FleethubError):
    """NATS or JetStream did not do what was asked (after retries)."""

    status = 503
