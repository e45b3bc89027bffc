"""An outside consumer of fleethub's events: a durable pull consumer, as the read-only `events` account."""

import asyncio
import json
import os

import nats
from nats.errors import TimeoutError as FetchTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def main() -> None:
    namespace = os.environ.get("FLEETHUB_NAMESPACE", "fh")
    nc = await nats.connect(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        nkeys_seed=os.environ["EVENTS_SEED"],  # e.g. .fleethub/nats-keys/events.nk
        inbox_prefix="_INBOX_events",  # the only inbox this account may read
    )
    js = nc.jetstream()
    # a durable consumer keeps its place on the server across restarts of this program
    sub = await js.pull_subscribe(
        f"{namespace}.evt.>",  # or one kind: f"{namespace}.evt.server.>"
        durable="my-audit",
        stream=f"{namespace.upper()}_EVENTS",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
    )
    while True:
        try:
            messages = await sub.fetch(10, timeout=5)
        except FetchTimeout:
            continue
        for msg in messages:
            event = json.loads(msg.data)  # the envelope: id, type, version, time, data
            print(event["id"], event["type"], json.dumps(event["data"]), flush=True)
            await msg.ack()  # done: not delivered again


if __name__ == "__main__":
    asyncio.run(main())
