"""The hot read, `GET /hub/api/users/{name}` with a token, answered in front of FastAPI and without the ORM.

Scripts and services poll this endpoint (the idle culler, dashboards, "is my server ready yet"), so it
is the read whose cost decides how many clients a replica serves. `FastUserRead` wraps the api app and
answers it only in the plain case: a valid token (its identity and scopes cached, `TokenCache` and
`ScopeCache`, or looked up once as the route does), scopes that allow the read, and a user who exists.
That costs one prepared statement on a raw asyncpg connection kept out of the engine's pool (the
statement of the route, `queries.USER_IN_FULL`, read by the same `user_from_rows`) and the same model
code (`models.user_model`). Everything else (no token or an invalid one, cookies, a denial, no such
user, a database error, another query parameter) goes on to the FastAPI route, which answers it: one
behaviour, two speeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qsl

import asyncpg
from sqlalchemy.engine.interfaces import PoolProxiedConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from fleethub.services.api.access import Requester
from fleethub.services.api.activity import TokenUse
from fleethub.services.api.models import READ_USER_SCOPES, user_model
from fleethub.services.api.queries import USER_IN_FULL, user_from_rows
from fleethub.shared.baseurl import inner_path
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.http import API_RESPONSE_HEADERS
from fleethub.shared.identity import Identity, TokenCache, identity_from_token, token_from_header
from fleethub.shared.names import storable
from fleethub.shared.rbac import ScopeCache, cached_scopes, effective_scopes
from fleethub.shared.scopes import CustomSubscopes
from fleethub.shared.scopes import Scope as HeldScope
from fleethub.shared.security import hash_token

log = logging.getLogger(__name__)
# what a lost or refused database connection raises here (asyncpg's errors raw, SQLAlchemy's on checkout)
_CONNECTION_LOST = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                    asyncpg.exceptions.OperatorInterventionError)
_DATABASE_ERRORS = (*_CONNECTION_LOST, asyncpg.PostgresError, SQLAlchemyError)

PREFIX = "/hub/api/users/"
CONNECTIONS = 6  # enough to keep PostgreSQL busy for this one query; the rest of the pool is the routes'
_TRUE = ("1", "true", "yes", "on")  # as FastAPI reads a bool query parameter
_FALSE = ("0", "false", "no", "off")


class FastUserRead:
    """ASGI wrapper of the api app: answers the plain token-authenticated user read, passes on the rest."""

    def __init__(self, app: ASGIApp, base_url: str = "/") -> None:
        self.app = app
        self.base_url = base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = inner_path(self.base_url, scope["path"]) if scope["type"] == "http" else None
        if path is not None and scope["method"] == "GET" and path.startswith(PREFIX):
            reads: FastReads | None = (scope.get("state") or {}).get("fast_reads")
            if reads is not None and await reads.respond({**scope, "path": path}, send):
                scope["fleethub.handler"] = "fast-user-read"  # the request metrics' handler label
                return
        await self.app(scope, receive, send)


class _Connections:
    """Up to `size` raw connections checked out of the engine's pool once and kept: no checkout, reset and
    checkin per query. A connection that failed is invalidated; the next acquire opens another."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self.slots = asyncio.Semaphore(size)
        self.idle: list[PoolProxiedConnection] = []
        self._renewed = 0.0

    async def acquire(self) -> PoolProxiedConnection:
        await self.slots.acquire()
        if self.idle:
            return self.idle.pop()
        try:
            return await self.engine.raw_connection()
        except BaseException:
            self.slots.release()
            raise

    def release(self, conn: PoolProxiedConnection, *, broken: bool = False) -> None:
        if broken:
            conn.invalidate()
        else:
            self.idle.append(conn)
        self.slots.release()

    async def renew(self) -> None:
        """After a lost connection (PostgreSQL restarted or failed over): invalidate the idle ones, dead too,
        and renew the engine's pool (at most once a second), whose idle connections are as dead: the
        route's requests then get live ones rather than a 503 each."""
        while self.idle:
            self.idle.pop().invalidate()
        now = time.monotonic()
        if now - self._renewed > 1.0:
            self._renewed = now
            await self.engine.dispose()  # connections in use finish on the old pool and are closed

    def close(self) -> None:
        """Hand the idle connections back to the engine's pool."""
        while self.idle:
            self.idle.pop().close()


