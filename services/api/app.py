"""The api service's FastAPI app and process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from shared.events import ActivityReported, RegistryEntry, subject_filter
from shared.http import CommonHeaders, install_error_handlers
from shared.identity import TokenCache
from shared.registry import announce
from shared.service import advertise_url, bind_socket, open_runtime, serve_app
from shared.settings import ServiceSettings

from services.api.consumers import activity_handler, server_events_handler
from services.api.routes import activity, info, pages, proxy, servers, users
from services.api.waiters import Waiters


def create_app(settings: ServiceSettings, advertise: str | None = None) -> FastAPI:
    """The api app; `advertise` is the URL registered for the proxy (None: not registered)."""
    ns = settings.nats_namespace

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_runtime(settings, "api") as runtime:
            waiters = Waiters(runtime.sessions)
            await runtime.bus.subscribe_events(f"{ns}.evt.server.>", waiters.on_event)
            runtime.spawn(runtime.bus.consume(durable="api-activity", filter_subject=subject_filter(ActivityReported, ns),
                                              kind="evt", handler=activity_handler(runtime), concurrency=4),
                          "activity-consumer")
            runtime.spawn(runtime.bus.consume(durable="api-server-events", filter_subject=f"{ns}.evt.server.>",
                                              kind="evt", handler=server_events_handler(runtime), concurrency=8),
                          "server-events-consumer")
            if advertise:
                runtime.spawn(announce(runtime.bus, RegistryEntry(service="api", replica=runtime.replica, url=advertise)),
                              "registry")
            yield {"runtime": runtime, "waiters": waiters, "token_cache": TokenCache()}

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.add_middleware(CommonHeaders)
    for module in (info, users, servers, activity, proxy, pages):
        app.include_router(module.router)
    return app


def run(settings: ServiceSettings) -> None:
    """Serve the api app until SIGINT/SIGTERM."""
    sock = bind_socket(settings.api.host, settings.api.port)
    serve_app(create_app(settings, advertise_url(settings.api, sock)), sock, settings.log_level)
