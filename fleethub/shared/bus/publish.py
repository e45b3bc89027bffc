"""Publishing to JetStream with `Nats-Msg-Id` (retried with the same id, so a retry is never a second
message): one message, or an atomic batch of them that the stream stores whole or not at all."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from typing import Any

from fleethub.shared.bus.connection import Connection
from fleethub.shared.bus.topology import Topology
from fleethub.shared.errors import BusError

# JetStream's error code for an atomic batch sent to a stream that does not allow atomic publishing
BATCH_DISABLED = 10174
BATCH_MAX = 1000  # the server's limit of messages in one atomic batch


class BatchRefused(BusError):
    """An atomic batch was not stored: publish its messages one by one instead (deduplication drops any
    the stream already has)."""


def _pub_ack(data: bytes) -> dict[str, Any]:
    """JetStream's answer to a publish, as a dict (an unreadable one becomes an error)."""
    try:
        ack = json.loads(data)
    except ValueError:
        ack = None
    return ack if isinstance(ack, dict) else {"error": {"description": f"unreadable answer {data[:100]!r}"}}


def _batch_headers(batch_id: str, seq: int, last: int, msg_id: str) -> dict[str, str]:
    """The headers of message `seq` (1-based) of the `last` messages of batch `batch_id`."""
    h = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq), "Nats-Msg-Id": msg_id}
    if seq == last:
        h["Nats-Batch-Commit"] = "1"
    return h


async def publish_raw(conn: Connection, subject: str, payload: bytes, msg_id: str, *, attempts: int = 5) -> None:
    """Publish to JetStream and wait for the ack, retrying with the same `Nats-Msg-Id`.

    Raises:
        BusError: no ack after `attempts` tries.
    """
    delay = 0.1
    for attempt in range(attempts):
        try:
            await conn.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
            return
        except Exception as exc:  # timeouts and no-responders are ambiguous: retry, dedup makes it safe
            if attempt == attempts - 1:
                raise BusError(f"publish to {subject} failed: {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _send_batch(conn: Connection, items: Sequence[tuple[str, bytes, str]], batch_id: str) -> dict[str, Any]:
    """Send `items` once as batch `batch_id`; returns the server's answer (to the first message if it did
    not start a batch, else to the commit)."""
    nc = conn.nc
    if not nc.is_connected:
        raise BusError("not connected to NATS")
    last = len(items)
    subject, payload, msg_id = items[0]
    started = await nc.request(subject, payload, timeout=5, headers=_batch_headers(batch_id, 1, last, msg_id))
    if started.data:  # an acknowledgement or an error: the server did not start a batch
        return _pub_ack(started.data)
    for seq, (subject, payload, msg_id) in enumerate(items[1:-1], 2):
        await nc.publish(subject, payload, headers=_batch_headers(batch_id, seq, last, msg_id))
    subject, payload, msg_id = items[-1]
    committed = await nc.request(subject, payload, timeout=5, headers=_batch_headers(batch_id, last, last, msg_id))
    return _pub_ack(committed.data)


async def publish_batch(conn: Connection, topology: Topology, items: Sequence[tuple[str, bytes, str]], *,
                        attempts: int = 5) -> None:
    """Publish `items` (subject, payload, message id; 2 to `BATCH_MAX` of them, all on one stream that
    `takes_batches`) as one atomic batch: the stream stores all of them, in order, or none.

    The first message is a request: a server that batches answers it with an empty reply (one that
    does not stores it as an ordinary message, and the rest is not sent). The ones between are
    not requests, and the last one's acknowledgement covers the batch. A try that gets no answer (a
    timeout, the connection down) is made again whole, under a new batch id. Nothing is sent while
    the connection is down: nats-py would hold it and send it after reconnecting, perhaps after
    the duplicate window.

    Raises:
        BatchRefused: the server answered with an error, or does not batch. The batch is not stored
            (its first message may be, as an ordinary one): the stream already has one of the ids
            (a try that was stored but not acknowledged, or rows published before), atomic
            publishing is off, too many batches are in flight, a message is refused. Publishing
            the items one by one is then right: deduplication drops what the stream has.
        BusError: no answer after `attempts` tries.
    """
    if not 1 < len(items) <= BATCH_MAX:
        raise ValueError(f"an atomic batch holds 2 to {BATCH_MAX} messages, not {len(items)}")
    stream = topology.stream_of(items[0][0]) or ""
    last = len(items)
    delay = 0.1
    problem = ""
    for attempt in range(attempts):
        batch_id = secrets.token_hex(11)
        try:
            ack = await _send_batch(conn, items, batch_id)
        except Exception as exc:  # timeouts and no-responders are ambiguous: the next try tells
            problem = str(exc) or type(exc).__name__
            if attempt < attempts - 1:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            continue
        error = ack.get("error")
        if error is None and ack.get("batch") == batch_id and ack.get("count") == last:
            return
        if error is None or (isinstance(error, dict) and error.get("err_code") == BATCH_DISABLED):
            topology.batches_off(stream, f"{ack}")
            raise BatchRefused(f"{stream} does not take atomic batches")
        raise BatchRefused(str(error.get("description", error) if isinstance(error, dict) else error))
    raise BusError(f"atomic batch of {last} to {items[0][0]}… failed: {problem}")