class FastReads:
    """What `FastUserRead` needs from the api's lifespan: the caches and connections of its own."""

    def __init__(self, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], tokens: TokenCache,
                 scopes: ScopeCache, token_use: TokenUse, custom: CustomSubscopes, crypt: AuthStateCrypt,
                 connections: int = CONNECTIONS, *, base_url: str = "/") -> None:
        self.sessions = sessions
        self.base_url = base_url
        self.crypt = crypt
        self.custom = custom
        self.token_use = token_use
        self.tokens = tokens
        self.answered = 0  # reads answered here rather than by the route
        self.scopes = scopes
        self.conns = _Connections(engine, connections)
        self.sql = str(USER_IN_FULL.compile(dialect=engine.dialect))
        # a Requester (with its index of scopes) per cached scope set, reused while that set is cached
        self._requesters: dict[int, tuple[frozenset[HeldScope], Requester]] = {}
        self._loading: dict[str, asyncio.Future[Requester | None]] = {}

    def close(self) -> None:
        self.conns.close()

    async def respond(self, scope: Scope, send: Send) -> bool:
        """Answer the read if it is a plain one (True), else leave it to the route (False)."""
        try:
            body = await self.answer(scope)
        except Exception:  # never worse than the route: it answers instead
            log.exception("fast user read of %s failed; the route answers", scope["path"])
            return False
        if body is None:
            return False
        self.answered += 1
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *API_RESPONSE_HEADERS]})
        await send({"type": "http.response.body", "body": body})
        return True

    async def answer(self, scope: Scope) -> bytes | None:
        """The body of a 200 answer, or None: the route answers (see the module's docstring)."""
        name: str = scope["path"][len(PREFIX):]
        if not name or "/" in name or not storable(name):
            return None
        include_stopped = False
        if scope["query_string"]:
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if len(pairs) != 1 or pairs[0][0] != "include_stopped_servers":
                return None
            value = pairs[0][1].lower()
            if value not in _TRUE and value not in _FALSE:
                return None
            include_stopped = value in _TRUE
        req = await self._requester(scope)
        if req is None:
            return None
        self.token_use.note(req.ident)
        if not any(req.can(s, name) for s in READ_USER_SCOPES):
            return None
        try:
            conn = await self.conns.acquire()
        except _DATABASE_ERRORS as exc:  # the route answers (503 while the database is away)
            log.warning("fast user read: no database connection (%r); the route answers", exc)
            return None
        try:
            rows = await conn.driver_connection.fetch(self.sql, name)  # type: ignore[union-attr]
        except Exception as exc:
            self.conns.release(conn, broken=True)
            # anything but an error PostgreSQL answered about the query itself (a restart or failover, or
            # a terminated backend leaving asyncpg in an unknown state): the other kept ones are gone too
            if not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, _CONNECTION_LOST):
                await self.conns.renew()
            log.warning("fast user read: database error (%r); the route answers", exc)
            return None
        except BaseException:  # cancelled mid-query: that connection's state is unknown
            self.conns.release(conn, broken=True)
            raise
        self.conns.release(conn)
        if not rows:
            return None
        user, views, links = user_from_rows(rows)

        def can(held: str, server_name: str | None) -> bool:
            return req.can(held, name, server_name)

        model = user_model(user, views, can, crypt=self.crypt, base_url=self.base_url, include_stopped=include_stopped,
                           links=links) or {}
        return json.dumps(model, ensure_ascii=False, separators=(",", ":")).encode()  # as JSONResponse renders

    async def _requester(self, scope: Scope) -> Requester | None:
        """Who asks, by the token header; None without a token, or for one that is unknown or expired.

        From the caches when they hold the token and its scopes, else loaded as the route would, once
        per token however many requests carry it meanwhile: when a hot token's entry expires, the
        requests in flight wait for one lookup instead of all taking the slow route at once.
        """
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        token = token_from_header(auth.decode("latin-1")) if auth is not None else None
        if token is None:
            return None
        hashed = hash_token(token)
        hit, ident = self.tokens.get(hashed)
        if hit and ident is None:
            return None
        if ident is not None:
            held = cached_scopes(self.scopes, ident)
            if held is not None:
                return self._for(ident, held)
        load = self._loading.get(hashed)
        if load is None:
            load = self._loading[hashed] = asyncio.ensure_future(self._load(token))
            load.add_done_callback(lambda _: self._loading.pop(hashed, None))
        return await asyncio.shield(load)  # a client going away does not cancel the others' lookup

    async def _load(self, token: str) -> Requester | None:
        try:
            async with self.sessions() as session:
                ident = await identity_from_token(session, token, self.tokens)
                if ident is None:
                    return None
                held = await effective_scopes(session, ident, self.scopes, self.custom)
        except (SQLAlchemyError, OSError) as exc:  # the route answers (503 while the database is away)
            log.debug("token lookup failed: %r", exc)
            return None
        return self._for(ident, held)

    def _for(self, ident: Identity, held: frozenset[HeldScope]) -> Requester:
        cached = self._requesters.get(id(held))
        if cached is not None and cached[0] is held and cached[1].ident == ident:
            return cached[1]
        if len(self._requesters) >= 10_000:
            self._requesters.clear()
        req = Requester(ident, held)
        self._requesters[id(held)] = (held, req)
        return req
