"""The auth and api apps in-process (real NATS and PostgreSQL), behind a dispatcher like the proxy's."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api.app import create_app as create_api
from services.auth.app import create_app as create_auth
from services.auth.accounts import set_password
from shared.bus import Bus
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.models import User
from shared.security import hash_token, new_token
from shared.settings import ServiceSettings, load_settings
from tests.support.cluster import migrated


@dataclass
class Hub:
    settings: ServiceSettings
    client: httpx.AsyncClient
    sessions: Any
    bus: Bus

    async def token_for(self, name: str, admin: bool = False) -> str:
        from sqlalchemy.dialects.postgresql import insert

        from shared.db.models import ApiToken

        token = new_token()
        async with self.sessions() as s, s.begin():
            await s.execute(insert(User).values(name=name, admin=admin).on_conflict_do_update(index_elements=["name"], set_={"admin": admin}))
            uid = (await s.execute(User.__table__.select().where(User.name == name))).first().id
            s.add(ApiToken(user_id=uid, hashed=hash_token(token), kind="api", scopes=["inherit"], note="test"))
        return token

    async def login(self, client: httpx.AsyncClient, user: str, password: str, next_url: str = "") -> httpx.Response:
        page = await client.get("/hub/login")
        m = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert m, page.text
        suffix = f"?next={next_url}" if next_url else ""
        return await client.post(f"/hub/login{suffix}", data={"username": user, "password": password, "_xsrf": m.group(1)})


# the paths proxies send to auth replicas (everything else under /hub/ goes to api)
AUTH_PREFIXES = ("/hub/login", "/hub/logout", "/hub/signup", "/hub/oauth_callback", "/hub/api/oauth2/")


def dispatcher(auth: Any, api: Any) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        target = auth if scope.get("path", "").startswith(AUTH_PREFIXES) else api
        await target(scope, receive, send)

    return app


@pytest.fixture
def hub_settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return load_settings(
        None, nats_url=nats_url, database_url=database_url, nats_namespace=nats_namespace, data_dir=tmp_path,
        auth={"admin_users": ["admin"], "blocked_users": ["mallory"]},
        api={"slow_spawn_timeout": 0.5, "slow_stop_timeout": 0.5},
    )


@contextlib.asynccontextmanager
async def running_hub(settings: ServiceSettings) -> AsyncIterator[Hub]:
    await migrated(settings.require_database_url())
    engine = make_engine(settings.require_database_url(), pool_size=2)
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        await set_password(s, "admin", "admin-password")
        await set_password(s, "alice", "alice-password")
        await set_password(s, "mallory", "mallory-password")
    auth, api = create_auth(settings), create_api(settings)
    bus = Bus(settings.nats_url, settings.nats_namespace, "test")
    await bus.connect()
    async with auth.router.lifespan_context(auth) as auth_state, api.router.lifespan_context(api) as api_state:
        # FastAPI hands lifespan state to requests through the scope; do the same here
        async def with_state(app: Any, state: dict[str, Any]) -> Any:
            async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
                scope["state"] = dict(state)
                await app(scope, receive, send)

            return inner

        app = dispatcher(await with_state(auth, auth_state), await with_state(api, api_state))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield Hub(settings, client, sessions, bus)
    await bus.close()
    await engine.dispose()


@pytest.fixture
async def hub(hub_settings: ServiceSettings) -> AsyncIterator[Hub]:
    async with running_hub(hub_settings) as h:
        yield h
