"""Which replicas are running, on request: every service replica answers a core request on
`<ns>.status.ping` with its `ReplicaInfo`, and `fleethub status` gathers the answers for a moment.

Asked, not announced: nothing is sent while nobody asks (no idle traffic, no bucket to keep), and every
kind of service answers, including those without a registry entry (spawner workers, proxy nodes, culler).
Only the `status` identity may ask (`permissions.TABLE`). Queue depths are read from JetStream the same
way, as our own models (`ConsumerDepth`), so no caller handles a nats type.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleethub.shared.bus.connection import Connection
from fleethub.shared.bus.kv import nats_errors

log = logging.getLogger(__name__)

PING_SUBJECT = "{ns}.status.ping"


def ping_subject(namespace: str) -> str:
    """The subject `fleethub status` asks replicas on."""
    return PING_SUBJECT.format(ns=namespace)


class ReplicaInfo(BaseModel):
    """One replica's answer to a status ping."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str = Field(description="The service: auth, api, spawner, proxy or culler.")
    replica: str = Field(description="The replica id (also its NATS client name and its logs' `replica`).")
    host: str = Field("", description="The host it runs on.")
    pid: int = Field(0, description="Its process id on that host.")
    started: float = Field(0.0, description="When it started (epoch seconds).")


def replica_info(service: str, replica: str) -> ReplicaInfo:
    """This process's answer as replica `replica` of `service`, started now."""
    return ReplicaInfo(service=service, replica=replica, host=socket.gethostname(), pid=os.getpid(),
                       started=time.time())


async def answer_pings(conn: Connection, namespace: str, info: ReplicaInfo) -> Any:
    """Answer every status ping with `info`; returns the subscription (its `unsubscribe()` ends it)."""
    body = info.model_dump_json().encode()

    async def on_msg(msg: Msg) -> None:
        if msg.reply:
            try:
                await msg.respond(body)
            except Exception as exc:  # NATS away: the asker gets no answer from us, and says so
                log.debug("status ping not answered: %s", exc)

    return await conn.nc.subscribe(ping_subject(namespace), cb=on_msg)


async def gather_replicas(conn: Connection, namespace: str, wait: float) -> list[ReplicaInfo]:
    """Ask every replica, and collect the answers that come within `wait` seconds (sorted).

    Raises:
        BusError: NATS refused the request (permissions) or is away.
    """
    answers: list[ReplicaInfo] = []

    async def on_msg(msg: Msg) -> None:
        try:
            answers.append(ReplicaInfo.model_validate_json(msg.data))
        except ValidationError:
            log.warning("ignoring an unreadable status answer on %s", msg.subject)

    with nats_errors("status ping"):
        inbox = conn.nc.new_inbox()
        sub = await conn.nc.subscribe(inbox, cb=on_msg)
        try:
            await conn.nc.publish(ping_subject(namespace), b"{}", reply=inbox)
            await conn.nc.flush(timeout=5)
            await asyncio.sleep(wait)
        finally:
            await sub.unsubscribe()
    return sorted(set(answers), key=lambda a: (a.service, a.replica))


class ConsumerDepth(BaseModel):
    """One durable consumer's backlog, as JetStream counts it."""

    model_config = ConfigDict(frozen=True)

    stream: str = Field(description="The stream it reads.")
    consumer: str = Field(description="Its durable name.")
    pending: int = Field(description="Messages of its filter not yet delivered.")
    ack_pending: int = Field(description="Delivered, not yet acknowledged.")
    redelivered: int = Field(description="Delivered more than once and not yet acknowledged.")
    waiting: int = Field(description="Pull requests waiting (about: idle workers).")


class StreamDepth(BaseModel):
    """One stream's size and its durable consumers."""

    model_config = ConfigDict(frozen=True)

    stream: str = Field(description="The stream.")
    messages: int = Field(description="Messages it holds.")
    consumers: list[ConsumerDepth] = Field(description="Its durable consumers (ephemeral ones are left out).")


async def stream_depths(conn: Connection, streams: list[str]) -> list[StreamDepth]:
    """Size and durable consumers of each of `streams` (a missing stream: 0 messages, no consumer).

    Raises:
        BusError: JetStream did not answer or refused (permissions).
    """
    from nats.js.errors import NotFoundError

    out = []
    for stream in streams:
        with nats_errors(f"info of stream {stream}"):
            try:
                info = await conn.js.stream_info(stream)
            except NotFoundError:
                out.append(StreamDepth(stream=stream, messages=0, consumers=[]))
                continue
            consumers = await conn.js.consumers_info(stream)
        out.append(StreamDepth(
            stream=stream, messages=info.state.messages,
            consumers=sorted((ConsumerDepth(stream=stream, consumer=c.name, pending=c.num_pending or 0,
                                            ack_pending=c.num_ack_pending or 0,
                                            redelivered=c.num_redelivered or 0, waiting=c.num_waiting or 0)
                              for c in consumers if c.config.durable_name), key=lambda c: c.consumer)))
    return out
