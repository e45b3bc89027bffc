"""The `oauth` authenticator: any OAuth 2.0 / OpenID Connect provider, configured in `[auth.oauth]`
(oauthenticator's GenericOAuthenticator names), on authlib: its httpx client does the authorization URL
(PKCE S256), the code exchange and refreshes; joserfc and authlib's ID-token claims check the ID token
(signature by the provider's JWKS, iss, aud, exp, nonce, at_hash).

With `issuer`, the endpoints come from OpenID Connect discovery, fetched on first use and kept; explicit
URLs win. Subclasses (the GitHub preset) override `section`, `endpoints`, `user_claims` and `groups_from`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from fleethub.shared.authenticator_settings import OAuthSettings
from fleethub.shared.authenticators.base import Authenticator, AuthUser, LoginRefused, Redirect
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings

with warnings.catch_warnings():
    # authlib 1.9 warns (on every import, filter "always") that it prefers the httpx2 fork to httpx, which the
    # hub uses everywhere; importing it all here, inside the catch, also keeps that filter out of the process
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
    from authlib.oidc.core import CodeIDToken

log = logging.getLogger(__name__)

OIDC_SCOPE = ("openid", "email", "profile")
"""The scopes asked for with an `issuer` when `scope` is not set."""
EXPIRY_LEEWAY = 60
"""Seconds before `expires_at` from which `refresh_user` refreshes the access token rather than use it."""
CLOCK_LEEWAY = 60
"""Seconds of clock difference the ID token's exp/iat checks tolerate."""
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519")


@dataclass(frozen=True)
class Endpoints:
    """Where the provider answers: explicit settings, else OpenID Connect discovery."""

    authorize: str
    token: str
    userinfo: str = ""
    issuer: str = ""
    jwks_uri: str = ""
    id_token_algorithms: tuple[str, ...] = ("RS256",)


