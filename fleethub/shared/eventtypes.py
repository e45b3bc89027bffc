"""Event type patterns (`server.*`, `user.created`, `*`), as `fleethub events --type` and a webhook's
`events` take them: checked against the known event types, so a typo is an error rather than silence."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from fleethub.shared.events import EVENTS

EVENT_TYPES: tuple[str, ...] = tuple(m.TYPE for m in EVENTS)
"""Every event type fleethub publishes."""


def check_patterns(patterns: Iterable[str]) -> list[str]:
    """`patterns` as given, each matching at least one event type (`*` matches any run of characters).

    Raises:
        ValueError: a pattern matches no event type (the message names it and lists the types).
    """
    out = list(patterns)
    unknown = [p for p in out if not any(fnmatchcase(t, p) for t in EVENT_TYPES)]
    if unknown:
        raise ValueError(f"no event type matches {', '.join(repr(p) for p in unknown)} "
                         f"(known types: {', '.join(EVENT_TYPES)})")
    return out


def type_matches(event_type: str, patterns: Iterable[str]) -> bool:
    """Whether `event_type` matches one of `patterns` (an empty list matches every type)."""
    patterns = list(patterns)
    return not patterns or any(fnmatchcase(event_type, p) for p in patterns)
