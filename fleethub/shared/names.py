"""Reversible encodings of user and server names into NATS subject tokens, KV keys and URL paths.

A name becomes a token of `[A-Za-z0-9-]` characters, every other byte of its UTF-8 form written as
`_XX` (upper-case hex); the empty name (a user's default server) is the lone token `_`. The map is
injective: two different names never share a subject, a key or a route.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
EMPTY_TOKEN = "_"


def encode_token(name: str) -> str:
    """Encode `name` as one subject token / KV key segment (never empty, never containing `.`)."""
    if name == "":
        return EMPTY_TOKEN
    out: list[str] = []
    for ch in name:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"_{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_token(token: str) -> str:
    """Invert `encode_token`.

    Raises:
        ValueError: `token` is not an encoding this module produces.
    """
    if token == EMPTY_TOKEN:
        return ""
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "_":
            hexpart = token[i + 1 : i + 3]
            if len(hexpart) != 2 or hexpart.upper() != hexpart or any(c not in "0123456789ABCDEF" for c in hexpart):
                raise ValueError(f"bad escape in token {token!r}")
            byte = int(hexpart, 16)
            if chr(byte) in _SAFE:
                raise ValueError(f"needless escape in token {token!r}")
            raw.append(byte)
            i += 3
        elif ch in _SAFE:
            raw.extend(ch.encode())
            i += 1
        else:
            raise ValueError(f"bad character {ch!r} in token {token!r}")
    return raw.decode("utf-8")


def url_escape(name: str) -> str:
    """Escape a name for a URL path segment, as JupyterHub does (`@` and `~` kept)."""
    return quote(name, safe="@~")


def server_prefix(user: str, server_name: str = "") -> str:
    """The URL prefix of a user server: `/user/<user>/` or `/user/<user>/<server>/`."""
    if server_name:
        return f"/user/{url_escape(user)}/{url_escape(server_name)}/"
    return f"/user/{url_escape(user)}/"


CLIENT_PREFIX = "jupyterhub-user-"


def client_id(user: str, server_name: str = "") -> str:
    """The OAuth client id of a user server (also its cookie name), as JupyterHub names it."""
    cid = f"{CLIENT_PREFIX}{quote(user, safe='')}"
    return f"{cid}-{quote(server_name, safe='')}" if server_name else cid


def client_candidates(cid: str) -> list[tuple[str, str]]:
    """Every (user, server) whose `client_id` is `cid` (a `-` in a name makes the split ambiguous)."""
    if not cid.startswith(CLIENT_PREFIX):
        return []
    rest = cid[len(CLIENT_PREFIX):]
    cuts = [i for i, ch in enumerate(rest) if ch == "-" and 0 < i < len(rest) - 1]
    splits = [(rest, ""), *((rest[:i], rest[i + 1:]) for i in cuts)]
    out = []
    for user, server in splits:
        u, s = unquote(user, errors="strict"), unquote(server, errors="strict")
        if u and client_id(u, s) == cid:
            out.append((u, s))
    return out


def server_key(user: str, server_name: str = "") -> str:
    """The `<user>.<server>` token pair used in subjects and route keys."""
    return f"{encode_token(user)}.{encode_token(server_name)}"


def route_key(user: str, server_name: str = "") -> str:
    """The KV key of a user server's route."""
    return f"user.{server_key(user, server_name)}"


def service_route_key(name: str) -> str:
    """The KV key of a hub service's route (`/services/<name>/`)."""
    return f"service.{encode_token(name)}"


def parse_route_key(key: str) -> tuple[str, str]:
    """Invert `route_key`: `(user, server_name)`.

    Raises:
        ValueError: not a user-server route key.
    """
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "user":
        raise ValueError(f"not a user route key: {key!r}")
    return decode_token(parts[1]), decode_token(parts[2])


def storable(text: str) -> bool:
    """Whether PostgreSQL can hold `text`: no NUL character and no lone surrogate (JSON may carry both).

    A name that is not storable names nothing: look-ups answer "not found" without asking the database.
    """
    return "\x00" not in text and _SURROGATE.search(text) is None


# a surrogate code point in a Python str is always a lone one (a valid pair decodes to one character)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Cc control, Cf format (zero-width joiner, bidi marks, soft hyphen), Cs lone surrogate, Zl/Zp separators
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_USERNAME = 255


def _username_problem(name: str) -> str | None:
    """Why `name` (normalized) may not be a user name, or None if it may."""
    if not name:
        return "it is empty"
    if len(name) > MAX_USERNAME:
        return f"it is longer than {MAX_USERNAME} characters"
    # a proxy, a browser or a user server may percent-decode a path segment (once or more): judge every form
    forms = [name]
    while "%" in forms[-1] and len(forms) < 4 and (decoded := unquote(forms[-1])) != forms[-1]:
        forms.append(decoded)
    for form in forms:
        if form in (".", ".."):
            return "'.' and '..' are path segments, not names"
        if "/" in form or "\\" in form:
            return "it holds '/' or '\\'"
        if any(ch.isspace() for ch in form):
            return "it holds whitespace"
        if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in form):
            return "it holds control or invisible characters"
    return None


def normalize_username(raw: str) -> str:
    """The normalized form of a user name: NFKC, then lower-cased as JupyterHub's default does
    (`str.lower`, not case folding: `ß` stays), then NFKC again (lowering can leave a non-NFKC form).

    Names are compared and stored in this form; the input is refused rather than repaired, so what was
    typed is what the user is called (no stripping).

    Raises:
        BadRequest: empty; longer than 255 characters; `.` or `..` (also percent-encoded, `%2e%2e`);
            containing `/`, `\\`, whitespace, or characters of the categories Cc, Cf (zero-width joiner),
            Cs (lone surrogate), Zl or Zp (also once percent-decoded).
    """
    from fleethub.shared.errors import BadRequest

    name = raw
    for _ in range(3):  # stable after one round for every code point we tested; bounded anyway
        nxt = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).lower())
        if nxt == name:
            break
        name = nxt
    problem = _username_problem(name)
    if problem is not None:
        raise BadRequest(f"invalid username {raw[:64]!r}: {problem}")
    return name


def legacy_username(raw: str) -> str:
    """The form an earlier release stored for `raw` (lower-cased, not NFKC-normalized): rows created then
    keep that name, and a login typed the same way still finds them."""
    return raw.lower()
