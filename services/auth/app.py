"""The auth service's FastAPI app and process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from shared.events import RegistryEntry
from shared.http import CommonHeaders, install_error_handlers
from shared.registry import announce
from shared.service import advertise_url, bind_socket, open_runtime, serve_app
from shared.settings import ServiceSettings

from services.auth.authenticators import load_authenticator
from services.auth.routes import login


def create_app(settings: ServiceSettings, advertise: str | None = None) -> FastAPI:
    """The auth app; `advertise` is the URL registered for the proxy (None: not registered)."""
    authenticator = load_authenticator(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_runtime(settings, "auth", pool_size=5) as runtime:
            if advertise:
                runtime.spawn(announce(runtime.bus, RegistryEntry(service="auth", replica=runtime.replica, url=advertise)),
                              "registry")
            yield {"runtime": runtime, "authenticator": authenticator}

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.add_middleware(CommonHeaders)
    app.include_router(login.router)
    return app


def run(settings: ServiceSettings) -> None:
    """Serve the auth app until SIGINT/SIGTERM."""
    sock = bind_socket(settings.auth.host, settings.auth.port)
    serve_app(create_app(settings, advertise_url(settings.auth, sock)), sock, settings.log_level)
