"""The api's webhook delivery decision for each answer of a receiver (through the `Post` seam, no network):
ack on 2xx, nak with backoff on a failure, give up at the limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from fleethub.services.api.webhooks import deliver
from fleethub.shared.bus import Decision, Delivery, GiveUp
from fleethub.shared.events import ServerReady, UserCreated, wrap
from fleethub.shared.webhook_settings import WebhookSettings
from fleethub.shared.webhook_signature import SIGNATURE_HEADER, verify

SECRET = "0123456789abcdef-secret"
HOOK = {"name": "audit", "url": "https://receiver.example/hook", "secret": SECRET}


def _delivery(message: Any, num_delivered: int = 1, age: float = 0.0) -> Delivery:
    env = wrap(message)
    env = env.model_copy(update={"time": datetime.now(UTC) - timedelta(seconds=age)})
    return Delivery(env, message, num_delivered, cast(Any, None))


class Answers:
    """A receiver seen through the `Post` seam: answers a status or raises, and records the requests."""

    def __init__(self, answer: int | Exception) -> None:
        self.answer = answer
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    async def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.posts.append((url, body, headers))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_2xx_acks_and_the_post_is_signed() -> None:
    hook = WebhookSettings.model_validate(HOOK)
    post = Answers(204)
    assert await deliver(hook, post, _delivery(UserCreated(name="ann"))) == Decision.ack()
    [(url, body, headers)] = post.posts
    assert url == HOOK["url"] and verify(SECRET, headers[SIGNATURE_HEADER], body)


async def test_an_unwanted_type_is_acked_without_a_post() -> None:
    hook = WebhookSettings.model_validate({**HOOK, "events": ["server.*"]})
    post = Answers(204)
    assert await deliver(hook, post, _delivery(UserCreated(name="ann"))) == Decision.ack()
    assert post.posts == []


@pytest.mark.parametrize("answer", [500, 302, 404, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_a_failure_naks_with_backoff_then_gives_up(answer: int | Exception) -> None:
    hook = WebhookSettings.model_validate({**HOOK, "max_attempts": 3, "backoff_first": 2})
    msg = ServerReady(user="ann", spawn_id="s1", url="/user/ann/", target="http://127.0.0.1:1")
    assert await deliver(hook, Answers(answer), _delivery(msg, 1)) == Decision.nak(2.0)
    assert await deliver(hook, Answers(answer), _delivery(msg, 2)) == Decision.nak(4.0)
    with pytest.raises(GiveUp, match="after 3 attempts"):
        await deliver(hook, Answers(answer), _delivery(msg, 3))


async def test_a_failure_past_the_max_age_gives_up() -> None:
    hook = WebhookSettings.model_validate({**HOOK, "max_age": 60})
    with pytest.raises(GiveUp, match="HTTP 503"):
        await deliver(hook, Answers(503), _delivery(UserCreated(name="ann"), 1, age=61))
