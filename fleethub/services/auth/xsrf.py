"""The guard of the anonymous forms (login, sign-up) against login CSRF.

Nobody is logged in yet, so the form's XSRF token cannot be bound to a session. It is bound instead to a
random pre-session id in an HttpOnly, SameSite=Lax cookie at `/hub/`, issued with the form and valid for
an hour. That alone is not enough: every page on the hub's host (a user server under `/user/<name>/`
included) and, with subdomains, every sibling host can set cookies for the hub, so an attacker can plant
a pre-session cookie and a token of their own in the victim's browser. Hence a POST must also come from
one of our own pages: `Sec-Fetch-Site: same-origin`, and an `Origin` (or, with neither, `Referer`) of this
hub. A client sending none of the three is not a current browser, and keeps only the cookie binding.
When the Cookie header carries several pre-session ids, only the first (the most specific path: ours at
`/hub/` before one planted at `/`) is used.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from fleethub.shared.identity import secure_cookies
from fleethub.shared.security import sign, verify_signature
from fleethub.shared.service import Runtime

PRESESSION_COOKIE = "jupyterhub-presession"
PRESESSION_PATH = "/hub/"
MAX_AGE = 3600  # seconds a form stays good (JupyterHub's anonymous _xsrf lives as long)
_PURPOSE = "xsrf-anonymous"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def cookie_values(request: Request, name: str) -> list[str]:
    """Every value of cookie `name` the request carries, in the order sent (a browser sends the cookie of
    the longest path first). Starlette's `request.cookies` keeps only the last one."""
    out = []
    for header in request.headers.getlist("cookie"):
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key.strip() == name:
                out.append(value.strip().strip('"'))
    return out


def presession_of(request: Request) -> str | None:
    """The pre-session id the browser holds at `/hub/` (the first one sent), if it looks like ours."""
    values = cookie_values(request, PRESESSION_COOKIE)
    if not values or not 16 <= len(values[0]) <= 64:
        return None
    return values[0]


def new_presession() -> str:
    """A fresh pre-session id (the value of the pre-session cookie)."""
    return secrets.token_urlsafe(24)


def form_token(secret_key: str, presession: str, now: float | None = None) -> str:
    """The form's XSRF token `<nonce>.<issued>.<hmac>`, bound to `presession`."""
    nonce = secrets.token_urlsafe(12)
    issued = str(int(time.time() if now is None else now))
    return f"{nonce}.{issued}.{sign(secret_key, _PURPOSE, f'{presession}:{nonce}:{issued}')}"


def form_token_valid(secret_key: str, presession: str | None, token: str, now: float | None = None) -> bool:
    """Whether `token` was issued for `presession` less than `MAX_AGE` seconds ago."""
    if not presession or not token or len(token) > 200:
        return False
    nonce, issued, tag = [*token.split("."), "", ""][:3]
    if not (nonce and tag and issued.isdigit() and len(issued) < 12):
        return False
    age = (time.time() if now is None else now) - int(issued)
    return -60 <= age <= MAX_AGE and verify_signature(secret_key, _PURPOSE, f"{presession}:{nonce}:{issued}", tag)


def set_presession_cookie(response: Response, presession: str, secure: bool) -> None:
    """The pre-session cookie: HttpOnly, SameSite=Lax, path /hub/, no Domain, one hour."""
    response.set_cookie(PRESESSION_COOKIE, presession, max_age=MAX_AGE, path=PRESESSION_PATH, httponly=True,
                        secure=secure, samesite="lax")


def clear_presession_cookie(response: Response) -> None:
    """Drop the pre-session cookie (the login it guarded is done)."""
    response.delete_cookie(PRESESSION_COOKIE, path=PRESESSION_PATH)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL or origin; None for anything else (`null` included)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _ours(url: str, request: Request, public_url: str) -> bool:
    """Whether `url` is on this hub: its public origin, or the host the request was sent to (a proxy or TLS
    terminator in front may change the scheme, so the Host comparison ignores it)."""
    origin = _origin(url)
    if origin is None:
        return False
    if origin == _origin(public_url):
        return True
    host = request.headers.get("host", "")
    here = _origin(f"{origin[0]}://{host}") if host else None
    return here is not None and here[1:] == origin[1:]


def foreign_post(request: Request, public_url: str) -> str | None:
    """Why this form POST did not come from one of our pages; None if it did (or the client says nothing)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() != "same-origin":
        return f"Sec-Fetch-Site is {site[:40]!r}"
    origin = request.headers.get("origin")
    if origin is not None:
        return None if _ours(origin, request, public_url) else f"Origin {origin[:100]!r} is not this hub"
    referer = request.headers.get("referer")
    if site is None and referer and not _ours(referer, request, public_url):
        return "Referer is not this hub"
    return None


def check_anonymous_form(request: Request, secret_key: str, public_url: str, token: str) -> str | None:
    """Why an anonymous form's POST is refused (logged by the caller); None when it passes."""
    foreign = foreign_post(request, public_url)
    if foreign is not None:
        return foreign
    if not form_token_valid(secret_key, presession_of(request), token):
        return "XSRF token missing, expired or not this browser's"
    return None


def anonymous_form(request: Request, runtime: Runtime, render: Callable[[str], str], status: int = 200) -> Response:
    """An anonymous form's page, `render(xsrf token)`, with the token bound to the browser's pre-session id
    (the one it holds, or a new one), whose cookie is (re)set."""
    presession = presession_of(request) or new_presession()
    page = render(form_token(runtime.secret_key, presession))
    response = HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
    set_presession_cookie(response, presession, secure_cookies(runtime.settings.hub_public_url))
    return response
