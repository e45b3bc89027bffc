"""Pure request handling: server names and token ids (start-request bodies: test_server_requests.py)."""

from __future__ import annotations

import pytest

from fleethub.services.api.servers import check_server_name
from fleethub.services.api.tokens import parse_token_id
from fleethub.shared.errors import BadRequest


@pytest.mark.parametrize("name", ["a", "gpu", "gpu-2", "a" * 30, "x1-y2-z3"])
def test_good_server_names(name: str) -> None:
    check_server_name(name)


@pytest.mark.parametrize("name", ["", "GPU", "1gpu", "-a", "a-", "a--b", "a_b", "a.b", "a/b", "a b", "a" * 31,
                                  "é", "a$/b", "hash#?question", "server--abc-def"])
def test_bad_server_names(name: str) -> None:
    with pytest.raises(BadRequest, match="Invalid server name"):
        check_server_name(name)


@pytest.mark.parametrize(("raw", "expected"), [("a17", 17), ("a0", 0), ("17", None), ("a", None), ("ab", None),
                                               ("a-1", None), ("a" + "9" * 20, None), ("sc_1", None)])
def test_token_ids(raw: str, expected: int | None) -> None:
    assert parse_token_id(raw) == expected
