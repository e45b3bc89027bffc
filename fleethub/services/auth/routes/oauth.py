"""The hub's OAuth2 provider: `/hub/api/oauth2/authorize` and `/hub/api/oauth2/token` (contract §c.3).

Clients are the running user servers (client id `jupyterhub-user-<user>[-<server>]`, secret = the
server's API token of its current spawn, redirect URI `/user/<user>/[<server>/]oauth_callback`; a
client exists while its server runs, and its tokens are revoked when the server stops: they carry the
spawn id), the configured services with an API token (client id `service-<name>` unless configured,
secret = that token, redirect URI `/services/<name>/oauth_callback` unless configured) and the
services created at run time with an `api_token` (the same, from their `services` row; only the
token's hash is kept, so secrets are compared by hash). A token carries the client's access scope and
identifies its user; a service's client adds its allowed scopes (`oauth_client_allowed_scopes`,
`oauth_roles`): those the authorization request's `scope` names, or all of them when it names none (a
requested scope the client may not give is left out). Redirect URIs are compared string for string.
Codes are single-use, expire after 5 minutes, are bound to the client, the redirect URI, the user's
login session and a PKCE challenge when one was sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.auth.deps import DbSession, Runtime
from fleethub.services.auth.pages import consent_page, error_page, nav_for, templates
from fleethub.services.auth.scope_text import describe
from fleethub.shared.baseurl import public_path
from fleethub.shared.db.models import CONFIG_TOKEN_KIND, ApiToken, HubServiceRow, OAuthCode, Server, User
from fleethub.shared.events import utcnow
from fleethub.shared.http import PAGE_RESPONSE_HEADERS
from fleethub.shared.identity import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    XSRF_COOKIE,
    Identity,
    identity_from_cookie,
    new_xsrf,
    secure_cookies,
    set_xsrf_cookie,
    xsrf_valid,
)
from fleethub.shared.lifecycle import DesiredState
from fleethub.shared.names import client_candidates, server_prefix
from fleethub.shared.paths import checked_location
from fleethub.shared.rbac import effective_scopes
from fleethub.shared.scopes import held_for, parse, token_scopes
from fleethub.shared.security import hash_token, server_token, service_api_token
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)
router = APIRouter()

CODE_TTL = timedelta(minutes=5)
MAX_PARAM = 4096


@dataclass(frozen=True)
class Client:
    """An OAuth client: a running user server, or a service (configured or created at run time) with an
    API token."""

    client_id: str
    redirect_uri: str
    secret_hash: str  # hash_token of the client secret
    what: str  # "the server alice/" / "the service announce", for pages and logs
    access: str  # the access scope a token for this client carries
    owner_id: int | None = None  # the user whose server it is
    spawn_id: str | None = None  # its tokens die with this spawn
    no_confirm: bool = False
    allowed: tuple[str, ...] = ()  # more scopes its tokens may carry (a service's allowed scopes)

    def scopes(self, user: str, requested: str = "") -> list[str]:
        """What a token of `user` for this client may do: identify the user, reach the client, and those
        of the client's allowed scopes the request's `scope` names (all of them when it names none)."""
        out = [self.access, f"read:users:name!user={user}", f"read:users:groups!user={user}"]
        wanted = requested.split()
        extra = [s for s in wanted if s in self.allowed] if wanted else list(self.allowed)
        dropped = [s for s in wanted if s not in self.allowed and s not in out and s != "identify"]
        if dropped:
            log.info("oauth client %s may not give %s; left out", self.client_id[:200], " ".join(dropped)[:500])
        return out + [s for s in extra if s not in out]

    def secret_ok(self, secret: str) -> bool:
        return bool(secret) and hmac.compare_digest(self.secret_hash, hash_token(secret))


async def find_client(session: AsyncSession, settings: ServiceSettings, secret_key: str, cid: str) -> Client | None:
    """The client whose id is `cid`: a running server, or a configured service that has an API token."""
    if not cid or len(cid) > 1024:
        return None
    for svc in settings.services:
        secret = service_api_token(svc.api_token.get_secret_value() if svc.api_token else None, svc.managed,
                                   secret_key, svc.name)
        if svc.client_id == cid and secret is not None:
            return Client(cid, public_path(settings.base_url, svc.redirect_uri), hash_token(secret),
                          f"the service {svc.name}",
                          f"access:services!service={svc.name}", no_confirm=svc.oauth_no_confirm,
                          allowed=tuple(settings.oauth_allowed_scopes(svc)))
    runtime = (await session.execute(
        select(HubServiceRow, ApiToken.hashed).join(ApiToken, ApiToken.service_id == HubServiceRow.id)
        .where(HubServiceRow.oauth_client_id == cid, HubServiceRow.from_config.is_(False),
               HubServiceRow.oauth_redirect_uri.is_not(None), ApiToken.kind == CONFIG_TOKEN_KIND)
    )).first()
    if runtime is not None:
        svc_row, hashed = runtime
        assert svc_row.oauth_redirect_uri is not None
        return Client(cid, public_path(settings.base_url, svc_row.oauth_redirect_uri), hashed,
                      f"the service {svc_row.name}",
                      f"access:services!service={svc_row.name}", no_confirm=svc_row.oauth_no_confirm,
                      allowed=tuple(svc_row.oauth_client_allowed_scopes or ()))
    try:
        candidates = client_candidates(cid)
    except UnicodeDecodeError:
        return None
    for user, server_name in candidates:
        row = (await session.execute(
            select(Server, User).join(User, User.id == Server.user_id)
            .where(User.name == user, Server.name == server_name, Server.desired == DesiredState.RUNNING,
                   Server.spawn_id.is_not(None))
        )).first()
        if row is not None:
            srv, owner = row
            assert srv.spawn_id is not None
            return Client(cid, public_path(settings.base_url, f"{server_prefix(owner.name, srv.name)}oauth_callback"),
                          hash_token(server_token(secret_key, srv.spawn_id)), f"the server {owner.name}/{srv.name}",
                          f"access:servers!server={owner.name}/{srv.name}", owner.id, srv.spawn_id)
    return None


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    page = error_page(templates(request), status, message)
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store", **PAGE_RESPONSE_HEADERS})


def _redirect_with(uri: str, **params: str) -> RedirectResponse:
    sep = "&" if "?" in uri else "?"
    location = checked_location(uri + sep + urlencode({k: v for k, v in params.items() if v}))
    return RedirectResponse(location, status_code=302)


async def _may_access(session: AsyncSession, ident: Identity, client: Client) -> bool:
    """Whether the logged-in user holds the client's access scope (`access:servers!server=u/s` or
    `access:services!service=s`): a server's owner, admins, and users granted it by a role or a share."""
    if ident.user_id == client.owner_id:
        return True
    wanted = parse(client.access)
    held = await effective_scopes(session, ident)
    server = wanted.value if wanted.kind == "server" else None
    return held_for(held, wanted.name, server.split("/", 1)[0] if server else None, server,
                    service=wanted.value if wanted.kind == "service" else None)


