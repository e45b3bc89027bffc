"""Token and password hashing, signing, log scrubbing."""

from __future__ import annotations

import logging

from fleethub.shared.logging import ScrubbingFilter, scrub
from fleethub.shared.security import (
    hash_password,
    hash_token,
    new_token,
    server_token,
    sign,
    verify_password,
    verify_signature,
)


def test_tokens_are_random_and_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) == 32 and int(a, 16) >= 0
    assert hash_token(a) != a and len(hash_token(a)) == 64 and hash_token(a) == hash_token(a)


def test_password_hash_is_salted_and_verifies() -> None:
    h1, h2 = hash_password("correct horse"), hash_password("correct horse")
    assert h1 != h2 and "correct" not in h1
    assert verify_password("correct horse", h1)
    assert not verify_password("wrong", h1)
    assert not verify_password("x", "garbage")
    assert not verify_password("x", "scrypt$1$2$3$!!$!!")


def test_signatures() -> None:
    tag = sign("k" * 32, "xsrf", "nonce")
    assert verify_signature("k" * 32, "xsrf", "nonce", tag)
    assert not verify_signature("k" * 32, "other", "nonce", tag)
    assert not verify_signature("j" * 32, "xsrf", "nonce", tag)


def test_server_token_is_derived_per_spawn() -> None:
    key = "k" * 40
    assert server_token(key, "s1") == server_token(key, "s1")
    assert server_token(key, "s1") != server_token(key, "s2")
    assert server_token(key, "s1") != server_token("j" * 40, "s1")
    assert len(server_token(key, "s1")) == 32


def test_scrub_removes_secrets() -> None:
    text = (
        "GET /hub/api/users?token=abcdef123456&x=1 Authorization: token 0123456789abcdef "
        "postgresql://fleethub:hunter2pw@127.0.0.1:5/db Cookie: jupyterhub-hub-login=zzz _xsrf=qq"
    )
    out = scrub(text)
    for secret in ("abcdef123456", "0123456789abcdef", "hunter2pw", "zzz"):
        assert secret not in out
    assert "x=1" in out
    assert len(scrub("u" * 10_000)) < 2100


def test_scrub_removes_nats_url_credentials() -> None:
    out = scrub("cannot connect to NATS at nats://t0kenSecret@10.0.0.1:4222,tls://u:pa55word@h:4222 "
                "ws://w5token@h:8080 postgresql://fleethub@db:5432/hub")
    for secret in ("t0kenSecret", "pa55word", "w5token"):
        assert secret not in out, out
    assert "nats://[secret]@10.0.0.1:4222" in out and "tls://u:[secret]@h:4222" in out, out
    assert "postgresql://fleethub@db:5432/hub" in out  # a user name alone is no secret outside NATS URLs


def test_filter_applies_to_records() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "login with %s", ("bearer abcdefghijklmnop",), None)
    ScrubbingFilter().filter(record)
    assert "abcdefghijklmnop" not in record.getMessage()


def test_service_tokens_are_derived_per_hub_and_name() -> None:
    from fleethub.shared.security import service_api_token, service_token

    key = "k" * 40
    assert service_token(key, "culler") == service_token(key, "culler")  # the api and the worker agree
    assert len(service_token(key, "culler")) == 32
    assert service_token(key, "culler") != service_token(key, "other") != service_token("j" * 40, "culler")
    assert service_api_token("configured", True, key, "culler") == "configured"
    assert service_api_token(None, True, key, "culler") == service_token(key, "culler")
    assert service_api_token(None, False, key, "culler") is None  # an external service brings its own
