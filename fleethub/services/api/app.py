"""The api service's FastAPI app and process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI
from starlette.types import ASGIApp

from fleethub.services.api.activity import TokenUse
from fleethub.services.api.config_sync import sync_config
from fleethub.services.api.consumers import start_consumers
from fleethub.services.api.deps import ApiState
from fleethub.services.api.fastread import FastReads, FastUserRead
from fleethub.services.api.hub_metrics import hub_gauges
from fleethub.services.api.routes import (
    accept_share,
    activity,
    admin_page,
    authorizations,
    groups,
    home,
    hub_services,
    info,
    metrics,
    pages,
    passwords,
    proxy,
    servers,
    shares,
    signups,
    static,
    token_page,
    tokens,
    user_redirect,
    users,
)
from fleethub.services.api.users import reseal_auth_states
from fleethub.services.api.waiters import Waiters
from fleethub.services.api.webhooks import start_webhooks
from fleethub.shared.authenticators import load_authenticator
from fleethub.shared.baseurl import BasePrefix
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.events import (
    AccessChanged,
    Envelope,
    GroupChanged,
    Message,
    RegistryEntry,
    TokenRevoked,
    UserDeleted,
    UserUpdated,
    server_events_filter,
    subject_filter,
)
from fleethub.shared.health import probe_router
from fleethub.shared.http import NO_TELEMETRY, CommonHeaders, install_error_handlers
from fleethub.shared.identity import TokenCache
from fleethub.shared.rbac import ScopeCache
from fleethub.shared.registry import announce
from fleethub.shared.request_ids import RequestIds
from fleethub.shared.request_metrics import RequestTimer
from fleethub.shared.service import advertise_url as advertise_url_of
from fleethub.shared.service import bind_socket, open_runtime, serve_app, serve_app_until, settle_heap
from fleethub.shared.settings import ServiceSettings
from fleethub.shared.templating import Templates


def create_app(settings: ServiceSettings, advertise_url: str | None = None) -> FastAPI:
    """The api app; `advertise_url` is registered for the proxies (None: not registered, e.g. in tests)."""
    # the api checks the credentials of token requests and refreshes users before spawns (refresh_pre_spawn)
    authenticator = load_authenticator(settings)
    templates = Templates(settings)  # a missing template_paths directory or a template's syntax error fails here

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[ApiState]:
        # open_runtime: database (schema checked) → secret key → bus and topology → outbox relay
        # a service process (advertised) stops on `hub.shutdown`; an app in a test does not
        # pool: 20 kept connections, so 16+ concurrent requests do not open and close overflow connections
        async with open_runtime(settings, "api", pool_size=20,
                                exit_on_shutdown=advertise_url is not None) as runtime:
            async with runtime.sessions() as session, session.begin():
                await sync_config(session, settings, runtime.secret_key)
            runtime.relay.kick()
            runtime.metrics.refreshers.append(hub_gauges(runtime, runtime.metrics))
            crypt = AuthStateCrypt(settings.auth.crypt_keys)
            await reseal_auth_states(runtime.sessions, crypt)
            waiters = Waiters(runtime.read_sessions or runtime.sessions)  # one SELECT a read: autocommit
            # one core subscription per process resolves every waiting start/stop request
            await runtime.bus.subscribe_events(server_events_filter(settings.nats_namespace), waiters.on_event)
            await start_consumers(runtime)
            await start_webhooks(runtime)
            cache = TokenCache()
            scope_cache = ScopeCache()
            # every replica forgets revoked tokens, deleted users and changed rights at once, not only
            # after the caches' TTL; a reconnect (events may have been missed) forgets everything
            forget = _forget(cache, scope_cache)
            for model in (TokenRevoked, UserDeleted, UserUpdated, AccessChanged, GroupChanged):
                await runtime.bus.subscribe_events(subject_filter(model, settings.nats_namespace), forget)
            runtime.bus.on_reconnect += [cache.clear, scope_cache.clear]
            token_use = TokenUse(runtime.sessions)
            runtime.spawn(token_use.run(), "token-activity")
            fast_reads = FastReads(runtime.engine, runtime.sessions, cache, scope_cache, token_use,
                                   settings.custom_subscopes, crypt, base_url=settings.base_url)
            if advertise_url:  # last: traffic comes only once everything above is up
                entry = RegistryEntry(service="api", replica=runtime.replica, url=advertise_url)
                runtime.spawn(announce(runtime.bus, entry), "registry")
                settle_heap()  # a service process (not an app inside tests): see settle_heap
            try:
                yield {"runtime": runtime, "waiters": waiters, "token_cache": cache, "scope_cache": scope_cache,
                       "fast_reads": fast_reads, "token_use": token_use, "crypt": crypt,
                       "authenticator": authenticator, "templates": templates}
            finally:
                await token_use.flush()
                fast_reads.close()
                await authenticator.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, telemetry=NO_TELEMETRY)
    install_error_handlers(app)
    app.add_middleware(CommonHeaders)
    app.add_middleware(BasePrefix, base_url=settings.base_url)  # the app sees /hub/... paths
    app.add_middleware(RequestIds, service="api")  # outermost: whatever answers, the request has its id
    for module in (info, users, passwords, signups, tokens, authorizations, servers, groups, shares, hub_services,
                   activity, proxy, pages, user_redirect, accept_share, admin_page, token_page, home, static, metrics):
        app.include_router(module.router)
    app.include_router(probe_router())
    return app


def with_fast_reads(app: FastAPI, base_url: str = "/") -> ASGIApp:
    """The api app as served: behind `FastUserRead`, which answers the hot user read itself (with its request
    id: the app's own `RequestIds` leaves a request that has one alone), and the request timer
    (`jupyterhub_request_duration_seconds`) in front of both."""
    return RequestIds(RequestTimer(FastUserRead(app, base_url)), "api")


def _forget(cache: TokenCache, scopes: ScopeCache) -> Callable[[Envelope, Message], Awaitable[None]]:
    async def on_event(envelope: Envelope, message: Message) -> None:
        if isinstance(message, TokenRevoked):
            cache.drop_token(message.token_id)
            scopes.drop("service" if message.service else "user", [message.service or message.user or ""])
        elif isinstance(message, UserDeleted):
            cache.drop_user_named(message.name)
            scopes.drop("user", [message.name])
        elif isinstance(message, UserUpdated):
            for name in (message.name, message.renamed_from):
                if name:
                    cache.drop_user_named(name)
                    scopes.drop("user", [name])
        elif isinstance(message, GroupChanged):
            scopes.clear()  # a `group=` filter held by anyone may cover a new or a former member
        elif isinstance(message, AccessChanged):
            if message.everyone:
                scopes.clear()
            scopes.drop("user", message.users)
            scopes.drop("service", message.services)
            for name in message.services:  # a service deleted or changed: its cached tokens too
                cache.drop_user_named(name, kind="service")

    return on_event


def run(settings: ServiceSettings) -> None:
    """Serve the api app until SIGINT/SIGTERM."""
    sock = bind_socket(settings.api.host, settings.api.port)
    app = create_app(settings, advertise_url_of(settings.api, sock))
    serve_app(with_fast_reads(app, settings.base_url), sock, settings.log_level)


async def serve(settings: ServiceSettings, stop: asyncio.Event) -> None:
    """Serve the api app in the running loop until `stop` is set (hosted beside other services by `fleethub up`)."""
    sock = bind_socket(settings.api.host, settings.api.port)
    app = with_fast_reads(create_app(settings, advertise_url_of(settings.api, sock)), settings.base_url)
    await serve_app_until(app, sock, settings.log_level, stop)