async def _granted(session: AsyncSession, settings: ServiceSettings, ident: Identity,
                   scopes: list[str]) -> list[tuple[str, str]]:
    """Those of `scopes` a token of the user would hold (a token never holds more than its owner), each with
    its description, for the consent page."""
    subscopes = settings.custom_subscopes
    held = await effective_scopes(session, ident, custom=subscopes)
    words = {name: spec.description for name, spec in settings.custom_scopes.items()}
    return [(scope, describe(scope, words)) for scope in scopes
            if token_scopes([scope], held, ident.name, custom=subscopes)]


async def _issue_code(session: AsyncSession, request: Request, ident: Identity, client: Client,
                      redirect_uri: str, state: str, challenge: str | None, requested: str) -> Response:
    code = secrets.token_urlsafe(32)
    await session.execute(delete(OAuthCode).where(OAuthCode.expires_at < utcnow()))  # expired ones go
    session.add(OAuthCode(hashed=hash_token(code), client_id=client.client_id, user_id=ident.user_id,
                          redirect_uri=redirect_uri, scopes=client.scopes(ident.name, requested),
                          session_id=request.cookies.get(SESSION_COOKIE) or ident.session_id,
                          code_challenge=challenge, expires_at=utcnow() + CODE_TTL))
    await session.commit()
    log.info("oauth code issued to %s for user %s", client.client_id[:200], ident.name)
    return _redirect_with(redirect_uri, code=code, state=state)


