"""Request ids: every HTTP request to api and auth gets one, carried in a contextvar into its logs and into
the messages it publishes (`Envelope.request_id`), and echoed in the `X-Request-Id` response header.

A client's own `X-Request-Id` is adopted when it is a sane token (at most 64 of `[A-Za-z0-9._-]`), so a
caller can follow its request through the hub's logs and events; anything else is replaced by a new id.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleethub.shared.logging import request_scope, sane_request_id, service_scope

HEADER = b"x-request-id"
SCOPE_KEY = "fleethub.request_id"
"""Where the id sits in the ASGI scope (a second `RequestIds` in the same stack leaves the request alone)."""


def request_id_of(scope: Scope) -> str:
    """The id a request is known by: the client's `X-Request-Id` if sane, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            sane = sane_request_id(value.decode("latin-1"))
            if sane is not None:
                return sane
            break
    return uuid.uuid4().hex


class RequestIds:
    """ASGI middleware: the request id in the context (logs, published messages) and in the response.

    The service and replica of the records logged while handling the request come from the lifespan's
    `runtime` (a request does not run in the lifespan's task, which `bind_service` named).
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or SCOPE_KEY in scope:
            await self.app(scope, receive, send)
            return
        request_id = scope[SCOPE_KEY] = request_id_of(scope)
        echoed = (HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*(h for h in message.get("headers", ()) if h[0].lower() != HEADER), echoed]
            await send(message)

        runtime = (scope.get("state") or {}).get("runtime")
        replica = str(getattr(runtime, "replica", ""))
        with service_scope(self.service, replica), request_scope(request_id):
            await self.app(scope, receive, send_with_id)
