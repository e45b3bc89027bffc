"""Dot segments in redirect paths: found encoded or not, decoded exactly once."""

from __future__ import annotations

import pytest

from fleethub.shared.errors import BadRequest
from fleethub.shared.identity import validate_next
from fleethub.shared.paths import checked_location, has_dot_segment, quote_path

DOTTED = ["/user/alice/../bob/", "/user/alice/./x", "/user/alice/%2e%2e/bob/", "/user/alice/.%2e/bob/",
          "/user/alice/%2e./bob/", "/user/alice/%2E%2E/bob/", "/user/alice/%2e%2E/bob/", "/user/alice/%2e/x",
          "/user/alice/..%2fbob/", "/user/alice/..%2Fbob/", "/user/alice/..%5cbob/", "/user/alice/..", "/.."]
CLEAN = ["/user/alice/", "/user/alice/%252e%252e/bob/", "/user/alice/...", "/user/alice/.hidden/a..b/",
         "/user/alice/%2e%2ex/", "/user/alice/lab/tree/a%20b.ipynb", "/"]


@pytest.mark.parametrize("path", DOTTED)
def test_dot_segments_are_found(path: str) -> None:
    assert has_dot_segment(path)
    with pytest.raises(BadRequest):
        checked_location(path + "?a=b")
    assert validate_next(path, "https://hub.example.org", default="/x/") == "/x/"


@pytest.mark.parametrize("path", CLEAN)
def test_other_paths_pass_and_are_decoded_once_only(path: str) -> None:
    assert not has_dot_segment(path)
    assert checked_location(path) == path
    assert validate_next(path, "https://hub.example.org") == path


def test_decoded_paths_are_not_decoded_again() -> None:
    assert not has_dot_segment("%2e%2e/bob", decoded=True)  # the text of `%252e%252e`, decoded once
    assert has_dot_segment("../bob", decoded=True) and has_dot_segment("a\\..\\b", decoded=True)
    # re-encoded whole: what was `%252e` on the wire goes out as `%252e`, a space as `%20`, a `%` as `%25`
    assert quote_path("%2e%2e/a b/100%") == "%252e%252e/a%20b/100%25"
    assert quote_path("lab/tree/x@y;z=1") == "lab/tree/x@y;z=1"
    assert quote_path("a?b#c") == "a%3Fb%23c"
