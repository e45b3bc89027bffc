"""The auth service's FastAPI app and process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from fleethub.services.auth.deps import AuthState
from fleethub.services.auth.first_admin import create_first_admins
from fleethub.services.auth.refresh import Refresher, interval
from fleethub.services.auth.routes import change_password, login, oauth, redirect, signup
from fleethub.shared.authenticators import load_authenticator, warn_without_allow_rule
from fleethub.shared.baseurl import BasePrefix
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.events import RegistryEntry
from fleethub.shared.health import probe_router
from fleethub.shared.http import NO_TELEMETRY, CommonHeaders, install_error_handlers
from fleethub.shared.logins import PostAuthHook
from fleethub.shared.registry import announce
from fleethub.shared.request_ids import RequestIds
from fleethub.shared.request_metrics import RequestTimer
from fleethub.shared.service import advertise_url as advertise_url_of
from fleethub.shared.service import bind_socket, open_runtime, serve_app, serve_app_until, settle_heap
from fleethub.shared.settings import ServiceSettings
from fleethub.shared.templating import Templates


def create_app(settings: ServiceSettings, advertise_url: str | None = None) -> FastAPI:
    """The auth app; `advertise_url` is registered for the proxies (None: not registered, e.g. in tests)."""
    authenticator = load_authenticator(settings)  # a bad name fails here, before serving
    post_auth = PostAuthHook(settings)
    crypt = AuthStateCrypt(settings.auth.crypt_keys)
    templates = Templates(settings)  # a missing template_paths directory or a template's syntax error fails here
    warn_without_allow_rule(authenticator)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AuthState]:
        async with open_runtime(settings, "auth", pool_size=5, exit_on_shutdown=advertise_url is not None) as runtime:
            await create_first_admins(runtime.sessions, settings)  # before serving: a bad file stops the start
            if interval(settings.auth.auth_refresh_age) is not None:  # auth_refresh_age = 0: no background refresh
                runtime.spawn(Refresher(runtime, authenticator, crypt).run(), "auth-refresh")
            if advertise_url:
                entry = RegistryEntry(service="auth", replica=runtime.replica, url=advertise_url)
                runtime.spawn(announce(runtime.bus, entry), "registry")
                settle_heap()  # a service process (not an app inside tests): see settle_heap
            try:
                yield {"runtime": runtime, "authenticator": authenticator, "crypt": crypt, "post_auth": post_auth,
                       "templates": templates}
            finally:
                await authenticator.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, telemetry=NO_TELEMETRY)
    install_error_handlers(app)
    app.add_middleware(CommonHeaders)
    app.add_middleware(RequestTimer)
    app.include_router(probe_router())
    app.add_middleware(BasePrefix, base_url=settings.base_url)  # the app sees /hub/... paths
    app.add_middleware(RequestIds, service="auth")  # outermost: whatever answers, the request has its id
    app.include_router(login.router)
    app.include_router(redirect.router)
    app.include_router(signup.router)
    app.include_router(change_password.router)
    app.include_router(oauth.router)
    return app


def run(settings: ServiceSettings) -> None:
    """Serve the auth app until SIGINT/SIGTERM."""
    sock = bind_socket(settings.auth.host, settings.auth.port)
    serve_app(create_app(settings, advertise_url_of(settings.auth, sock)), sock, settings.log_level)


async def serve(settings: ServiceSettings, stop: asyncio.Event) -> None:
    """Serve the auth app in the running loop until `stop` is set (hosted beside other services by `fleethub up`)."""
    sock = bind_socket(settings.auth.host, settings.auth.port)
    await serve_app_until(create_app(settings, advertise_url_of(settings.auth, sock)), sock, settings.log_level, stop)
