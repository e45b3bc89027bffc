"""The token page's expiry menu under the hub's limit on token lifetimes."""

from __future__ import annotations

from fleethub.services.api.token_lists import EXPIRY_CHOICES, expiry_choices


def test_no_limit_offers_never_and_every_choice() -> None:
    assert expiry_choices(0) == list(EXPIRY_CHOICES) and expiry_choices(0)[0] == ("Never", 0)


def test_a_limit_drops_never_and_the_longer_choices() -> None:
    assert expiry_choices(7 * 86400) == [("1 hour", 3600), ("1 day", 86400), ("1 week", 604800)]
    assert expiry_choices(100 * 86400)[-1] == ("30 days", 2592000)


def test_a_limit_below_every_choice_is_offered_itself() -> None:
    assert expiry_choices(600) == [("10 minutes", 600)]
    assert expiry_choices(90) == [("90 seconds", 90)]
