"""The auth and api apps in-process (real NATS and PostgreSQL), behind a dispatcher like the proxy's."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.services.api.app import create_app as create_api
from fleethub.services.api.app import with_fast_reads
from fleethub.services.auth.app import create_app as create_auth
from fleethub.services.proxy.routing import AUTH_PREFIXES  # the paths proxies send to auth replicas
from fleethub.shared.accounts import set_password
from fleethub.shared.baseurl import inner_path
from fleethub.shared.bus import Bus
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.migrate import load_secret_key
from fleethub.shared.db.models import ApiToken, User
from fleethub.shared.events import Message, SpawnServer, commands_filter, events_filter, unwrap
from fleethub.shared.security import hash_token, new_token
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.cluster import migrated

BASE_URL = "http://127.0.0.1:8000"
PASSWORDS = {"admin": "admin-password", "alice": "alice-password", "mallory": "mallory-password"}
XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')


def hub_settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                 **sections: Any) -> ServiceSettings:
    """Settings of a test hub: admin `admin`, blocked `mallory`, short spawn/stop waits."""
    auth = {"admin_users": ["admin"], "blocked_users": ["mallory"], **sections.pop("auth", {})}
    api = {"slow_spawn_timeout": 0.3, "slow_stop_timeout": 0.3, **sections.pop("api", {})}
    return load_settings(None, nats_url=nats_url, database_url=database_url, nats_namespace=nats_namespace,
                         data_dir=tmp_path, auth=auth, api=api, **sections)


@dataclass
class Hub:
    """A running hub: an HTTP client to both apps, database sessions, a bus client and the secret key."""

    settings: ServiceSettings
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    secret_key: str
    transport: httpx.AsyncBaseTransport
    api_state: dict[str, Any] = field(default_factory=dict)  # the api lifespan's (fleethub.services.api.deps.ApiState)
    _cmd_sub: Any = None

    def new_client(self) -> httpx.AsyncClient:
        """Another browser (own cookie jar) on the same apps."""
        return httpx.AsyncClient(transport=self.transport, base_url=BASE_URL)

    async def token_for(self, name: str, admin: bool = False, scopes: list[str] | None = None) -> str:
        """A new API token of `name` (created, with the given admin flag, if missing)."""
        token = new_token()
        async with self.sessions() as s, s.begin():
            await s.execute(insert(User).values(name=name, admin=admin)
                            .on_conflict_do_update(index_elements=["name"], set_={"admin": admin}))
            uid = (await s.execute(select(User.id).where(User.name == name))).scalar_one()
            s.add(ApiToken(user_id=uid, hashed=hash_token(token), kind="api", scopes=scopes or ["inherit"],
                           note="test"))
        return token

    async def headers_for(self, name: str, admin: bool = False, scopes: list[str] | None = None) -> dict[str, str]:
        """`Authorization` headers with a new token of `name`."""
        return {"Authorization": f"token {await self.token_for(name, admin, scopes)}"}

    async def login(self, client: httpx.AsyncClient, user: str, password: str | None = None,
                    next_url: str = "") -> httpx.Response:
        """Log in through the form (GET it for the XSRF token, then POST)."""
        page = await client.get("/hub/login")
        m = XSRF_FIELD.search(page.text)
        assert m, page.text
        suffix = f"?next={next_url}" if next_url else ""
        data = {"username": user, "password": password or PASSWORDS.get(user, ""), "_xsrf": m.group(1)}
        return await client.post(f"/hub/login{suffix}", data=data)

    @staticmethod
    def xsrf(client: httpx.AsyncClient) -> str:
        """The `_xsrf` cookie of a browser."""
        value = client.cookies.get("_xsrf", path="/hub/")
        assert value
        return value

    @staticmethod
    async def _pull(sub: Any, kind: str, wanted: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        while len(out) < wanted:
            try:
                msgs = await sub.fetch(wanted - len(out), timeout=timeout)
            except Exception:  # nats-py's fetch timeout: nothing more came
                break
            for m in msgs:
                out.append(unwrap(m.data, kind)[1])
                await m.ack()
        return out

    async def commands(self, wanted: int = 1, timeout: float = 3.0) -> list[Message]:
        """Take up to `wanted` commands off the work queue, in order (no spawner runs in these tests)."""
        if self._cmd_sub is None:  # a work queue allows one consumer per subject: keep this one
            self._cmd_sub = await self.bus.js.pull_subscribe(
                commands_filter(self.settings.nats_namespace), durable="test-reader", stream=self.bus.names.cmd_stream)
        return await self._pull(self._cmd_sub, "cmd", wanted, timeout)

    async def spawn_command(self) -> SpawnServer:
        """The next command on the work queue, which must be a spawn."""
        (cmd,) = await self.commands(1)
        assert isinstance(cmd, SpawnServer), cmd
        return cmd

    async def events(self, wanted: int = 1, timeout: float = 3.0) -> list[Message]:
        """Read up to `wanted` events from the start of the event stream."""
        sub = await self.bus.js.pull_subscribe(events_filter(self.settings.nats_namespace), durable=None,
                                               stream=self.bus.names.evt_stream)
        try:
            return await self._pull(sub, "evt", wanted, timeout)
        finally:
            await sub.unsubscribe()


def _with_state(app: Any, state: Any) -> Any:
    # uvicorn's lifespan hands its state to requests through the scope; do what it does
    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    return inner


def dispatcher(auth: Any, api: Any, base_url: str = "/") -> Any:
    """An ASGI app sending `/hub/` paths where the proxy would: auth's prefixes to auth, the rest to api."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = inner_path(base_url, scope.get("path", "")) or ""
        target = auth if path.startswith(AUTH_PREFIXES) else api
        await target(scope, receive, send)

    return app


@contextlib.asynccontextmanager
async def running_hub(settings: ServiceSettings) -> AsyncIterator[Hub]:
    """Migrate, create password accounts (`PASSWORDS`), run both apps' lifespans, yield a client."""
    await migrated(settings.require_database_url())
    engine = make_engine(settings.require_database_url(), pool_size=2)
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        for name, password in PASSWORDS.items():
            await set_password(s, name, password)
    secret_key = await load_secret_key(engine)
    auth, api = create_auth(settings), create_api(settings)
    bus = Bus(settings.nats_url, settings.nats_namespace, "test")
    await bus.connect()
    try:
        async with auth.router.lifespan_context(auth) as auth_state, api.router.lifespan_context(api) as api_state:
            # as `fleethub run api` serves it
            served_api = _with_state(with_fast_reads(api, settings.base_url), api_state)
            transport = httpx.ASGITransport(app=dispatcher(_with_state(auth, auth_state), served_api,
                                                            settings.base_url))
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                hub = Hub(settings, client, sessions, bus, secret_key, transport, dict(api_state))
                try:
                    yield hub
                finally:
                    if hub._cmd_sub is not None:  # a pull subscription left open stalls the bus's drain
                        await hub._cmd_sub.unsubscribe()
    finally:
        await bus.close()
        await engine.dispose()