class OAuthAuthenticator(Authenticator):
    """A redirect login at an OAuth 2.0 / OpenID Connect provider (see the module docstring)."""

    name = "oauth"
    section_name: ClassVar[str] = "auth.oauth"
    """The settings section, for messages (a subclass with its own section sets both this and `section`)."""

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        self.config = self.section(settings)
        self.login_service = self.config.login_service
        self.oauth_callback_url = self.config.oauth_callback_url  # read by /hub/oauth_callback
        self.check_config()
        self._client: AsyncOAuth2Client | None = None
        self._endpoints: Endpoints | None = None
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    def section(self, settings: ServiceSettings) -> OAuthSettings:
        """This authenticator's settings section."""
        return settings.auth.oauth

    def check_config(self) -> None:
        """Fail at start on settings that cannot work (no I/O); a subclass with other needs overrides it."""
        c, s = self.config, self.section_name
        if not c.client_id:
            raise ConfigError(f"{s}.client_id must be set for the {self.name} authenticator")
        if not c.issuer and not (c.authorize_url and c.token_url):
            raise ConfigError(f"{s}.issuer, or {s}.authorize_url and {s}.token_url, must be set for the "
                              f"{self.name} authenticator")
        if not c.issuer and not c.userdata_url:
            raise ConfigError(f"{s}.userdata_url must be set without an issuer (the ID token cannot be checked "
                              "without the provider's keys)")

    @property
    def allowed_groups(self) -> list[str]:
        return list(dict.fromkeys([*super().allowed_groups, *self.config.allowed_groups]))

    @property
    def admin_groups(self) -> list[str]:
        return list(dict.fromkeys([*super().admin_groups, *self.config.admin_groups]))

    @property
    def scope(self) -> list[str]:
        """The scopes asked for: `scope`, default `OIDC_SCOPE` with an issuer."""
        return list(self.config.scope) or (list(OIDC_SCOPE) if self.config.issuer else [])

    @property
    def client(self) -> AsyncOAuth2Client:
        """The HTTP client to the provider (made on first use). It is shared by concurrent logins, so only
        its stateless calls are used: its `token` attribute is overwritten by every exchange (synchronously
        with parsing the answer) and never read."""
        if self._client is None:
            secret = self.config.client_secret
            self._client = AsyncOAuth2Client(
                client_id=self.config.client_id, client_secret=secret.get_secret_value() if secret else None,
                token_endpoint_auth_method="client_secret_basic" if self.config.basic_auth else "client_secret_post",
                code_challenge_method="S256", timeout=self.config.http_timeout, verify=self.config.tls_verify,
                headers={"Accept": "application/json"})
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- endpoints and keys -------------------------------------------------------------------------

    async def endpoints(self) -> Endpoints:
        """The provider's endpoints; with an issuer, discovered once and kept (explicit settings win)."""
        if self._endpoints is None:
            async with self._lock:
                if self._endpoints is None:
                    self._endpoints = await self._load_endpoints()
        return self._endpoints

    async def _load_endpoints(self) -> Endpoints:
        c = self.config
        meta: dict[str, Any] = await self._discover(c.issuer.rstrip("/")) if c.issuer else {}
        if not (c.userdata_url or meta.get("userinfo_endpoint") or c.userdata_from_id_token):
            raise LoginRefused("the provider's OpenID configuration names no user info endpoint (set "
                               f"{self.section_name}.userdata_url or userdata_from_id_token)", 502)
        algorithms = tuple(a for a in meta.get("id_token_signing_alg_values_supported") or ("RS256",)
                           if a in ASYMMETRIC)
        return Endpoints(
            authorize=c.authorize_url or str(meta.get("authorization_endpoint") or ""),
            token=c.token_url or str(meta.get("token_endpoint") or ""),
            userinfo=c.userdata_url or str(meta.get("userinfo_endpoint") or ""),
            issuer=str(meta.get("issuer") or ""), jwks_uri=str(meta.get("jwks_uri") or ""),
            id_token_algorithms=algorithms or ("RS256",))

    async def _discover(self, issuer: str) -> dict[str, Any]:
        r = await self.client.request("GET", f"{issuer}/.well-known/openid-configuration", withhold_token=True)
        r.raise_for_status()
        meta = _json_object(r, "its OpenID configuration")
        if str(meta.get("issuer", "")).rstrip("/") != issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise LoginRefused(f"the provider's OpenID configuration names another issuer than {issuer}", 502)
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not meta.get(k)]
        if missing:
            raise LoginRefused(f"the provider's OpenID configuration lacks {', '.join(missing)}", 502)
        log.info("%s: OpenID configuration of %s loaded", self.name, issuer)
        return meta

    async def _key_set(self, *, reload: bool = False) -> KeySet:
        if self._keys is None or reload:
            r = await self.client.request("GET", (await self.endpoints()).jwks_uri, withhold_token=True)
            r.raise_for_status()
            self._keys = KeySet.import_key_set(_json_object(r, "its JWKS"))  # type: ignore[arg-type]
        return self._keys

    # -- the login ----------------------------------------------------------------------------------

    def authorize_params(self) -> dict[str, str]:
        """Extra parameters of the authorization request (none here)."""
        return {}

    async def authorize_url(self, callback_url: str, state: str) -> Redirect:
        endpoints = await self.endpoints()
        keep: dict[str, str] = {}
        params: dict[str, str] = {"redirect_uri": callback_url, **self.authorize_params()}
        if self.scope:
            params["scope"] = " ".join(self.scope)
        if self.config.enable_pkce:
            keep["code_verifier"] = generate_token(64)
        if "openid" in self.scope:
            keep["nonce"] = params["nonce"] = generate_token(32)
        url, _ = self.client.create_authorization_url(endpoints.authorize, state=state,
                                                      code_verifier=keep.get("code_verifier"), **params)
        return Redirect(str(url), keep)

    async def callback(self, params: Mapping[str, str], kept: Mapping[str, str], callback_url: str) -> AuthUser:
        code = params.get("code")
        if not code:
            raise LoginRefused(f"{self.login_service} sent no authorization code back; please sign in again.", 400)
        endpoints = await self.endpoints()
        if "iss" in params and endpoints.issuer and params["iss"].rstrip("/") != endpoints.issuer.rstrip("/"):
            # RFC 9207: the answer comes from another provider than the one asked (a mix-up attack)
            raise LoginRefused(f"The sign-in answer did not come from {self.login_service}; please sign in again.",
                               400)
        extra = {"code_verifier": kept["code_verifier"]} if kept.get("code_verifier") else {}
        try:
            answer = await self.client.fetch_token(endpoints.token, grant_type="authorization_code", code=code,
                                                   redirect_uri=callback_url, **extra)
        except OAuthError as exc:
            raise self._refused(exc) from exc
        token = dict(answer)
        claims = await self.user_claims(token, nonce=kept.get("nonce"))
        if claims is None:
            raise LoginRefused(f"{self.login_service} refused the hub's access token at its user info endpoint.",
                               502)
        return self.user_from(token, claims)

    def _refused(self, exc: OAuthError) -> LoginRefused:
        """A token endpoint's error as the message the user sees."""
        error = str(exc.error or "error")
        detail = f"{error}: {str(exc.description)[:200]}" if exc.description else error
        if error in ("invalid_client", "unauthorized_client"):
            log.error("%s: the provider refused the client credentials (%s): check %s.client_id and client_secret",
                      self.name, detail, self.section_name)
            return LoginRefused(f"{self.login_service} refused the hub's credentials ({error}); the hub's "
                                "administrators must check its client id and secret.", 502)
        if error == "invalid_grant":
            return LoginRefused(f"{self.login_service} did not accept the sign-in code ({detail}): it expired or "
                                "was used already; please sign in again.", 403)
        return LoginRefused(f"{self.login_service} refused the sign-in ({detail}).", 403)

    async def user_claims(self, token: Mapping[str, Any], *, nonce: str | None) -> dict[str, Any] | None:
        """The user's claims after a code exchange or refresh: the user info endpoint's (its `sub` must be
        the ID token's), or the checked ID token's with `userdata_from_id_token`. None: the user info
        endpoint refused the access token."""
        endpoints = await self.endpoints()
        id_claims = await self.id_token_claims(token, nonce=nonce) if token.get("id_token") and endpoints.jwks_uri \
            else None
        if self.config.userdata_from_id_token:
            if id_claims is None:
                raise LoginRefused(f"{self.login_service} sent no ID token the hub can check.", 502)
            return id_claims
        claims = await self.fetch_userdata(str(token.get("access_token", "")))
        if claims is not None and id_claims is not None and claims.get("sub") != id_claims.get("sub"):
            raise LoginRefused(f"{self.login_service}'s user info is about another user than its ID token.", 403)
        return claims

    async def id_token_claims(self, token: Mapping[str, Any], *, nonce: str | None) -> dict[str, Any]:
        """The ID token's claims, checked: signature (the provider's JWKS, reloaded once for an unknown key
        id), iss, aud, exp, iat, azp, at_hash and — after a login — the nonce."""
        endpoints = await self.endpoints()
        value = str(token["id_token"])
        try:
            try:
                decoded = jwt.decode(value, await self._key_set(), algorithms=endpoints.id_token_algorithms)
            except InvalidKeyIdError:  # the provider rotated its keys since they were loaded
                decoded = jwt.decode(value, await self._key_set(reload=True),
                                     algorithms=endpoints.id_token_algorithms)
            claims = CodeIDToken(
                decoded.claims, decoded.header,
                {"iss": {"essential": True, "value": endpoints.issuer},
                 "aud": {"essential": True, "value": self.config.client_id}},
                {"nonce": nonce, "client_id": self.config.client_id, "access_token": token.get("access_token")})
            claims.validate(leeway=CLOCK_LEEWAY)
        except (JoseError, ValueError) as exc:
            log.warning("%s: ID token refused: %r", self.name, exc)
            raise LoginRefused(f"{self.login_service}'s ID token did not pass the hub's checks "
                               f"({type(exc).__name__}).", 403) from exc
        return dict(claims)

    async def fetch_userdata(self, access_token: str) -> dict[str, Any] | None:
        """The user info endpoint's claims for `access_token`; None if it refuses the token (401/403)."""
        r = await self.client.request("GET", (await self.endpoints()).userinfo, withhold_token=True,
                                      headers={"Authorization": f"Bearer {access_token}"})
        if r.status_code in (401, 403):
            return None
        r.raise_for_status()
        return _json_object(r, "its user info")

    def username_from(self, claims: Mapping[str, Any]) -> str:
        """The user name: claim `username_claim`."""
        value = claims.get(self.config.username_claim)
        if not isinstance(value, str) or not value:
            raise LoginRefused(f"{self.login_service} did not say the user's {self.config.username_claim!r}.", 403)
        return value

    def groups_from(self, claims: Mapping[str, Any]) -> list[str] | None:
        """The user's groups: claim `claim_groups_key` (a dotted path reaches into objects), a list of
        strings or one string; [] when the claim is missing; None when `claim_groups_key` is empty."""
        key = self.config.claim_groups_key
        if not key:
            return None
        value: Any = claims.get(key)
        if value is None and "." in key:  # a namespaced claim may itself hold dots: the whole key first
            value = claims
            for part in key.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            return [value]
        return [g for g in value if isinstance(g, str)] if isinstance(value, list) else []

    def user_from(self, token: Mapping[str, Any], claims: dict[str, Any], name: str | None = None) -> AuthUser:
        """The `AuthUser` of a login or refresh: name, groups, admin (from admin groups, when set), and
        auth_state with the tokens and claims."""
        groups = self.groups_from(claims)
        admin_groups = self.admin_groups
        admin = bool(set(groups or ()) & set(admin_groups)) if admin_groups and groups is not None else None
        return AuthUser(name or self.username_from(claims), admin=admin, groups=groups,
                        auth_state=self.auth_state(token, claims))

    def auth_state(self, token: Mapping[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        """What a login keeps (encrypted, with `auth.enable_auth_state`)."""
        return {"access_token": token.get("access_token"), "refresh_token": token.get("refresh_token"),
                "id_token": token.get("id_token"), "token_response": dict(token), "oauth_user": claims,
                "expires_at": token.get("expires_at")}

    # -- refresh ------------------------------------------------------------------------------------

    async def refresh_user(self, user: AuthUser) -> AuthUser | bool:
        """A still-good access token: the claims re-read (groups, admin). Expired, near expiry or refused:
        the refresh token gets new tokens (False if refused, or if there is none)."""
        state = user.auth_state
        if not state or not state.get("access_token"):
            return True
        expires_at = state.get("expires_at")
        expiring = isinstance(expires_at, (int, float)) and expires_at - EXPIRY_LEEWAY <= time.time()
        if not expiring:
            if self.config.userdata_from_id_token:
                return True  # nothing to re-read without new tokens
            claims = await self.fetch_userdata(str(state["access_token"]))
            if claims is not None:
                return self.user_from(state.get("token_response") or state, claims, user.name)
        refresh_token = state.get("refresh_token")
        if not refresh_token:
            log.info("%s: access token of %s expired and there is no refresh token", self.name, user.name)
            return False
        endpoints = await self.endpoints()
        try:
            answer = await self.client.refresh_token(endpoints.token, refresh_token=str(refresh_token))
        except OAuthError as exc:
            log.info("%s: refresh of %s refused: %s", self.name, user.name, exc.error)
            return False
        token = {"refresh_token": refresh_token, **dict(answer)}
        if not token.get("id_token") and self.config.userdata_from_id_token:
            claims = state.get("oauth_user") or {}
        else:
            fresh = await self.user_claims(token, nonce=None)
            if fresh is None:
                return False
            claims = fresh
        return self.user_from(token, claims, user.name)


def _json_object(r: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise LoginRefused(f"the provider's answer for {what} is not a JSON object (HTTP {r.status_code})", 502)
    return data