async def _authorize(request: Request, runtime: Runtime, session: DbSession, params: dict[str, str],
                     confirmed: bool) -> Response:
    cid = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    state = params.get("state", "")
    if any(len(v) > MAX_PARAM for v in params.values()):
        return _error_page(request, 400, "Authorization request too large")
    ident = await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
    if ident is None:
        here = "/hub/api/oauth2/authorize?" + urlencode(params)
        return RedirectResponse("/hub/login?next=" + quote(here, safe=""), status_code=302)
    client = await find_client(session, runtime.settings, runtime.secret_key, cid)
    if client is None:
        return _error_page(request, 400, "Unknown OAuth client: it is not a running server or service")
    if redirect_uri != client.redirect_uri:  # never redirect to an unregistered URI
        return _error_page(request, 400, "The redirect_uri does not match the one registered for this client")
    if params.get("response_type") != "code":
        return _redirect_with(redirect_uri, error="unsupported_response_type", state=state)
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or ("S256" if challenge else "")
    if challenge is not None and (method != "S256" or not 43 <= len(challenge) <= 128):
        return _redirect_with(redirect_uri, error="invalid_request",
                              error_description="PKCE needs code_challenge_method=S256", state=state)
    if not await _may_access(session, ident, client):
        log.info("user %s refused access to %s", ident.name, client.what[:200])
        return _error_page(request, 403, f"You do not have access to {client.what}")
    if ident.user_id != client.owner_id and not client.no_confirm and not confirmed:  # ask first
        xsrf = new_xsrf(runtime.secret_key, ident.session_id)
        granted = await _granted(session, runtime.settings, ident, client.scopes(ident.name, params.get("scope", "")))
        page = consent_page(templates(request), xsrf, await nav_for(session, runtime.settings, ident), client.what,
                            params, granted)
        response = HTMLResponse(page, headers={"Cache-Control": "no-store", **PAGE_RESPONSE_HEADERS})
        set_xsrf_cookie(response, xsrf, secure_cookies(runtime.settings.hub_public_url))
        return response
    return await _issue_code(session, request, ident, client, redirect_uri, state, challenge,
                             params.get("scope", ""))


_AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "response_type", "state", "code_challenge",
                     "code_challenge_method", "scope")


@router.get("/hub/api/oauth2/authorize")
async def authorize(request: Request, runtime: Runtime, session: DbSession) -> Response:
    params = {k: request.query_params[k] for k in _AUTHORIZE_PARAMS if k in request.query_params}
    return await _authorize(request, runtime, session, params, confirmed=False)


@router.post("/hub/api/oauth2/authorize")
async def authorize_confirmed(request: Request, runtime: Runtime, session: DbSession) -> Response:
    form = await request.form()
    params = {k: str(form[k]) for k in _AUTHORIZE_PARAMS if k in form}
    ident = await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
    submitted = str(form.get("_xsrf", ""))
    if ident is None or not xsrf_valid(runtime.secret_key, request.cookies.get(XSRF_COOKIE), submitted,
                                       ident.session_id):
        return _error_page(request, 403, "The authorization form expired or was not sent from this site")
    return await _authorize(request, runtime, session, params, confirmed=True)


def _token_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description, "status": status,
                         "message": description}, status_code=status, headers={"Cache-Control": "no-store"})


def _pkce_ok(challenge: str, verifier: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(expected, challenge)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except ValueError:
        return None
    cid, sep, secret = raw.partition(":")
    return (cid, secret) if sep else None


@router.post("/hub/api/oauth2/token")
async def token(
    request: Request,
    runtime: Runtime,
    session: DbSession,
    grant_type: str = Form("", max_length=100),
    code: str = Form("", max_length=MAX_PARAM),
    redirect_uri: str = Form("", max_length=MAX_PARAM),
    client_id: str = Form("", max_length=1024),
    client_secret: str = Form("", max_length=MAX_PARAM),
    code_verifier: str = Form("", max_length=MAX_PARAM),
) -> Response:
    if grant_type != "authorization_code":
        return _token_error(400, "unsupported_grant_type", "Only grant_type=authorization_code is supported")
    basic = _basic_credentials(request.headers.get("authorization"))
    if basic is not None and not client_id:
        client_id, client_secret = basic
    async with session.begin():
        client = await find_client(session, runtime.settings, runtime.secret_key, client_id)
        if client is None or not client.secret_ok(client_secret):
            return _token_error(401, "invalid_client", "Unknown client or wrong client secret")
        # consume the code whatever happens next: a code is good for one attempt
        row = (await session.execute(
            delete(OAuthCode).where(OAuthCode.hashed == hash_token(code)).returning(OAuthCode)
        )).scalar_one_or_none() if code else None
        if row is None or row.expires_at <= utcnow() or row.client_id != client.client_id:
            return _token_error(400, "invalid_grant", "The code is unknown, used, expired or not for this client")
        if row.redirect_uri != redirect_uri:
            return _token_error(400, "invalid_grant", "redirect_uri does not match the authorization request")
        if row.code_challenge is not None and not (code_verifier and _pkce_ok(row.code_challenge, code_verifier)):
            return _token_error(400, "invalid_grant", "The PKCE code_verifier does not match the challenge")
        access = secrets.token_hex(16)
        days = runtime.settings.auth.cookie_max_age_days
        session.add(ApiToken(
            user_id=row.user_id, hashed=hash_token(access), kind="oauth", note=f"OAuth token for {client.client_id}",
            scopes=list(row.scopes), session_id=row.session_id, spawn_id=client.spawn_id,
            client_id=client.client_id, expires_at=utcnow() + timedelta(days=days),
        ))
    log.info("oauth token issued to %s", client.client_id[:200])
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": int(days * 86400),
                            "scope": " ".join(row.scopes)}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
