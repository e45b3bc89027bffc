"""ASGI middleware observing `jupyterhub_request_duration_seconds{method,handler,code}` for an HTTP service.

`handler` is the matched route's path template (`/hub/api/users/{name}`), never the raw path, so user
names do not become label values; a request no route matched is `unmatched`. `method` is one of the
standard methods, else `other`: a client picks the method, and each new one would be a new label set.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleethub.shared.metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods that are their own `method` label value (any other is `other`)."""


class RequestTimer:
    """Times every HTTP request of `app` into the metrics of the runtime in the lifespan state (`runtime`).

    The handler label is the matched route's path, else what an app in front of the router named itself
    with (`scope["fleethub.handler"]`, the api's fast user read), else `unmatched`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            runtime = state.get("runtime")
            metrics: Metrics | None = getattr(runtime, "metrics", None)
            if metrics is not None:
                route = scope.get("route")
                handler = getattr(route, "path", None) or scope.get("fleethub.handler") or "unmatched"
                method = scope["method"] if scope["method"] in METHODS else "other"
                metrics.request_duration.labels(method=method, handler=handler, code=str(code)).observe(
                    time.monotonic() - start)
