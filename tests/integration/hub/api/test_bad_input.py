"""Input PostgreSQL cannot hold, numbers beyond its range: a 400 or a 404, never a 500.

Each case here is a request the schemathesis run (test_schemathesis.py) once answered with a 500.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings

pytestmark = pytest.mark.integration

PAGED = {"Accept": "application/jupyterhub-pagination+json"}
JSON = {"Content-Type": "application/json"}
STORE = "Invalid JSON in request body: strings must not contain NUL characters or lone surrogates"


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, api={"allow_named_servers": True})


async def test_a_name_with_a_nul_names_nothing(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    await hub.token_for("alice")
    c = hub.client
    for method, path in (("GET", "/hub/api/users/a%00b"), ("GET", "/hub/api/users/a%00b/tokens"),
                         ("DELETE", "/hub/api/users/a%00b"), ("GET", "/hub/api/services/a%00b"),
                         ("GET", "/hub/api/users/alice/servers/a%00b"),
                         ("DELETE", "/hub/api/users/alice/servers/a%00b")):
        r = await c.request(method, path, headers=admin)
        assert r.status_code == 404 and r.json()["status"] == 404, (method, path, r.text)
    r = await c.get("/hub/api/users", params={"name_filter": "a\x00"}, headers=admin)
    assert r.status_code == 200 and r.json() == []
    r = await c.get("/hub/api/users", params={"name_filter": "a\x00"}, headers={**admin, **PAGED})
    assert r.json()["items"] == [] and r.json()["_pagination"]["total"] == 0


async def test_an_offset_beyond_bigint_is_past_the_end(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    await hub.token_for("alice")
    huge = {"offset": str(10**20)}
    for path in ("/hub/api/users", "/hub/api/groups"):
        r = await hub.client.get(path, params=huge, headers=admin)
        assert r.status_code == 200 and r.json() == [], path
    for path in ("/hub/api/users", "/hub/api/shares/alice", "/hub/api/share-codes/alice"):
        r = await hub.client.get(path, params=huge, headers={**admin, **PAGED})
        assert r.status_code == 200 and r.json()["items"] == [] and r.json()["_pagination"]["next"] is None, path


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/hub/api/users/alice/server", rb'{"user_options": {"a": "x\u0000y"}}'),
    ("POST", "/hub/api/users/alice/server", rb'{"user_options": {"a\u0000": 1}}'),
    ("POST", "/hub/api/users/alice/servers/box", rb'{"display_name": "\ud800"}'),
    ("POST", "/hub/api/users", rb'{"usernames": ["x\ud800y"]}'),
    ("PATCH", "/hub/api/users/alice", rb'{"auth_state": {"a": "\u0000"}}'),
    ("POST", "/hub/api/users/alice/tokens", rb'{"note": "x\u0000y"}'),
    ("POST", "/hub/api/users/alice/activity", rb'{"servers": {"\u0000": {"last_activity": "2020-01-01T00:00:00Z"}}}'),
    ("POST", "/hub/api/services/newsvc", rb'{"url": "http://127.0.0.1:1", "info": {"a": "\u0000"}}'),
])
async def test_strings_postgresql_cannot_hold_are_a_400(hub: Hub, method: str, path: str, body: bytes) -> None:
    admin = await hub.headers_for("admin", admin=True)
    await hub.token_for("alice")
    r = await hub.client.request(method, path, content=body, headers={**admin, **JSON})
    assert r.status_code == 400 and r.json() == {"status": 400, "message": STORE}


@pytest.mark.parametrize("body", [b'{"user_options": {"a": NaN}}', b'{"user_options": {"a": -Infinity}}',
                                  b'{"user_options": {"a": 1e400}}'])
async def test_numbers_json_and_postgresql_cannot_hold_are_a_400(hub: Hub, body: bytes) -> None:
    admin = await hub.headers_for("admin", admin=True)
    await hub.token_for("alice")
    r = await hub.client.post("/hub/api/users/alice/servers/box", content=body, headers={**admin, **JSON})
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid JSON in request body")
    r = await hub.client.get("/hub/api/users/alice", headers=admin)
    assert r.json()["servers"] == {}  # nothing was created or started


async def test_activity_before_year_one_in_utc_is_a_400(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    url = "/hub/api/users/alice/activity"
    r = await hub.client.post(url, json={"last_activity": "0001-01-01T00:00:00+01:00"}, headers=alice)
    assert r.status_code == 400 and "out of range" in r.json()["message"]
    r = await hub.client.post(url, json={"last_activity": "0001-01-01T00:00:00-01:00"}, headers=alice)
    assert r.status_code == 200  # 01:00 UTC on the first day of year one: the earliest there is, but there
