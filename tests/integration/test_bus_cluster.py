"""`nats_replicas` on a real 3-node JetStream cluster (as deploy/kubernetes runs NATS): the hub's streams
and buckets are declared with that many replicas, and the events stream keeps taking and keeping events
after the node leading it is killed."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from fleethub.shared.bus import Bus
from fleethub.shared.embedded import nats_server_binary
from fleethub.shared.events import UserCreated
from fleethub.shared.net import free_port
from fleethub.shared.settings import load_settings

pytestmark = pytest.mark.integration
NS = "clu"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, tuple[str, subprocess.Popen[bytes]]]]:
    """Three nats-servers with JetStream, routed to each other: server name -> (client URL, process)."""
    client = [free_port("127.0.0.1") for _ in range(3)]
    routes = [free_port("127.0.0.1") for _ in range(3)]
    nodes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for i in range(3):
            conf = tmp_path / f"n{i}.conf"
            conf.write_text(
                f'server_name: n{i}\nlisten: "127.0.0.1:{client[i]}"\n'
                f'jetstream {{ store_dir: "{tmp_path / f"n{i}"}" }}\n'
                f'cluster {{ name: t, listen: "127.0.0.1:{routes[i]}", routes: ['
                + ", ".join(f'"nats://127.0.0.1:{p}"' for p in routes) + "] }\n")
            log = (tmp_path / f"n{i}.log").open("wb")
            proc = subprocess.Popen([str(nats_server_binary()), "-c", str(conf)], stdout=log, stderr=log)
            nodes[f"n{i}"] = (f"nats://127.0.0.1:{client[i]}", proc)
        yield nodes
    finally:
        for _, proc in nodes.values():
            proc.terminate()
        for _, proc in nodes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_for_meta_leader(url: str) -> None:
    nc = await nats.connect(servers=url.split(","))
    try:
        for _ in range(300):  # the cluster elects its JetStream meta leader once the routes are up
            try:
                await nc.jetstream().account_info()
                return
            except Exception:
                await asyncio.sleep(0.1)
        raise AssertionError("the JetStream cluster elected no meta leader")
    finally:
        await nc.close()


async def test_streams_and_buckets_are_replicated_and_survive_a_node(
    cluster: dict[str, tuple[str, subprocess.Popen[bytes]]],
) -> None:
    urls = ",".join(url for url, _ in cluster.values())
    await _wait_for_meta_leader(urls)
    settings = load_settings(None, nats_url=urls, nats_namespace=NS, nats_replicas=3)
    bus = Bus(settings.nats_url, NS, "cluster-test", replicas=settings.nats_replicas)
    await bus.connect(timeout=20)
    try:
        await bus.ensure_topology(timeout=60)
        names = bus.names
        for stream in (names.cmd_stream, names.evt_stream, f"KV_{names.routes_bucket}",
                       f"KV_{names.registry_bucket}"):
            info = await bus.js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, stream
        await bus.publish(UserCreated(name="before"))
        info = await bus.js.stream_info(names.evt_stream)
        assert info.cluster is not None and info.cluster.leader in cluster
        old_leader = info.cluster.leader
        _, leader = cluster[old_leader]
        leader.kill()
        leader.wait()
        # a new leader is elected among the two left; the client moves to a live node by itself
        for _ in range(300):
            try:
                await bus.publish(UserCreated(name="after"))
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the events stream took no event after its leader was killed")
        info = await bus.js.stream_info(names.evt_stream)
        assert info.state.messages >= 2 and info.cluster is not None and info.cluster.leader not in (None, old_leader)
        first = await bus.js.get_msg(names.evt_stream, 1)
        assert b'"before"' in (first.data or b"")
    finally:
        await bus.close()


def test_a_single_server_keeps_one_replica_by_default() -> None:
    assert load_settings(None).nats_replicas == 1
    with pytest.raises(Exception, match="nats_replicas"):
        load_settings(None, nats_replicas=0)
