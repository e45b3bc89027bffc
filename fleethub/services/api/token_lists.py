"""What the token page lists: a user's API tokens, and their OAuth authorizations (tokens grouped by client)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.tokens import list_tokens
from fleethub.shared.db.models import ApiToken, HubServiceRow, Server, User
from fleethub.shared.settings import ServiceSettings

EXPIRY_CHOICES = (("Never", 0), ("1 hour", 3600), ("1 day", 86400), ("1 week", 7 * 86400), ("30 days", 30 * 86400))


@dataclass(frozen=True)
class TokenRow:
    """An API token as the page shows it (read out of its row: the page renders after the transaction)."""

    id: str  # the API's id, "a17"
    note: str
    scopes: list[str]
    created: datetime
    last_activity: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenRow:
        return cls(f"a{token.id}", token.note, list(token.scopes or []), token.created, token.last_activity,
                   token.expires_at)


@dataclass(frozen=True)
class Authorization:
    """An OAuth client the user let in: all its unexpired tokens of the user, as one row."""

    client_id: str
    what: str  # "Service whoami", "Server alice/gpu", else the client id
    created: datetime  # of its oldest token
    last_activity: datetime | None  # of its most recently used token
    token_id: str  # any of its tokens: revoking one revokes every token of the client (tokens.revoke_token)
    tokens: int


@dataclass(frozen=True)
class TokenLists:
    """The page's two tables, most recently used first (as JupyterHub's page orders them)."""

    api_tokens: list[TokenRow]
    authorizations: list[Authorization]


def expiry_choices(limit: int) -> list[tuple[str, int]]:
    """The expiry menu under `api.token_expires_in_max_seconds` (0: no limit, "Never" offered): the choices
    within the limit, or the limit itself when it is shorter than them all."""
    if not limit:
        return list(EXPIRY_CHOICES)
    within = [(label, seconds) for label, seconds in EXPIRY_CHOICES if 0 < seconds <= limit]
    return within or [(_duration(limit), limit)]


def _duration(seconds: int) -> str:
    minutes = seconds // 60
    if minutes >= 2:
        return f"{minutes} minutes"
    return f"{seconds} seconds"


def _recent_first(token: ApiToken) -> tuple[datetime, datetime]:
    return token.last_activity or token.created, token.created


async def _client_names(session: AsyncSession, settings: ServiceSettings, oauth: list[ApiToken]) -> dict[str, str]:
    """Readable names of the clients of `oauth` tokens: a service's name; a server's, found by the spawn
    its tokens belong to (they die with it)."""
    wanted = {t.client_id for t in oauth if t.client_id}
    names = {svc.client_id: f"Service {svc.name}" for svc in settings.services if svc.client_id in wanted}
    rows = await session.execute(select(HubServiceRow.oauth_client_id, HubServiceRow.name)
                                 .where(HubServiceRow.oauth_client_id.in_(wanted - names.keys())))
    names.update({cid: f"Service {name}" for cid, name in rows if cid})
    spawns = {t.spawn_id: t.client_id for t in oauth if t.spawn_id and t.client_id and t.client_id not in names}
    if spawns:
        servers = await session.execute(select(Server.spawn_id, User.name, Server.name)
                                        .join(User, User.id == Server.user_id).where(Server.spawn_id.in_(spawns)))
        for spawn_id, user, server in servers:
            if spawn_id:
                names[spawns[spawn_id]] = f"Server {user}/{server}"
    return names


async def token_lists(session: AsyncSession, settings: ServiceSettings, user: User) -> TokenLists:
    """The user's unexpired tokens: API (and server) tokens one by one, OAuth tokens by client."""
    tokens = sorted(await list_tokens(session, user), key=_recent_first, reverse=True)
    oauth = [t for t in tokens if t.kind == "oauth" and t.client_id]
    names = await _client_names(session, settings, oauth)
    by_client: dict[str, list[ApiToken]] = defaultdict(list)
    for token in oauth:
        assert token.client_id is not None
        by_client[token.client_id].append(token)
    authorizations = [
        Authorization(client_id=cid, what=names.get(cid, cid), created=min(t.created for t in group),
                      last_activity=max((t.last_activity for t in group if t.last_activity), default=None),
                      token_id=f"a{group[0].id}", tokens=len(group))
        for cid, group in by_client.items()  # in the order of their most recently used token
    ]
    return TokenLists([TokenRow.of(t) for t in tokens if not (t.kind == "oauth" and t.client_id)], authorizations)
