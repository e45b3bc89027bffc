"""Logging setup for every service, with a filter that scrubs secrets from every record."""

from __future__ import annotations

import logging
import re
import sys

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization / Cookie headers and their values
    (re.compile(r"(?i)(authorization|cookie|set-cookie)(['\"]?\s*[:=]\s*['\"]?)([^'\"\n,}]+)"), r"\1\2[secret]"),
    # tokens in query strings and form bodies
    (re.compile(r"(?i)([?&](?:token|auth|key|code|state|_xsrf|password|client_secret)=)[^&\s'\"]+"), r"\1[secret]"),
    # passwords in URLs: scheme://user:password@host
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@/\s]+@"), r"\1[secret]@"),
    # "token <hex>" / "bearer <x>" anywhere
    (re.compile(r"(?i)\b(token|bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [secret]"),
)
MAX_FIELD = 2000


def scrub(text: str) -> str:
    """Remove secrets from `text` and cap its length (an unbounded field in a log is a DoS)."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    if len(text) > MAX_FIELD:
        text = text[:MAX_FIELD] + f"…[{len(text) - MAX_FIELD} more chars]"
    return text


class ScrubbingFilter(logging.Filter):
    """Rewrites each record's message with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        return True


def setup_logging(level: str, service: str) -> None:
    """Configure the root logger once at the entry point of a process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    handler.addFilter(ScrubbingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "alembic", "httpx"):  # httpx: a line per Engine API call (docker backend)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "nats", "sqlalchemy", "alembic"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
