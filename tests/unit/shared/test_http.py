"""The HTTP glue on a small app: JupyterHub's error shape, 400 not 422, headers on every answer, bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from nats.errors import TimeoutError as NatsTimeout
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleethub.shared.errors import BusError, Conflict, NotFound, TooManyRequests
from fleethub.shared.http import CommonHeaders, install_error_handlers, iso, read_json


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(CommonHeaders)

    @app.get("/hub/api/conflict")
    async def conflict() -> None:
        raise Conflict("User x already exists")

    @app.get("/hub/api/busy")
    async def busy() -> None:
        raise TooManyRequests("Try again", retry_after=42)

    @app.get("/hub/api/number")
    async def number(n: int) -> dict[str, int]:
        return {"n": n}

    @app.post("/hub/api/echo")
    async def echo(request: Request) -> Any:
        return {"got": await read_json(request, max_bytes=1000)}

    @app.get("/hub/api/echo-name/{name}")
    @app.get("/hub/echo-name/{name}")
    async def echo_name(name: str) -> None:
        raise NotFound(f"No such user: {name.replace('s', chr(0xD800))}")  # as if a lone surrogate came in

    @app.get("/hub/api/boom")
    @app.get("/hub/page-boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    @app.get("/hub/page")
    async def page() -> dict[str, str]:
        return {}

    @app.get("/hub/api/outage/{kind}")
    @app.get("/hub/outage/{kind}")
    async def outage(kind: str) -> None:
        raise OUTAGES[kind]

    return app


# what an outage looks like as it reaches a handler (PostgreSQL restarting, a dead pooled connection, the
# pool exhausted, NATS away), and what is not one
OUTAGES: dict[str, Exception] = {
    "cannot-connect-now": asyncpg.CannotConnectNowError("the database system is starting up"),
    "invalidated": DBAPIError("SELECT 1", {}, Exception("connection is closed"), connection_invalidated=True),
    "pool-timeout": PoolTimeout("QueuePool limit reached"),
    "wrapped": RuntimeError("while saving"),
    "bus": BusError("publish to ns.cmd.spawn.x failed: nats: timeout"),
    "nats": NatsTimeout(),
    "integrity": IntegrityError("INSERT", {}, Exception("duplicate key")),
}
OUTAGES["wrapped"].__cause__ = asyncpg.ConnectionDoesNotExistError("connection was closed")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def _assert_common(r: httpx.Response) -> None:
    assert r.headers["x-jupyterhub-version"] == "5.4.0"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_errors_have_jupyterhubs_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/hub/api/conflict")
    assert r.status_code == 409 and r.json() == {"status": 409, "message": "User x already exists"}
    assert r.headers["content-type"] == "application/json"
    r = await client.get("/hub/api/busy")
    assert r.status_code == 429 and r.headers["retry-after"] == "42"
    for path in ("/hub/api/number", "/hub/api/number?n=x", "/hub/api/number?n=1.5"):
        r = await client.get(path)
        assert r.status_code == 400 and r.json()["status"] == 400 and "n" in r.json()["message"], path
        _assert_common(r)
    r = await client.get("/hub/api/missing")
    assert r.status_code == 404 and r.json() == {"status": 404, "message": "Not Found"}
    r = await client.delete("/hub/api/conflict")
    assert r.status_code == 405 and r.json()["status"] == 405


async def test_unexpected_errors_keep_the_headers_and_hide_the_detail(client: httpx.AsyncClient) -> None:
    r = await client.get("/hub/api/boom")
    assert r.status_code == 500 and r.json() == {"status": 500, "message": "Unhandled error"}
    _assert_common(r)
    r = await client.get("/hub/page-boom", headers={"Accept": "text/html"})
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert "secret detail" not in r.text and "Traceback" not in r.text
    _assert_common(r)


async def test_pages_get_html_errors_and_frame_protection(client: httpx.AsyncClient) -> None:
    r = await client.get("/hub/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    r = await client.get("/hub/nope", headers={"Accept": "application/json"})
    assert r.json() == {"status": 404, "message": "Not Found"}


async def test_options_on_the_api(client: httpx.AsyncClient) -> None:
    r = await client.options("/hub/api/anything/at/all")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["access-control-allow-headers"] == "accept, content-type, authorization"
    _assert_common(r)


@pytest.mark.parametrize(("body", "status", "expected"), [
    (b'{"a": 1}', 200, {"got": {"a": 1}}), (b"", 200, {"got": None}), (b"  \n", 200, {"got": None}),
    (b"[1, 2]", 200, {"got": [1, 2]}), (b"{bad", 400, None), (b"\xff\xfe{}", 400, None),
    (b"[" * 100_000 + b"]" * 100_000, 413, None), (b"[" * 900, 400, None), (b'"' + b"x" * 2000 + b'"', 413, None),
])
async def test_json_bodies(client: httpx.AsyncClient, body: bytes, status: int, expected: Any) -> None:
    r = await client.post("/hub/api/echo", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == status, r.text
    if expected is not None:
        assert r.json() == expected
    else:
        assert r.json()["status"] == status and r.json()["message"]


@pytest.mark.parametrize(("body", "message"), [
    (rb'{"a": "x\u0000y"}', "strings must not contain NUL characters or lone surrogates"),
    (rb'{"a\u0000": 1}', "strings must not contain NUL characters or lone surrogates"),
    (rb'["\ud800"]', "strings must not contain NUL characters or lone surrogates"),
    (rb'{"a": [{"b": "\udfff"}]}', "strings must not contain NUL characters or lone surrogates"),
    (b'{"a": 1e400}', "numbers must be finite"),
])
async def test_json_postgresql_cannot_store_is_a_400(client: httpx.AsyncClient, body: bytes, message: str) -> None:
    r = await client.post("/hub/api/echo", content=body)
    assert r.status_code == 400 and r.json()["message"] == f"Invalid JSON in request body: {message}"


@pytest.mark.parametrize("body", [b'{"a": NaN}', b"[Infinity]", b"-Infinity"])
async def test_nan_and_infinity_are_not_json(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post("/hub/api/echo", content=body)  # Python's parser takes them
    assert r.status_code == 400 and r.json()["message"] == "Invalid JSON in request body: numbers must be finite"


async def test_a_message_with_a_lone_surrogate_still_renders(client: httpx.AsyncClient) -> None:
    r = await client.get("/hub/api/echo-name/bsb")
    assert r.status_code == 404 and r.json() == {"status": 404, "message": "No such user: b\\ud800b"}
    r = await client.get("/hub/echo-name/bsb", headers={"Accept": "text/html"})
    assert r.status_code == 404 and "No such user: b\\ud800b" in r.text


async def test_deeply_nested_json_is_a_400() -> None:
    transport = httpx.ASGITransport(app=_deep_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/hub/api/deep", content=b"[" * 200_000)  # RecursionError inside json, not a 500
        assert r.status_code == 400 and r.json()["message"] == "Invalid JSON in request body"


def _deep_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(CommonHeaders)

    @app.post("/hub/api/deep")
    async def deep(request: Request) -> Any:
        return await read_json(request, max_bytes=10**6)

    return app


def test_iso_timestamps() -> None:
    assert iso(None) is None
    assert iso(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05Z"
    assert iso(datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)) == "2024-01-02T03:04:05.123456Z"
    plus_two = timezone(timedelta(hours=2))
    assert iso(datetime(2024, 1, 2, 5, 4, 5, tzinfo=plus_two)) == "2024-01-02T03:04:05Z"
    assert iso(datetime(2024, 1, 2, 0, 4, 5, 7, tzinfo=plus_two)) == "2024-01-01T22:04:05.000007Z"
    assert iso(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05Z"  # naive: taken as UTC
    assert iso(datetime(2024, 1, 2, 3, 4, 5, 120000)) == "2024-01-02T03:04:05.120000Z"
    assert iso(datetime(2024, 1, 2, 3, 4, 5, 9, tzinfo=timezone(timedelta(0)))) == "2024-01-02T03:04:05.000009Z"


@pytest.mark.parametrize("kind", ["cannot-connect-now", "invalidated", "pool-timeout", "wrapped"])
async def test_database_outage_is_a_503_naming_the_database(client: httpx.AsyncClient, kind: str) -> None:
    r = await client.get(f"/hub/api/outage/{kind}")
    assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
    assert r.json() == {"status": 503, "message": "The database is unavailable; try again in a few seconds"}
    _assert_common(r)
    page = await client.get(f"/hub/outage/{kind}", headers={"Accept": "text/html"})
    assert page.status_code == 503 and page.headers["retry-after"] == "2"
    assert "The database is unavailable" in page.text and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("kind", ["bus", "nats"])
async def test_bus_outage_is_a_503_naming_the_bus(client: httpx.AsyncClient, kind: str) -> None:
    r = await client.get(f"/hub/api/outage/{kind}")
    assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
    assert r.json()["message"] == "The message bus (NATS) is unavailable; try again in a few seconds"  # no subject


async def test_other_database_errors_stay_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/hub/api/outage/integrity")
    assert r.status_code == 500 and r.json()["message"] == "Unhandled error" and "retry-after" not in r.headers
