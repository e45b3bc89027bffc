"""Websockets through the proxy: echo both ways, every way of closing closes both sides, activity."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fleethub.shared.names import route_key
from fleethub.shared.net import free_port
from tests.integration.proxy.conftest import ProxyEnv, open_fds
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


class EchoServer:
    """A websocket echo server (the `websockets` library); "bye" makes it close, and it can be cut off."""

    def __init__(self) -> None:
        self.open: set[ServerConnection] = set()
        self.server: Any = None
        self.port = 0

    async def start(self) -> EchoServer:
        async def echo(ws: ServerConnection) -> None:
            self.open.add(ws)
            try:
                async for message in ws:
                    if message == "bye":
                        await ws.close()
                        return
                    await ws.send(message)
            except ConnectionClosed:
                pass
            finally:
                self.open.discard(ws)

        self.server = await serve(echo, "127.0.0.1", 0, max_size=None)
        self.port = int(next(iter(self.server.sockets)).getsockname()[1])
        return self

    def cut(self) -> None:
        """The upstream dies: every connection is reset, no close frame."""
        for ws in list(self.open):
            ws.transport.abort()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def _ws(base: str, path: str) -> Any:
    return connect(base.replace("http://", "ws://") + path, proxy=None, max_size=None, open_timeout=5,
                   ping_interval=None, close_timeout=2)


async def test_websocket_echo_and_every_close_closes_both_sides(env: ProxyEnv) -> None:
    echo = await EchoServer().start()
    try:
        await env.route("ws", f"http://127.0.0.1:{echo.port}")
        await env.route("wsgone", f"http://127.0.0.1:{free_port()}")
        proc, base = env.node()

        async def routed() -> bool:
            try:
                async with _ws(base, "/user/ws/"):
                    return True
            except (InvalidStatus, OSError):
                return False

        await wait_for(routed, timeout=20, what="websocket route")
        await wait_for(lambda: _is(len(echo.open), 0), what="first socket closed")
        fds = open_fds(proc.pid)

        # echo both ways, text and binary, small and large
        async with _ws(base, "/user/ws/api/kernels/k1/channels?session_id=s") as ws:
            for i in range(100):
                await ws.send(f"msg-{i}")
                assert await ws.recv() == f"msg-{i}"
            big = bytes(range(256)) * 4096  # 1 MB
            await ws.send(big)
            assert await ws.recv() == big
        await wait_for(lambda: _is(len(echo.open), 0), what="client close reaches the upstream")

        # the upstream closes: the client sees the close
        async with _ws(base, "/user/ws/") as ws:
            await ws.send("bye")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)

        # the upstream dies without a close frame: the client's connection is closed too
        async with _ws(base, "/user/ws/") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            echo.cut()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)

        # the route is deleted (server stopped): open websockets on it are closed by the proxy
        async with _ws(base, "/user/ws/") as ws:
            await ws.send("y")
            assert await ws.recv() == "y"
            await env.unroute("ws")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)

        # no upstream at all: 503, and nothing is left open
        for _ in range(5):
            with pytest.raises(InvalidStatus) as err:
                async with _ws(base, "/user/wsgone/"):
                    pass
            assert err.value.response.status_code == 503

        await wait_for(lambda: _is(open_fds(proc.pid), fds), timeout=5,
                       what=f"proxy back to {fds} open file descriptors")
    finally:
        await echo.stop()


async def test_websocket_traffic_counts_as_activity(env: ProxyEnv) -> None:
    echo = await EchoServer().start()
    sub, batches = await env.watch_activity()
    try:
        await env.route("wsa", f"http://127.0.0.1:{echo.port}")
        _, base = env.node()
        await wait_for(lambda: _connects(base, "/user/wsa/"), timeout=20, what="websocket route")
        async with _ws(base, "/user/wsa/") as ws:
            await asyncio.sleep(0.8)  # batches of the handshake are out
            since = datetime.now(UTC)
            for i in range(25):  # 2.5 s of websocket traffic only
                await ws.send(f"m{i}")
                assert await ws.recv() == f"m{i}"
                await asyncio.sleep(0.1)

            def ws_only() -> list[int]:
                return [r.requests for b in batches for r in b.routes
                        if r.key == route_key("wsa") and r.last_activity >= since]

            await wait_for(lambda: _is(len(ws_only()) >= 2, True), timeout=3, what="websocket activity")
            assert set(ws_only()) == {0}, "websocket frames bump activity but are not counted as requests"
    finally:
        await sub.unsubscribe()
        await echo.stop()


async def _is(value: object, expected: object) -> bool:
    return value == expected


async def _connects(base: str, path: str) -> bool:
    try:
        async with _ws(base, path):
            return True
    except (InvalidStatus, OSError):
        return False
