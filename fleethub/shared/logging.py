"""Logging setup for every service: plain text or one JSON object per line, secrets scrubbed from every field,
and the service, replica and request id of each record taken from the context it was logged in.

The context lives in contextvars, not in process globals, so several services hosted by one interpreter
(each in its own task tree) and concurrent requests each log as themselves: `bind_service` names the
service and replica for the current task and the tasks it starts, `request_scope` the request id for the
duration of one request or one command's handling (`fleethub.shared.request_ids`, `fleethub.shared.bus`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization / Cookie headers and their values
    (re.compile(r"(?i)(authorization|cookie|set-cookie)(['\"]?\s*[:=]\s*['\"]?)([^'\"\n,}]+)"), r"\1\2[secret]"),
    # tokens in query strings and form bodies
    (re.compile(r"(?i)([?&](?:token|auth|key|code|state|_xsrf|password|client_secret)=)[^&\s'\"]+"), r"\1[secret]"),
    # passwords in URLs: scheme://user:password@host
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@/\s]+@"), r"\1[secret]@"),
    # a NATS token in a URL: nats://token@host (the user part of a NATS URL without a password is the token)
    (re.compile(r"(?i)\b((?:nats|tls|ws|wss)://)[^:/\s@,]+@"), r"\1[secret]@"),
    # "token <hex>" / "bearer <x>" anywhere
    (re.compile(r"(?i)\b(token|bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [secret]"),
)
MAX_FIELD = 2000
MAX_TRACEBACK = 16000  # a traceback is longer than a message, but one holding user input is still bounded
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What a client's `X-Request-Id` must look like to be adopted (else the hub makes its own)."""

LogFormat = Literal["text", "json"]
_service: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("fleethub_service", default=None)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("fleethub_request_id", default=None)


def scrub(text: str, limit: int = MAX_FIELD) -> str:
    """Remove secrets from `text` and cap its length at `limit` (an unbounded field in a log is a DoS)."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    if len(text) > limit:
        text = text[:limit] + f"…[{len(text) - limit} more chars]"
    return text


def bind_service(service: str, replica: str) -> None:
    """Log as `service` (replica `replica`) from this task and every task it starts from now on."""
    _service.set((service, replica))


@contextlib.contextmanager
def service_scope(service: str, replica: str) -> Iterator[None]:
    """Log as `service` (replica `replica`) within the block (e.g. one HTTP request of that service)."""
    token = _service.set((service, replica))
    try:
        yield
    finally:
        _service.reset(token)


def sane_request_id(value: str | None) -> str | None:
    """`value` if it is a usable request id (at most 64 of `[A-Za-z0-9._-]`), else None."""
    return value if value is not None and REQUEST_ID.fullmatch(value) else None


def current_request_id() -> str | None:
    """The request id of the request or command being handled in this context, if any."""
    return _request_id.get()


@contextlib.contextmanager
def request_scope(request_id: str | None) -> Iterator[None]:
    """Carry `request_id` (None: none) in logs, and in the messages published, within the block."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class ScrubbingFilter(logging.Filter):
    """Rewrites each record's message with secrets removed (formatters scrub the exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        return True


class ContextFilter(logging.Filter):
    """Puts `service`, `replica` and `request_id` (and `request_tag`, for text) on each record, from the context
    (else the process's own)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _service.get()
        record.service, record.replica = bound if bound is not None else (self.service, "")
        request_id = record.request_id = _request_id.get()
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class TextFormatter(logging.Formatter):
    """`time level service logger [request id]: message`, the exception text scrubbed too."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(service)s %(name)s%(request_tag)s: %(message)s")

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return scrub(super().formatException(ei), MAX_TRACEBACK)

    def formatStack(self, stack_info: str) -> str:
        return scrub(super().formatStack(stack_info), MAX_TRACEBACK)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 UTC), level, service, replica, logger, message, and
    `exception`, `stack` and `request_id` when present; every string field scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()  # the ScrubbingFilter ran: already scrubbed, args merged
        out: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "service": scrub(str(getattr(record, "service", ""))),
            "replica": scrub(str(getattr(record, "replica", ""))),
            "logger": scrub(record.name),
            "message": scrub(message),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = scrub(str(request_id))
        if record.exc_info:
            out["exception"] = scrub(self.formatException(record.exc_info), MAX_TRACEBACK)
        elif record.exc_text:
            out["exception"] = scrub(record.exc_text, MAX_TRACEBACK)
        if record.stack_info:
            out["stack"] = scrub(self.formatStack(record.stack_info), MAX_TRACEBACK)
        return json.dumps(out, ensure_ascii=False)


def make_handler(service: str, log_format: LogFormat = "text") -> logging.Handler:
    """A stderr handler writing `log_format`, with the scrubbing and context filters."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ScrubbingFilter())
    handler.addFilter(ContextFilter(service))
    return handler


def setup_logging(level: str, service: str, log_format: LogFormat = "text") -> None:
    """Configure the root logger once at the entry point of a process (`service` names the records logged
    outside any service's context)."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(service, log_format)]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "alembic", "httpx"):  # httpx: a line per Engine API call (docker backend)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "nats", "sqlalchemy", "alembic"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
