"""Name encoding: reversible, valid as subject tokens and KV keys, injective."""

from __future__ import annotations

import re

import pytest

from fleethub.shared.errors import BadRequest
from fleethub.shared.names import (
    decode_token,
    encode_token,
    normalize_username,
    parse_route_key,
    route_key,
    server_key,
    server_prefix,
    storable,
)

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")
NAMES = ["", "alice", "a.b", "a_b", "a-b", "_", "__", "_5F", "a b", "a*b", "a>b", "ünï", "日本", "A", "a/b",
         "x" * 200, "\x00"]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_token_charset(name: str) -> None:
    token = encode_token(name)
    assert TOKEN_RE.match(token), token
    assert "." not in token and "*" not in token and ">" not in token
    assert decode_token(token) == name


def test_injective_over_tricky_names() -> None:
    extra = [f"{a}{b}" for a in ["a", "_", ".", "5F", "_5", "-"] for b in ["", "F", "_", ".", "x"]]
    names = set(NAMES) | set(extra)
    tokens = {encode_token(n) for n in names}
    assert len(tokens) == len(names)
    keys = {server_key(u, s) for u in names for s in ["", "gpu", "a.b"]}
    assert len(keys) == len(names) * 3


def test_user_and_server_split_cannot_collide() -> None:
    # "a.b" + "" must differ from "a" + "b" in every form
    assert server_key("a.b", "") != server_key("a", "b")
    assert route_key("a.b", "") != route_key("a", "b")


@pytest.mark.parametrize("bad", ["_", "_4", "_zz", "_41", "a.b", "a b", "_2e"])
def test_decode_rejects_non_canonical(bad: str) -> None:
    if bad == "_":
        assert decode_token(bad) == ""
        return
    with pytest.raises(ValueError):
        decode_token(bad)


def test_route_key_parse() -> None:
    assert parse_route_key(route_key("al.ice", "gpu")) == ("al.ice", "gpu")
    with pytest.raises(ValueError):
        parse_route_key("svc.x")


def test_server_prefix_escapes() -> None:
    assert server_prefix("alice") == "/user/alice/"
    assert server_prefix("alice", "gpu") == "/user/alice/gpu/"
    assert server_prefix("a b@x") == "/user/a%20b@x/"


def test_storable() -> None:
    assert storable("") and storable("alice") and storable("b\u00e9atrice \U0001f600")
    for bad in ("a\x00b", "\x00", "a\ud800", "\udfffz"):
        assert not storable(bad), repr(bad)


@pytest.mark.parametrize("bad", [
    "", " ", "a/b", "a b", "a\x00b", "a\x7f", "a\ud800", "x" * 256,
    ".", "..", "%2e", "%2e%2e", "%2E.", "%252e%252e", "a%2Fb", "a%5cb", "a\\b",  # dot-segments, slashes
    " alice", "alice ", "alice\t", "\u3000alice",  # whitespace at either end (also NFKC's)
    "a\u200db", "a\u200bb", "\u202ealice", "a\u00adb", "a\ufeffb",  # Cf: zero-width joiner/space, bidi, soft hyphen
    "a\u2028b", "a\u2029b", "a\x85b", "a%00b", "a%e2%80%8db",  # Zl, Zp, Cc; and once percent-decoded
])
def test_invalid_usernames(bad: str) -> None:
    with pytest.raises(BadRequest, match="invalid username"):
        normalize_username(bad)


def test_usernames_are_normalized() -> None:
    assert normalize_username("Alice") == "alice"
    assert normalize_username("b\u00e9a\U0001f600") == "b\u00e9a\U0001f600"
    assert normalize_username("be\u0301a") == "b\u00e9a"  # NFD and NFC forms are one name
    assert normalize_username("\uff21lice") == "alice"  # fullwidth A (NFKC)
    assert normalize_username("\ufb01le") == "file"  # the fi ligature (NFKC)
    assert normalize_username("\u210cal") == "hal"  # black-letter H: NFKC before lower-casing, else "Hal"
    assert normalize_username("STRASSE") == "strasse"
    assert normalize_username("stra\u00dfe") == "stra\u00dfe"  # lower, not casefold
    for name in ("a.b", "~testjh", "has@", "a%b", "...", "a..b", "\u79c0\u6a39"):
        assert normalize_username(name) == name


def test_normalization_is_idempotent_for_every_code_point() -> None:
    for cp in range(0x110000):
        ch = chr(cp)
        try:
            once = normalize_username(f"a{ch}")
        except BadRequest:
            continue
        assert normalize_username(once) == once, hex(cp)
