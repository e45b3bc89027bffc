"""The anonymous forms' guard without I/O: tokens bound to a pre-session, the first cookie, same-origin POSTs."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request

from fleethub.services.auth.xsrf import (
    PRESESSION_COOKIE,
    cookie_values,
    foreign_post,
    form_token,
    form_token_valid,
    presession_of,
)

KEY = "k" * 40
PUBLIC = "https://hub.example.org"


def _request(headers: dict[str, str] | list[tuple[str, str]]) -> Request:
    items = headers.items() if isinstance(headers, dict) else headers
    return Request({"type": "http", "method": "POST", "path": "/hub/login", "query_string": b"",
                    "headers": [(k.lower().encode(), v.encode()) for k, v in items]})


def test_tokens_are_bound_to_the_presession_and_expire() -> None:
    now = time.time()
    token = form_token(KEY, "presession-aaaaaaaaaaaa", now=now)
    assert form_token_valid(KEY, "presession-aaaaaaaaaaaa", token, now=now + 3500)
    assert not form_token_valid(KEY, "presession-aaaaaaaaaaaa", token, now=now + 3700)
    assert not form_token_valid(KEY, "presession-bbbbbbbbbbbb", token, now=now)
    assert not form_token_valid("x" * 40, "presession-aaaaaaaaaaaa", token, now=now)
    assert not form_token_valid(KEY, None, token) and not form_token_valid(KEY, "presession-aaaaaaaaaaaa", "")
    nonce, issued, tag = token.split(".")
    for forged in (f"{nonce}.{int(issued) + 1000}.{tag}", f"{nonce}x.{issued}.{tag}", f"{nonce}.{issued}",
                   f"{nonce}.x{issued}.{tag}", token + "." * 200):
        assert not form_token_valid(KEY, "presession-aaaaaaaaaaaa", forged, now=now), forged


def test_the_first_presession_cookie_is_the_one_used() -> None:
    request = _request([("cookie", f"a=1; {PRESESSION_COOKIE}=ours-0123456789abcdef; _xsrf=x"),
                        ("cookie", f"{PRESESSION_COOKIE}=planted-0123456789abcd")])
    assert cookie_values(request, PRESESSION_COOKIE) == ["ours-0123456789abcdef", "planted-0123456789abcd"]
    assert presession_of(request) == "ours-0123456789abcdef"
    assert request.cookies[PRESESSION_COOKIE] == "planted-0123456789abcd"  # what starlette alone would have used
    assert presession_of(_request({"cookie": f"{PRESESSION_COOKIE}=short"})) is None
    assert presession_of(_request({})) is None


@pytest.mark.parametrize("headers", [
    {}, {"Host": "hub.example.org"}, {"Sec-Fetch-Site": "same-origin"}, {"Origin": PUBLIC},
    {"Origin": "https://hub.example.org:443", "Sec-Fetch-Site": "same-origin"},
    {"Origin": "https://10.1.2.3:8443", "Host": "10.1.2.3:8443"}, {"Referer": f"{PUBLIC}/hub/login?next=/x"},
    {"Sec-Fetch-Site": "same-origin", "Referer": "https://elsewhere.example/"},  # Sec-Fetch-Site decides
])
def test_same_origin_posts(headers: dict[str, str]) -> None:
    assert foreign_post(_request(headers), PUBLIC) is None


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "none"},
    {"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": "https://hub.example.org.evil.example"},
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, {"Referer": "https://evil.example/x"},
    {"Origin": "https://hub.example.org:8443"}, {"Origin": "https://evil.example", "Host": "hub.example.org"},
    {"Referer": "javascript:alert(1)"},
])
def test_foreign_posts(headers: dict[str, str]) -> None:
    assert foreign_post(_request(headers), PUBLIC) is not None
