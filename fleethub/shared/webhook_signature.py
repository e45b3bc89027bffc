"""The signature of a webhook delivery: `Fleethub-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256 keyed with the webhook's secret over `<t>.` followed by the raw request body.

The timestamp inside the signed text lets a receiver refuse replays of an old delivery (`verify`'s
`tolerance`); `Fleethub-Event-Id` (the envelope's id) lets it drop a delivery it already handled.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Fleethub-Signature"
EVENT_ID_HEADER = "Fleethub-Event-Id"
EVENT_TYPE_HEADER = "Fleethub-Event-Type"


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` keyed with `secret`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Fleethub-Signature` header value for `body` (timestamp: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, body, t)}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Whether `header` (a `Fleethub-Signature` value) signs `body` with `secret`, made at most `tolerance`
    seconds from `now`; compared in constant time."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    return hmac.compare_digest(parts.get("v1", ""), signature(secret, body, t))
