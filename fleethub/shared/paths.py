"""URL paths the hub redirects browsers to: no `.` or `..` segment, encoded or not, and no double decoding.

A browser (and most servers) resolve `/user/alice/%2e%2e/bob/` to `/user/bob/`, so a redirect built from
user input must never carry a dot segment, or it leaves the prefix it was built for. Paths are decoded
exactly once to be checked; a path taken from a decoded route parameter is re-encoded whole (`%` too), so
`%252e` arrives as `%2e` and leaves as `%252e`, never as a dot.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from fleethub.shared.errors import BadRequest

# the characters a path segment may hold unescaped (RFC 3986 pchar), plus the separator; `%` is not one of them
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_SEPARATORS = re.compile(r"[/\\]")
DOTS = (".", "..")


def has_dot_segment(path: str, *, decoded: bool = False) -> bool:
    """Whether `path` has a `.` or `..` segment once decoded once (`decoded`: it already was, e.g. a route
    parameter, and is not decoded again).

    Encoded dots (`%2e`, `%2E`, `.%2e`, …) count, and so do segments that `%2f` or a backslash (`\\`, `%5c`)
    would split off (`..%2fbob`). A double-encoded `%252e` decodes to the text `%2e`, which is no dot.
    """
    text = path if decoded else unquote(path, errors="replace")
    return any(seg in DOTS for seg in _SEPARATORS.split(text))


def quote_path(decoded: str) -> str:
    """A decoded path (a route parameter) as a URL path again: every `%` and reserved character escaped."""
    return quote(decoded, safe=_PATH_SAFE)


def checked_location(location: str) -> str:
    """`location` (a same-origin URL path with optional query) if its path has no dot segment.

    Raises:
        BadRequest: the path has a `.` or `..` segment (encoded or not).
    """
    if has_dot_segment(urlsplit(location).path):
        raise BadRequest("Invalid path: '.' and '..' segments are not allowed")
    return location
