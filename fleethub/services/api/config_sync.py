"""Makes the database agree with the configuration at api start: admin and allowed users, `[[services]]` (and
their API tokens) and `[[roles]]` with their members.

Every api replica runs it at start, serialized by an advisory lock, so replicas started together
apply it once each without racing. Config-defined services and roles are authoritative: entries
removed from the file are removed from the database, and a config role's members are exactly the
configured ones (roles granted through the API to other users belong to API-created roles).
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.locks import AdvisoryLock, xact_lock
from fleethub.shared.db.models import (
    CONFIG_TOKEN_KIND,
    ApiToken,
    Group,
    GroupRole,
    HubServiceRow,
    Role,
    ServiceRole,
    User,
    UserRole,
)
from fleethub.shared.errors import ConfigError
from fleethub.shared.names import normalize_username
from fleethub.shared.rbac import access_changed
from fleethub.shared.scopes import ScopeError, parse
from fleethub.shared.security import hash_token, service_api_token
from fleethub.shared.settings import RoleSpec, ServiceSettings


def check_role_scopes(spec: RoleSpec) -> None:
    """Every scope of a config role is one this hub knows, with a valid filter.

    Raises:
        ConfigError: naming the role and the scope.
    """
    for scope in spec.scopes:
        if scope in ("self", "inherit"):
            continue
        try:
            parse(scope, owner="u", server="u/s", service="s")
        except ScopeError as exc:
            raise ConfigError(f"roles: role {spec.name!r}: {exc}") from None


async def _ids(session: AsyncSession, model: type[User | Group], names: list[str]) -> list[int]:
    """Row ids of users or groups by name, creating the missing ones."""
    if not names:
        return []
    await session.execute(insert(model).values([{"name": n} for n in names]).on_conflict_do_nothing(
        index_elements=["name"]))
    return list((await session.execute(select(model.id).where(model.name.in_(names)))).scalars())


async def _sync_services(session: AsyncSession, settings: ServiceSettings, secret_key: str
                         ) -> tuple[dict[str, int], int]:
    wanted = {svc.name: svc for svc in settings.services}
    removed = await session.execute(delete(HubServiceRow).where(HubServiceRow.from_config.is_(True),
                                                                HubServiceRow.name.not_in(list(wanted) or [""])))
    ids: dict[str, int] = {}
    for svc in settings.services:
        values = {
            "name": svc.name, "from_config": True, "admin": svc.admin, "url": svc.url,
            "oauth_client_id": svc.client_id if svc.oauth_client else None,
            "oauth_redirect_uri": svc.redirect_uri if svc.oauth_client else None,
            "oauth_no_confirm": svc.oauth_no_confirm, "display": svc.display, "info": svc.info,
        }
        stmt = insert(HubServiceRow).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={k: stmt.excluded[k] for k in values})
        sid = (await session.execute(stmt.returning(HubServiceRow.id))).scalar_one()
        ids[svc.name] = sid
        token = service_api_token(svc.api_token.get_secret_value() if svc.api_token else None, svc.managed,
                                  secret_key, svc.name)
        hashed = hash_token(token) if token is not None else ""
        await session.execute(delete(ApiToken).where(ApiToken.service_id == sid, ApiToken.kind == CONFIG_TOKEN_KIND,
                                                     ApiToken.hashed != hashed))
        if hashed:
            taken = (await session.execute(select(ApiToken.service_id).where(ApiToken.hashed == hashed))).first()
            if taken is not None and taken[0] != sid:
                raise ConfigError(f"services: the api_token of service {svc.name!r} is already another token")
            if taken is None:
                session.add(ApiToken(service_id=sid, hashed=hashed, kind=CONFIG_TOKEN_KIND, scopes=["inherit"],
                                     note=f"api_token of service {svc.name} from the configuration"))
    await session.flush()
    return ids, int(getattr(removed, "rowcount", 0) or 0)


async def _sync_roles(session: AsyncSession, settings: ServiceSettings, services: dict[str, int]) -> int:
    wanted = {spec.name for spec in settings.roles}
    removed = await session.execute(delete(Role).where(Role.from_config.is_(True),
                                                       Role.name.not_in(list(wanted) or [""])))
    for spec in settings.roles:
        check_role_scopes(spec)
        values = {"name": spec.name, "description": spec.description, "scopes": spec.scopes, "from_config": True}
        stmt = insert(Role).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={k: stmt.excluded[k] for k in values})
        rid = (await session.execute(stmt.returning(Role.id))).scalar_one()
        for table in (UserRole, GroupRole, ServiceRole):
            await session.execute(delete(table).where(table.role_id == rid))
        users = await _ids(session, User, [normalize_username(n) for n in spec.users])
        groups = await _ids(session, Group, spec.groups)
        if users:
            await session.execute(insert(UserRole).values([{"user_id": u, "role_id": rid} for u in users]))
        if groups:
            await session.execute(insert(GroupRole).values([{"group_id": g, "role_id": rid} for g in groups]))
        if spec.services:
            await session.execute(insert(ServiceRole).values(
                [{"service_id": services[s], "role_id": rid} for s in spec.services]))
    return int(getattr(removed, "rowcount", 0) or 0)


async def sync_config(session: AsyncSession, settings: ServiceSettings, secret_key: str) -> None:
    """Apply the configuration (in the caller's transaction).

    Raises:
        ConfigError: a role with an unknown or malformed scope, or a service token clash.
    """
    await xact_lock(session, AdvisoryLock.CONFIG_SYNC)
    admins = [normalize_username(n) for n in settings.auth.admin_users]
    if admins:
        stmt = insert(User).values([{"name": n, "admin": True} for n in admins])
        await session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"admin": True}))
    allowed = [normalize_username(n) for n in settings.auth.allowed_users]
    if allowed:  # as JupyterHub does at start: allowed users exist (API, `fleethub token`) before a login
        await session.execute(insert(User).values([{"name": n} for n in allowed])
                              .on_conflict_do_nothing(index_elements=["name"]))
    services, services_removed = await _sync_services(session, settings, secret_key)
    roles_removed = await _sync_roles(session, settings, services)
    if settings.services or settings.roles or services_removed or roles_removed:
        access_changed(session, settings.nats_namespace, everyone=True)
