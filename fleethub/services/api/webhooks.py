"""Webhook delivery: each `[[webhooks]]` entry is one durable consumer (`webhook-<name>`) on the events
stream, shared by every api replica, whose handler POSTs the event's envelope, signed, to the webhook's URL.

Why the api: it already runs replicated with the database (where dead letters go) and an HTTP client,
and its NATS identity is the one that declares the events stream; a separate deliverer process would be
one more thing to run and watch for the sake of a few POSTs. Replicas share the durable, so each event is
delivered once whatever their number (at least once across a crash: `Fleethub-Event-Id` lets a receiver
drop a repeat). The consumer holds one event in flight (`max_ack_pending` 1): events arrive in stream
order, and an event being retried holds back those after it, so none overtakes another.

A 2xx answer acks; anything else (another status, a redirect, a timeout, a refused connection) naks with
the webhook's exponential backoff, until the event was tried `max_attempts` times or is older than
`max_age`: then it becomes a dead letter (the `dead_letters` table, consumer `webhook-<name>`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx

from fleethub.shared import deadletters
from fleethub.shared.bus import Decision, Delivery, GiveUp, Handler
from fleethub.shared.bus.permissions import webhook_durable
from fleethub.shared.events import events_filter, utcnow
from fleethub.shared.eventtypes import type_matches
from fleethub.shared.service import Runtime
from fleethub.shared.webhook_settings import WebhookSettings
from fleethub.shared.webhook_signature import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)
USER_AGENT = "fleethub-webhooks/1"
# a durable keeps the config it was created with, so its ack wait must outlast any `timeout` (at most 120 s)
# a webhook may be given later; it only matters when a replica dies while delivering (redelivered then)
ACK_WAIT = 150.0

Post = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]
"""POST a body with headers and a timeout; returns the HTTP status (raises on a network error)."""


async def deliver(hook: WebhookSettings, post: Post, delivery: Delivery) -> Decision:
    """Deliver one event to `hook`: ack on 2xx (or when its type is not wanted), nak with backoff on a
    failure, raise `GiveUp` once the retry limits are reached."""
    envelope = delivery.envelope
    if not type_matches(envelope.type, hook.events):
        return Decision.ack()
    body = envelope.model_dump_json().encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_ID_HEADER: envelope.id,
               EVENT_TYPE_HEADER: envelope.type,
               SIGNATURE_HEADER: sign(hook.secret.get_secret_value(), body)}
    try:
        status = await post(hook.url, body, headers, hook.timeout)
    except (httpx.HTTPError, OSError) as exc:
        failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        if 200 <= status < 300:
            return Decision.ack()
        failure = f"HTTP {status}"
    attempt = delivery.num_delivered
    age = (utcnow() - envelope.time).total_seconds()
    if attempt >= hook.max_attempts or age >= hook.max_age:
        raise GiveUp(f"webhook {hook.name}: {envelope.type} {envelope.id} not delivered after {attempt} attempts "
                     f"over {age:.0f}s (last: {failure})")
    delay = hook.backoff(attempt)
    log.warning("webhook %s: %s %s not delivered (attempt %d: %s); again in %.1fs", hook.name, envelope.type,
                envelope.id, attempt, failure, delay)
    return Decision.nak(delay)


def handler(hook: WebhookSettings, client: httpx.AsyncClient) -> Handler:
    """The consumer handler of `hook`, posting with `client` (redirects are not followed)."""

    async def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        # httpx's timeout bounds each phase (connect, each read); a receiver dripping its answer is bounded
        # by the whole (TimeoutError, an OSError: a failed delivery)
        async with asyncio.timeout(timeout):
            response = await client.post(url, content=body, headers=headers, timeout=timeout)
        return response.status_code

    async def handle(delivery: Delivery) -> Decision:
        return await deliver(hook, post, delivery)

    return handle


async def _run(runtime: Runtime, hook: WebhookSettings, bound: asyncio.Event) -> None:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        await runtime.bus.consume(
            durable=webhook_durable(hook.name), filter_subject=events_filter(runtime.settings.nats_namespace),
            kind="evt", handler=handler(hook, client), concurrency=1, max_ack_pending=1,
            ack_wait=ACK_WAIT, bound=bound, dead_letter=deadletters.sink(runtime.sessions))


async def start_webhooks(runtime: Runtime, wait: float = 10.0) -> None:
    """Deliver every configured webhook in a background task of the runtime; return once each durable exists
    (or after `wait` seconds), so no event published after start-up is missed."""
    bound = []
    for hook in runtime.settings.webhooks:
        ready = asyncio.Event()
        bound.append(ready)
        runtime.spawn(_run(runtime, hook, ready), f"webhook-{hook.name}")
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in bound)), wait)
    except TimeoutError:
        log.warning("webhook consumers not all bound after %.0fs; serving anyway", wait)
