"""The built-in `github` authenticator: a redirect login through a GitHub (or GitHub Enterprise Server) OAuth app.

GitHub speaks OAuth 2.0 without OpenID Connect: no ID token and no discovery, so the hub's route checks `state`
and the identity comes from the REST API (`GET /user`) with the access token. The code exchange is authlib's
(`AsyncOAuth2Client`, with PKCE S256 when `enable_pkce`); the GitHub parts — endpoints, the user, organization
and team memberships — sit in their own methods below (see "GitHub's REST API").

Who may log in: with `allowed_organizations`, a member of any listed organization ('org') or team
('org:team-slug', an *active* membership) is allowed by this authenticator (`AuthUser.allowed`); anyone else is
left to the hub's own rules (allowed_users, …). Groups: when `admin_groups`/`allowed_groups` (this section's or
the hub's) or `auth.manage_groups` need them, the user's groups are their organizations ('org') and teams
('org:team-slug'), lowercased — so `admin_groups = ["my-org:hub-admins"]` makes that team's members admins.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from fleethub.shared.authenticator_settings import GitHubSettings
from fleethub.shared.authenticators.base import Authenticator, AuthUser, LoginRefused, Redirect
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings

with warnings.catch_warnings():
    # authlib ≥ 1.9 prefers the `httpx2` fork and warns (once, at import) when it runs on httpx, which we use;
    # its module adds an "always" filter of its own when imported, so ours goes in front after it
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
MAX_PAGES = 20
"""Pages (of 100) read from a GitHub list: more teams or organizations than that are not looked at."""
# token endpoint errors that mean the hub is misconfigured, not that the user did something wrong
_HUB_ERRORS = {"incorrect_client_credentials", "redirect_uri_mismatch", "unsupported_grant_type"}


class GitHubAuthenticator(Authenticator):
    """GitHub users log in with their GitHub account (`[auth.github]`); see the module docstring for the rules."""

    name = "github"

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        section = settings.auth.github
        for field in ("client_id", "client_secret"):
            if not getattr(section, field):
                raise ConfigError(f"auth.github.{field} (FLEETHUB_AUTH__GITHUB__{field.upper()}) must be set "
                                  "for the github authenticator")
        self.section: GitHubSettings = section
        self.login_service = section.login_service
        self.oauth_callback_url = section.oauth_callback_url
        self.github_url = section.github_url.rstrip("/")
        self.github_api = (section.github_api or _default_api(self.github_url)).rstrip("/")
        self.scope = list(section.scope) or ["read:user", *(["read:org"] if self._needs_read_org else [])]
        if self._needs_read_org and "read:org" not in self.scope:
            log.warning("auth.github.scope lacks 'read:org': GitHub hides private organization and team "
                        "memberships without it, so allowed_organizations and groups see only public ones")
        self._client: AsyncOAuth2Client | None = None

    # -- settings seen through the Authenticator interface ------------------------------------------------

    @property
    def grants_access(self) -> bool:
        return bool(self.section.allowed_organizations)

    @property
    def allowed_groups(self) -> list[str]:
        return _lower([*super().allowed_groups, *self.section.allowed_groups])

    @property
    def admin_groups(self) -> list[str]:
        return _lower([*super().admin_groups, *self.section.admin_groups])

    @property
    def _needs_groups(self) -> bool:
        return bool(self.allowed_groups or self.admin_groups or self.settings.auth.manage_groups)

    @property
    def _needs_read_org(self) -> bool:
        return bool(self.section.allowed_organizations or self.section.populate_teams_in_auth_state
                    or self._needs_groups)

    @property
    def authorize_endpoint(self) -> str:
        return self.section.authorize_url or f"{self.github_url}/login/oauth/authorize"

    @property
    def token_endpoint(self) -> str:
        return self.section.token_url or f"{self.github_url}/login/oauth/access_token"

    # -- OAuth 2.0 (authlib): the part a rebase on OAuthAuthenticator replaces ---------------------------------

    def _http(self) -> AsyncOAuth2Client:
        """One client per process (made at first use, closed by `close`): the code exchange goes through
        authlib; API calls go through it too with `withhold_token` and the user's token as a header (authlib
        remembers the last token it fetched on the client: it never signs a request here)."""
        if self._client is None:
            s = self.section
            self._client = AsyncOAuth2Client(
                client_id=s.client_id,
                client_secret=s.client_secret.get_secret_value() if s.client_secret else None,
                token_endpoint_auth_method="client_secret_basic" if s.basic_auth else "client_secret_post",
                scope=self.scope, code_challenge_method="S256", timeout=s.http_timeout, verify=s.tls_verify,
                headers={"User-Agent": "fleethub"}, follow_redirects=False,
            )
        return self._client

    async def authorize_url(self, callback_url: str, state: str) -> Redirect:
        keep: dict[str, str] = {}
        verifier = None
        if self.section.enable_pkce:
            verifier = keep["code_verifier"] = generate_token(64)
        url, _ = self._http().create_authorization_url(
            self.authorize_endpoint, state=state, code_verifier=verifier, redirect_uri=callback_url)
        return Redirect(str(url), keep)

    async def exchange_code(self, code: str, callback_url: str, verifier: str | None) -> dict[str, Any]:
        """The token response for `code` (authlib asks for JSON: GitHub answers form-encoded otherwise).

        Raises:
            LoginRefused: GitHub refused the code (`bad_verification_code`: wrong, used or expired) or the
                hub's client credentials.
        """
        extra = {"code_verifier": verifier} if verifier else {}
        try:
            token: dict[str, Any] = dict(await self._http().fetch_token(
                self.token_endpoint, grant_type="authorization_code", code=code, redirect_uri=callback_url,
                **extra))
        except OAuthError as exc:
            raise _refusal(self.login_service, exc.error, exc.description) from None
        except httpx.HTTPStatusError as exc:  # an error status without a JSON body (a proxy's or gateway's page)
            raise LoginRefused(f"{self.login_service}'s token endpoint answered HTTP {exc.response.status_code}; "
                               "please try again later.", 502) from None
        except ValueError:  # 200 but not a JSON object
            raise LoginRefused(f"{self.login_service}'s token endpoint did not answer with a token.", 502) from None
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise LoginRefused(f"{self.login_service} answered without an access token.", 502)
        return token

    async def callback(self, params: Mapping[str, str], kept: Mapping[str, str], callback_url: str) -> AuthUser:
        code = params.get("code", "")
        if not code:
            raise LoginRefused(f"{self.login_service} sent no authorization code; please sign in again.", 400)
        token = await self.exchange_code(code, callback_url, kept.get("code_verifier"))
        access_token = str(token["access_token"])
        user = await self.fetch_user(access_token)
        if user is None:
            raise LoginRefused(f"{self.login_service} did not accept the access token it had just issued.", 502)
        scope = str(token.get("scope") or "")
        auth_state = {"access_token": access_token, "token_type": str(token.get("token_type") or "bearer"),
                      "scope": [s for s in scope.replace(" ", ",").split(",") if s], "github_user": user}
        return await self.user_from(access_token, user, auth_state)

    # -- GitHub's REST API ------------------------------------------------------------------------------

    async def user_from(self, token: str, user: dict[str, Any], auth_state: dict[str, Any]) -> AuthUser:
        """The hub's view of GitHub user `user`: name, allow rule, groups, auth_state (teams added)."""
        login = user.get(self.section.username_claim)
        if not isinstance(login, str) or not login:
            raise LoginRefused(f"{self.login_service}'s user has no {self.section.username_claim!r}.", 502)
        allowed = True if await self.in_allowed_organizations(token, str(user.get("login") or login)) else None
        groups: list[str] | None = None
        if self._needs_groups or self.section.populate_teams_in_auth_state:
            teams = await self.list_api(token, "/user/teams", "teams")
            if self.section.populate_teams_in_auth_state:
                auth_state["teams"] = teams
            if self._needs_groups:
                orgs = await self.list_api(token, "/user/orgs", "organizations")
                groups = _lower([*(o.get("login", "") for o in orgs), *(_team_name(t) for t in teams)])
        return AuthUser(login, groups=groups, auth_state=auth_state, allowed=allowed)

    async def fetch_user(self, token: str) -> dict[str, Any] | None:
        """`GET /user`: the token's user; None if GitHub does not accept the token (401).

        Raises:
            LoginRefused: GitHub answered anything else but the user (rate limit, outage).
        """
        r = await self.api(token, "/user")
        if r.status_code == 401:
            return None
        body = _json(r)
        if r.status_code != 200 or not isinstance(body, dict):
            raise LoginRefused(f"{self.login_service} could not say who you are ({_problem(r)}); please try "
                               "again later.", 503)
        return body

    async def in_allowed_organizations(self, token: str, login: str) -> bool:
        """Whether `login` is a member of an `allowed_organizations` entry (asked one at a time, in order)."""
        for entry in self.section.allowed_organizations:
            org, _, team = entry.partition(":")
            if await (self.in_team(token, org, team, login) if team else self.in_organization(token, org, login)):
                log.debug("GitHub user %s is allowed as a member of %s", login, entry)
                return True
        return False

    async def in_organization(self, token: str, org: str, login: str) -> bool:
        """`GET /orgs/{org}/members/{login}`: 204 a member; 404 not (asked by a member), 302 to the public
        list (asked by someone outside the organization, as the user is then); anything else: not, logged."""
        r = await self.api(token, f"/orgs/{_seg(org)}/members/{_seg(login)}")
        return self._membership(r, r.status_code == 204, f"organization {org}")

    async def in_team(self, token: str, org: str, team: str, login: str) -> bool:
        """`GET /orgs/{org}/teams/{team}/memberships/{login}`: an *active* membership (a pending invitation is
        not one); 404 not a member (or the team is secret to the user)."""
        r = await self.api(token, f"/orgs/{_seg(org)}/teams/{_seg(team)}/memberships/{_seg(login)}")
        body = _json(r)
        ok = r.status_code == 200 and isinstance(body, dict) and body.get("state") == "active"
        return self._membership(r, ok, f"team {org}:{team}")

    def _membership(self, r: httpx.Response, member: bool, what: str) -> bool:
        if r.status_code >= 500 or r.status_code == 429:
            raise LoginRefused(f"{self.login_service} could not say whether you are in {what} ({_problem(r)}); "
                               "please try again later.", 503)
        if not member and r.status_code not in (200, 302, 404):  # 403: SSO or OAuth-app access restrictions
            log.warning("GitHub did not answer whether the user is in %s: %s", what, _problem(r))
        return member

    async def list_api(self, token: str, path: str, what: str) -> list[dict[str, Any]]:
        """All items of a GitHub list (following `Link: rel="next"` on the API's own origin, `MAX_PAGES` at most).

        Raises:
            LoginRefused: GitHub would not list them (no read:org, rate limit, outage): failing closed rather
                than deciding on a partial list.
        """
        url: str | None = f"{self.github_api}{path}?per_page=100"
        items: list[dict[str, Any]] = []
        for page in range(MAX_PAGES + 1):
            if url is None:
                break
            if page == MAX_PAGES:
                log.warning("GitHub lists more than %d pages of %s: the rest is not looked at", MAX_PAGES, what)
                break
            r = await self.api(token, url)
            body = _json(r)
            if r.status_code != 200 or not isinstance(body, list):
                raise LoginRefused(f"{self.login_service} would not list your {what} ({_problem(r)}).", 502)
            items.extend(i for i in body if isinstance(i, dict))
            url = r.links.get("next", {}).get("url")
            if url is not None and not self._same_origin(url):
                log.warning("GitHub's next page of %s is on another site: not followed", what)
                url = None
        return items

    async def api(self, token: str, path: str) -> httpx.Response:
        """A GET on GitHub's REST API (`path` under `github_api`, or a full URL of it) as the token's user."""
        url = path if path.startswith(("http://", "https://")) else f"{self.github_api}{path}"
        response: httpx.Response = await self._http().request("GET", url, withhold_token=True, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION})
        return response

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.github_api)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    async def refresh_user(self, user: AuthUser) -> AuthUser | bool:
        """OAuth-app tokens do not expire, but a user may revoke them: `GET /user` with the stored token. 401:
        False (log in again); GitHub away: True (keep the session); else True, or — when memberships matter
        (allowed_organizations, groups, teams in auth_state) — the user with them read afresh."""
        state = user.auth_state or {}
        token = state.get("access_token")
        if not isinstance(token, str) or not token:
            return True
        try:
            github_user = await self.fetch_user(token)
            if github_user is None:
                log.info("GitHub no longer accepts the token of user %s: they must log in again", user.name)
                return False
            if not (self.section.allowed_organizations or self._needs_groups
                    or self.section.populate_teams_in_auth_state):
                return True
            fresh = await self.user_from(token, github_user, {**state, "github_user": github_user})
        except (LoginRefused, httpx.HTTPError) as exc:
            log.warning("GitHub could not refresh user %s: %s", user.name, getattr(exc, "message", repr(exc)))
            return True
        return fresh.with_(name=user.name)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _default_api(github_url: str) -> str:
    # only github.com keeps its API on another host; GitHub Enterprise Server serves it under /api/v3
    return "https://api.github.com" if github_url == "https://github.com" else f"{github_url}/api/v3"


def _seg(value: str) -> str:
    return quote(value, safe="")


def _lower(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n.lower() for n in names if n))


def _team_name(team: dict[str, Any]) -> str:
    org = team.get("organization")
    login = org.get("login") if isinstance(org, dict) else None
    slug = team.get("slug")
    return f"{login}:{slug}" if isinstance(login, str) and isinstance(slug, str) else ""


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _problem(r: httpx.Response) -> str:
    body = _json(r)
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {r.status_code}" + (f": {str(message)[:200]}" if message else "")


def _refusal(service: str, error: str | None, description: str | None) -> LoginRefused:
    error = (error or "error")[:100]
    detail = (description or error)[:300]
    if error in _HUB_ERRORS:
        log.error("%s refused this hub's token request: %s (%s); check auth.github's client_id, client_secret "
                  "and oauth_callback_url", service, error, detail)
        return LoginRefused(f"{service} refused this hub's credentials ({error}: {detail}). Tell the hub's "
                            "administrators.", 502)
    return LoginRefused(f"{service} refused the sign-in: {detail} ({error}). Please sign in again.", 403)
