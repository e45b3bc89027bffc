"""Log formats: one JSON object per line with the context's service, replica and request id; secrets scrubbed
from every field, the exception text included."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest

from fleethub.shared.logging import bind_service, make_handler, request_scope, sane_request_id, service_scope
from fleethub.shared.request_ids import request_id_of


@pytest.fixture
def capture() -> Any:
    """A logger writing through the real handler (JSON) into a buffer; returns (logger, read)."""
    buffer = io.StringIO()
    handler = make_handler("proc", "json")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    logger = logging.getLogger("fleethub.test.logging")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    yield logger, read
    logger.handlers[:] = []


def test_json_record_fields_and_process_default(capture: Any) -> None:
    logger, read = capture
    logger.info("hello %s", "world")
    (rec,) = read()
    assert rec["message"] == "hello world" and rec["level"] == "INFO" and rec["logger"] == "fleethub.test.logging"
    assert rec["service"] == "proc" and rec["replica"] == "" and "request_id" not in rec and "exception" not in rec
    assert rec["time"].endswith("Z") and "T" in rec["time"]


def test_secrets_are_scrubbed_from_message_and_exception_text(capture: Any) -> None:
    logger, read = capture
    try:
        raise ValueError("connect to postgresql://fleethub:hunter2secret@db/x with token abcdef0123456789")
    except ValueError:
        logger.exception("failed: Authorization: token abcdef0123456789")
    (rec,) = read()
    text = json.dumps(rec)
    assert "hunter2secret" not in text and "abcdef0123456789" not in text
    assert "ValueError" in rec["exception"] and "Traceback" in rec["exception"]
    assert "[secret]" in rec["exception"] and "[secret]" in rec["message"]


def test_text_format_scrubs_the_traceback() -> None:
    buffer = io.StringIO()
    handler = make_handler("svc", "text")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    logger = logging.getLogger("fleethub.test.text")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        raise RuntimeError("GET /x?token=abcdef0123456789")
    except RuntimeError:
        logger.exception("boom")
    with request_scope("req-7"):
        logger.warning("inside")
    out = buffer.getvalue()
    assert " svc fleethub.test.text: boom" in out and "RuntimeError" in out and "abcdef0123456789" not in out
    assert " WARNING svc fleethub.test.text [req-7]: inside" in out


async def test_service_and_request_id_follow_the_context(capture: Any) -> None:
    logger, read = capture

    async def one_service(name: str) -> None:
        bind_service(name, f"{name}-1")  # as open_runtime does, in the task running that service
        await asyncio.sleep(0)
        logger.info("background")
        with request_scope(f"req-{name}"):
            await asyncio.sleep(0)
            logger.info("in a request")
            inner = asyncio.create_task(asyncio.sleep(0))  # tasks started inside inherit the id
            await inner
        logger.info("after")

    await asyncio.gather(asyncio.create_task(one_service("api")), asyncio.create_task(one_service("auth")))
    with service_scope("spawner", "spawner-9"):
        logger.info("scoped")
    logger.info("outside")
    recs = read()
    by = {(r["service"], r["message"]): r for r in recs}
    for name in ("api", "auth"):
        assert by[(name, "in a request")]["request_id"] == f"req-{name}"
        assert by[(name, "in a request")]["replica"] == f"{name}-1"
        assert "request_id" not in by[(name, "background")] and "request_id" not in by[(name, "after")]
    assert by[("spawner", "scoped")]["replica"] == "spawner-9"
    assert by[("proc", "outside")]["replica"] == ""  # the test's own task was never bound


@pytest.mark.parametrize(("value", "kept"), [
    ("abc", True), ("A.b_c-9", True), ("x" * 64, True), ("x" * 65, False), ("", False), ("a b", False),
    ("a\nb", False), ("é", False), (None, False),
])
def test_sane_request_ids(value: str | None, kept: bool) -> None:
    assert (sane_request_id(value) is not None) is kept
    headers = [(b"x-request-id", value.encode())] if value is not None else []
    got = request_id_of({"type": "http", "headers": headers})
    assert got == value if kept else len(got) == 32
