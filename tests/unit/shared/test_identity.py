"""Credentials without I/O: Authorization headers, XSRF tokens, the token cache and `next` validation."""

from __future__ import annotations

import time

import pytest

from fleethub.shared.identity import (
    Identity,
    TokenCache,
    new_xsrf,
    secure_cookies,
    token_from_header,
    validate_next,
    xsrf_valid,
)

KEY = "k" * 40
OURS = "https://hub.example.org"


@pytest.mark.parametrize(("header", "token"), [
    ("token abc123", "abc123"), ("Token abc123", "abc123"), ("bearer abc123", "abc123"), ("BEARER  abc123 ", "abc123"),
    ("Basic abc123", None), ("token", None), ("token a b", None), ("", None), (None, None), ("tokenabc", None),
])
def test_token_from_header(header: str | None, token: str | None) -> None:
    assert token_from_header(header) == token


def test_xsrf_tokens_are_signed_and_bound_to_the_session() -> None:
    anon = new_xsrf(KEY)
    assert xsrf_valid(KEY, anon, anon)
    assert not xsrf_valid(KEY, anon, anon, "session-1")  # an anonymous token is no good once logged in
    bound = new_xsrf(KEY, "session-1")
    assert xsrf_valid(KEY, bound, bound, "session-1")
    assert not xsrf_valid(KEY, bound, bound, "session-2") and not xsrf_valid(KEY, bound, bound)
    assert not xsrf_valid("x" * 40, bound, bound, "session-1")  # another hub key
    assert not xsrf_valid(KEY, bound, new_xsrf(KEY, "session-1"), "session-1")  # the form must match the cookie
    nonce, _, tag = bound.partition(".")
    flipped = tag[:-1] + ("B" if tag[-1] == "A" else "A")
    for forged in (f"{nonce}.{flipped}", f"other.{tag}", nonce, ".", "", "a" * 300):
        assert not xsrf_valid(KEY, forged, forged, "session-1"), forged
    assert not xsrf_valid(KEY, None, bound, "session-1") and not xsrf_valid(KEY, bound, None, "session-1")
    assert new_xsrf(KEY, "s") != new_xsrf(KEY, "s")  # a fresh nonce each time


def test_token_cache_expires_and_forgets() -> None:
    ident = Identity(1, "bob", False, "token", token_id=3)
    cache = TokenCache(ttl=0.05)
    assert cache.get("h") == (False, None)
    cache.put("h", ident)
    cache.put("missing", None)
    assert cache.get("h") == (True, ident) and cache.get("missing") == (True, None)
    cache.drop("h")
    assert cache.get("h") == (False, None)
    cache.put("h", ident)
    cache.drop_user_named("bob", kind="service")  # a service named like the user is another principal
    assert cache.get("h") == (True, ident)
    cache.drop_user_named("bob")
    assert cache.get("h") == (False, None)
    cache.put("h", ident)
    cache.clear()
    assert cache.get("h") == (False, None)
    cache.put("h", ident)
    time.sleep(0.06)
    assert cache.get("h") == (False, None)
    bounded = TokenCache(ttl=10, max_entries=3)
    for i in range(10):
        bounded.put(str(i), None)
    assert len(bounded._entries) <= 3  # the bound is the point


BAD = [
    "//evil.com", "///evil.com", "////evil.com", "\\\\evil.com", "/\\evil.com", "\\/evil.com", "https://evil.com",
    "https:evil.com", "https:///evil.com", "http:/\\evil.com", "javascript:alert(1)", "data:text/html,x",
    "java\tscript:alert(1)", "/x\r\nSet-Cookie: a=b", "/x\x00", "https://hub.example.org@evil.com/",
    "https://evil.com#@hub.example.org", "https://hub.example.org.evil.com/", "relative/path",
    "https://HUB.EXAMPLE.ORG/x", "http://hub.example.org/x", "https://hub.example.org//evil.com/",
    "https://hub.example.org///evil.com/", "ftp://hub.example.org/x", "/" + "a" * 3000, "", None, "#frag",
]


@pytest.mark.parametrize("bad", BAD)
def test_next_off_site_falls_back(bad: str | None) -> None:
    assert validate_next(bad, OURS) == "/hub/home"
    assert validate_next(bad, OURS, default="/hub/spawn") == "/hub/spawn"


@pytest.mark.parametrize(("good", "expected"), [
    ("/hub/home", "/hub/home"), ("/user/alice/lab?x=1#y", "/user/alice/lab?x=1#y"),
    ("https://hub.example.org/hub/token?a=b", "/hub/token?a=b"), ("//hub.example.org/x", "/x"),
    ("/has?repo=https://host.git", "/has?repo=https://host.git"), ("/hub/home'><img src=x>", "/hub/home'><img src=x>"),
])
def test_next_same_origin_paths_are_kept(good: str, expected: str) -> None:
    assert validate_next(good, OURS) == expected


def test_secure_cookies_follow_the_public_scheme() -> None:
    assert secure_cookies("https://hub") and secure_cookies("HTTPS://hub") and not secure_cookies("http://hub")
