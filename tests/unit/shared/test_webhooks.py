"""Webhook settings, signatures, event type patterns and `fleethub events --since` as pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleethub.eventscli import parse_since
from fleethub.shared.bus.permissions import grants, webhook_durable
from fleethub.shared.bus.topology import Names
from fleethub.shared.errors import ConfigError
from fleethub.shared.eventtypes import check_patterns, type_matches
from fleethub.shared.settings import load_settings
from fleethub.shared.webhook_settings import WebhookSettings
from fleethub.shared.webhook_signature import sign, verify

SECRET = "0123456789abcdef-secret"
HOOK = {"name": "audit", "url": "https://receiver.example/hook", "secret": SECRET}


def test_a_signature_verifies_with_its_secret_only_and_within_the_tolerance() -> None:
    body = b'{"id":"1"}'
    header = sign(SECRET, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1_700_000_010)
    assert not verify("another-secret-of-16", header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_010)
    assert not verify(SECRET, header, body, now=1_700_001_000)  # a replay 1000 s later
    assert not verify(SECRET, header.replace("t=1700000000", "t=1700000001"), body, now=1_700_000_010)
    assert not verify(SECRET, "garbage", body)


def test_type_patterns_are_checked_against_the_known_types() -> None:
    assert check_patterns(["server.*", "user.created"]) == ["server.*", "user.created"]
    with pytest.raises(ValueError, match=r"'servers\.\*'"):
        check_patterns(["server.ready", "servers.*"])
    assert type_matches("server.ready", ["server.*"]) and not type_matches("user.created", ["server.*"])
    assert type_matches("hub.shutdown", [])


@pytest.mark.parametrize(("change", "problem"), [
    ({"url": "file:///etc/passwd"}, "not an http:// or https:// URL"),
    ({"url": "javascript:alert(1)"}, "not an http:// or https:// URL"),
    ({"url": "http:///nohost"}, "not an http:// or https:// URL"),
    ({"secret": "short"}, "at least 16 characters"),
    ({"events": ["sever.ready"]}, "no event type matches 'sever.ready'"),
    ({"name": "a.b"}, "webhooks.0.name"),
    ({"timeout": 0}, "webhooks.0.timeout"),
])
def test_bad_webhook_settings_are_refused_naming_the_problem(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, webhooks=[{**HOOK, **change}])


def test_two_webhooks_may_not_share_a_name() -> None:
    with pytest.raises(ConfigError, match="same name"):
        load_settings(None, webhooks=[HOOK, {**HOOK, "url": "http://other.example/"}])


def test_the_secret_is_masked_in_dumps() -> None:
    settings = load_settings(None, webhooks=[HOOK])
    assert SECRET not in settings.model_dump_json() and SECRET not in repr(settings)


def test_backoff_doubles_up_to_the_cap() -> None:
    hook = WebhookSettings.model_validate({**HOOK, "backoff_first": 1, "backoff_cap": 10})
    assert [hook.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_only_the_api_may_use_a_webhooks_durable() -> None:
    names = Names("fh")
    durable = webhook_durable("audit")
    pull = f"$JS.API.CONSUMER.MSG.NEXT.FH_EVENTS.{durable}"
    assert pull in grants("api", names, ("audit",)).publish
    assert pull not in grants("api", names).publish  # not configured: not granted
    assert pull in grants("events", names, ("audit",)).deny_publish


def test_since_takes_iso_times_and_durations() -> None:
    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-01-31T11:00:00Z") == datetime(2026, 1, 31, 11, tzinfo=UTC)
    assert parse_since("2026-01-31T11:00:00") == datetime(2026, 1, 31, 11, tzinfo=UTC)  # UTC unless told
    for bad in ("yesterday", "10", "10 minutes", "", "-5m"):
        with pytest.raises(ConfigError, match="--since"):
            parse_since(bad, now)
