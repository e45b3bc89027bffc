"""The consent page's words for scopes: every scope the hub knows has them, and a filter says whose."""

from __future__ import annotations

from fleethub.services.auth.scope_text import WORDS, describe
from fleethub.shared.scopes import KNOWN


def test_every_known_scope_has_words() -> None:
    assert sorted(KNOWN - set(WORDS)) == []
    assert sorted(set(WORDS) - KNOWN) == []  # none for a scope the hub does not know


def test_filters_and_custom_scopes_in_words() -> None:
    assert describe("access:servers!server=alice/gpu") == "Use servers (only the server alice/gpu)"
    assert describe("read:users:name!user=bob") == "Know user names (only the user bob)"
    assert describe("read:users:activity!user") == "Read when users were last active (only yours)"
    assert describe("read:groups!group=team") == "Read groups' models (only the members of the group team)"
    assert describe("custom:gallery:read", {"custom:gallery:read": "see your gallery"}) == "See your gallery"
    assert describe("custom:unknown") == "custom:unknown"  # shown as it is
    assert describe("tokens") == "Create, read and revoke API tokens"
