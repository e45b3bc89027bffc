"""Pure server-request handling: create/start and PATCH bodies, JupyterHub 6 names and display names,
the progress events and the spawn-limit wording."""

from __future__ import annotations

from typing import Any

import pytest

from fleethub.services.api.progress import failed_event, ready_event
from fleethub.services.api.servers import (
    ServerPatch,
    ServerRequest,
    _human,
    check_display_name,
    check_server_name,
    server_patch_from,
    server_request_from,
)
from fleethub.services.api.waiters import Outcome
from fleethub.shared.errors import BadRequest


@pytest.mark.parametrize(("body", "expected"), [
    (None, ServerRequest()), ({}, ServerRequest()),
    ({"size": "s"}, ServerRequest(None, {"size": "s"})),  # 5.x: the whole body is the options
    ({"user_options": {"a": 1}}, ServerRequest(None, {"a": 1})),
    ({"display_name": "GPU"}, ServerRequest("GPU", None)), ({"display_name": ""}, ServerRequest(None, None)),
    ({"display_name": None, "user_options": None}, ServerRequest()),
])
def test_server_request(body: Any, expected: ServerRequest) -> None:
    assert server_request_from(body) == expected


@pytest.mark.parametrize("body", [[1], "x", 3, True, {"user_options": [1]}, {"display_name": 1},
                                  {"display_name": ["a"], "user_options": {}}])
def test_server_request_refused(body: Any) -> None:
    with pytest.raises(BadRequest):
        server_request_from(body)


@pytest.mark.parametrize(("body", "expected"), [
    ({"name": "gpu"}, ServerPatch(name="gpu")), ({"display_name": "X"}, ServerPatch(display_name="X")),
    ({"user_options": {}}, ServerPatch(user_options={})),
    ({"name": "a", "display_name": "b", "user_options": {"c": 1}}, ServerPatch("a", "b", {"c": 1})),
])
def test_server_patch(body: Any, expected: ServerPatch) -> None:
    assert server_patch_from(body) == expected


@pytest.mark.parametrize("body", [None, {}, [1], "x", {"admin": True}, {"name": None}, {"name": 1},
                                  {"display_name": 2}, {"user_options": None}, {"user_options": "x"}])
def test_server_patch_refused(body: Any) -> None:
    with pytest.raises(BadRequest):
        server_patch_from(body)


@pytest.mark.parametrize("name", ["gpu\n", "a\nb", "gpu\r"])
def test_a_trailing_newline_is_no_valid_name(name: str) -> None:
    with pytest.raises(BadRequest, match="Invalid server name"):
        check_server_name(name)


@pytest.mark.parametrize(("name", "expected"), [
    ("GPU", "GPU"), ("My big server", "My big server"), ("a" * 255, "a" * 255), ("☃ snow", "☃ snow"),
    ("e\u0301", "\u00e9"),  # NFC-normalized
])
def test_good_display_names(name: str, expected: str) -> None:
    assert check_display_name(name) == expected


@pytest.mark.parametrize("name", ["", " a", "a ", "a  b", "a\tb", "a\nb", "a\x00", "a" * 256, "\u200b"])
def test_bad_display_names(name: str) -> None:
    with pytest.raises(BadRequest, match="Invalid display_name"):
        check_display_name(name)


def test_progress_events() -> None:
    assert ready_event("/user/a/") == {"progress": 100, "ready": True, "message": "Server ready at /user/a/",
                                       "html_message": 'Server ready at <a href="/user/a/">/user/a/</a>',
                                       "url": "/user/a/"}
    assert failed_event(Outcome.FAILED, "boom") == {"progress": 100, "failed": True, "message": "Spawn failed: boom"}
    assert failed_event(Outcome.FAILED, "")["message"] == "Spawn failed"
    assert failed_event(Outcome.STOPPED, "")["message"] == "Spawn cancelled"


@pytest.mark.parametrize(("seconds", "text"), [(30, "30 seconds"), (31, "40 seconds"), (59, "60 seconds"),
                                               (90, "90 seconds"), (150, "2 minutes")])
def test_retry_wording(seconds: int, text: str) -> None:
    assert _human(seconds) == text
