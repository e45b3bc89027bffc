"""Server and user models from rows: the state matrix, the shapes, and vertical filtering."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fleethub.services.api.models import Pending, ReportedStatus, ServerView, server_model, token_model, user_model
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import ApiToken, Server, ServerState, User

T = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

NO_KEYS = AuthStateCrypt([])


def _user(admin: bool = False) -> User:
    return User(id=1, name="bob", admin=admin, created=T, last_activity=None)


def _server(desired: str, spawn_id: str | None = "s1", name: str = "") -> Server:
    return Server(id=1, user_id=1, name=name, desired=desired, spawn_id=spawn_id, user_options={"a": 1})


def _state(status: str, spawn_id: str = "s1") -> ServerState:
    return ServerState(user_name="bob", server_name="", spawn_id=spawn_id, status=status, state={"pid": 7}, started=T)


@pytest.mark.parametrize(("desired", "status", "state_spawn", "expected"), [
    ("stopped", None, None, (False, False, None)),
    ("running", None, None, (True, False, "spawn")),  # requested, no worker yet
    ("running", "pending", "s1", (True, False, "spawn")),
    ("running", "running", "s1", (True, True, None)),
    ("stopped", "running", "s1", (True, True, "stop")),  # stop requested, not done
    ("stopped", "pending", "s1", (True, False, "stop")),
    ("stopped", "stopping", "s1", (True, False, "stop")),
    ("stopped", "stopped", "s1", (False, False, None)),
    ("running", "failed", "s1", (False, False, None)),
    ("running", "running", "old", (True, False, "spawn")),  # the new spawn not taken yet
    ("stopped", "running", "old", (True, False, "stop")),  # an older spawn winding down
    ("stopped", "stopped", "old", (False, False, None)),
])
def test_status(desired: str, status: str | None, state_spawn: str | None,
                expected: tuple[bool, bool, str | None]) -> None:
    state = _state(status, state_spawn or "s1") if status else None
    assert ServerView(_server(desired), state).status == expected


def test_status_is_named_and_jupyterhubs_words() -> None:
    status = ServerView(_server("stopped"), _state("pending")).status
    assert isinstance(status, ReportedStatus) and status.active and not status.ready and status.pending is Pending.STOP
    assert json.dumps({"pending": status.pending}) == '{"pending": "stop"}'


def test_server_model() -> None:
    view = ServerView(_server("running"), _state("running"))
    model = server_model(_user(), view, with_state=True, base_url="/")
    assert model == {
        "name": "", "display_name": "", "full_name": "bob/",
        "last_activity": "2025-01-02T03:04:05Z", "started": "2025-01-02T03:04:05Z",
        "pending": None, "ready": True, "stopped": False, "url": "/user/bob/", "user_options": {"a": 1},
        "progress_url": "/hub/api/users/bob/server/progress", "full_url": None, "full_progress_url": None,
        "state": {"pid": 7},
    }
    assert "state" not in server_model(_user(), view, with_state=False, base_url="/")
    named = server_model(User(id=2, name="a b", admin=False, created=T),
                         ServerView(_server("running", name="gpu"), None), with_state=False, base_url="/")
    assert named["url"] == "/user/a%20b/gpu/" and named["progress_url"] == "/hub/api/users/a%20b/servers/gpu/progress"
    assert named["display_name"] == "gpu"  # none stored: a named server shows its name


def test_user_model_and_vertical_filtering() -> None:
    running = ServerView(_server("running"), _state("running"))
    full = user_model(_user(), [running], lambda scope, server: True, crypt=NO_KEYS, base_url="/")
    assert full is not None and full["server"] == "/user/bob/" and full["pending"] is None
    assert set(full) == {"kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity",
                         "auth_state", "servers"}
    assert full["servers"][""]["state"] == {"pid": 7}
    names_only = user_model(_user(), [running], lambda scope, server: scope == "read:users:name" and server is None,
                            crypt=NO_KEYS, base_url="/")
    assert names_only == {"kind": "user", "name": "bob", "admin": False}
    assert user_model(_user(), [running], lambda scope, server: False, crypt=NO_KEYS, base_url="/") is None
    stopped = ServerView(_server("stopped"), None)
    servers_only = user_model(_user(), [stopped], lambda scope, server: scope == "read:servers",
                              crypt=NO_KEYS, base_url="/")
    assert servers_only == {"kind": "user", "name": "bob", "servers": {}}
    with_stopped = user_model(_user(), [stopped], lambda scope, server: scope == "read:servers", include_stopped=True,
                              crypt=NO_KEYS, base_url="/")
    assert with_stopped is not None and with_stopped["servers"][""]["stopped"] is True
    admin = user_model(_user(admin=True), [], lambda scope, server: True, crypt=NO_KEYS, base_url="/")
    assert admin is not None and admin["roles"] == ["admin", "user"]


def test_token_model() -> None:
    row = ApiToken(id=17, user_id=1, hashed="h" * 64, kind="api", note="n", scopes=["inherit"], created=T,
                   expires_at=None, last_activity=None, session_id=None)
    model = token_model(row, "bob")
    assert model["id"] == "a17" and model["kind"] == "api_token" and model["user"] == "bob" and "hashed" not in model
    assert model["created"] == "2025-01-02T03:04:05Z" and model["roles"] == [] and model["scopes"] == ["inherit"]
