"""A stand-in for GitHub (github.com cannot be reached from the tests): a real HTTP server on 127.0.0.1 that
behaves like GitHub's OAuth-app flow and the REST API endpoints the `github` authenticator uses, laid out as
GitHub Enterprise Server is (web at `url`, API at `url/api/v3`).

- `GET /login/oauth/authorize`: a page where the test chooses who signs in (GitHub's login and consent in
  one form), posted to `POST /login/oauth/authorize`, which redirects to the app's callback with `code` and
  `state` (or `error=access_denied`); an unknown client id is a 404 page, a redirect URI outside the app's
  callback URL a redirect with `error=redirect_uri_mismatch`.
- `POST /login/oauth/access_token`: codes are single-use, live 10 minutes and are bound to the client id, the
  redirect URI and the PKCE challenge; the client secret is checked (body or HTTP Basic). Errors are 200s with
  `error`/`error_description`, as GitHub's; form-encoded unless the request accepts JSON.
- `/api/v3`: bearer (or `token`) tokens checked (401 `Bad credentials`); `GET /user`, `/user/orgs`,
  `/user/teams` (paginated with `Link`), `/orgs/{org}/members/{user}` (204, 404 when asked by a member, 302 to
  `public_members` when not), `/orgs/{org}/public_members/{user}`, `/orgs/{org}/teams/{team}/memberships/{user}`
  (200 with role and state, 404), and `DELETE /applications/{client_id}/token` (revoke; HTTP Basic). Private
  memberships are visible only to tokens with `read:org`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

DOCS = "https://docs.github.com/rest"
CODE_LIFETIME = 600.0


@dataclass(frozen=True)
class Account:
    """A GitHub user: organizations (name → membership public?) and teams ((org, slug) → (role, state))."""

    login: str
    id: int
    name: str
    email: str | None = None
    orgs: dict[str, bool] = field(default_factory=dict)
    teams: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class App:
    """An OAuth app registered at the stand-in."""

    client_id: str
    client_secret: str
    callback_url: str


ORGS = {"fleet": 501, "elsewhere": 502}
TEAMS = {("fleet", "hub-admins"): (701, "Hub Admins"), ("fleet", "researchers"): (702, "Researchers"),
         ("fleet", "ops"): (704, "Ops"), ("fleet", "gpu-users"): (705, "GPU users"),
         ("elsewhere", "researchers"): (703, "Researchers")}
ACCOUNTS = [
    Account("Alice", 1001, "Alice Liddell", "alice@example.org", orgs={"fleet": False},
            teams={("fleet", "hub-admins"): ("maintainer", "active"), ("fleet", "ops"): ("member", "active"),
                   ("fleet", "gpu-users"): ("member", "active")}),
    Account("bob", 1002, "Bob", orgs={"fleet": True}, teams={("fleet", "researchers"): ("member", "active")}),
    Account("carol", 1003, "Carol", orgs={"elsewhere": False},
            teams={("elsewhere", "researchers"): ("member", "active")}),
    Account("dave", 1004, "Dave", orgs={"fleet": False}, teams={("fleet", "researchers"): ("member", "pending")}),
    Account("erin", 1005, "Erin"),
]


@dataclass
class _Grant:
    app: App
    account: Account
    scopes: list[str]
    redirect_uri: str = ""
    challenge: str = ""
    issued: float = 0.0


class GitHubStandin:
    """The server's state and its FastAPI app; `running_github` serves it."""

    def __init__(self, apps: list[App], accounts: list[Account]) -> None:
        self.apps = {a.client_id: a for a in apps}
        self.accounts = {a.login.lower(): a for a in accounts}
        self.url = ""
        self.page_size = 100
        """The most items a list answers per page (lower it to make the client follow `Link` headers)."""
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self.app = self._routes()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v3"

    def tokens_of(self, login: str) -> list[str]:
        """The live access tokens of `login`."""
        with self._lock:
            return [t for t, g in self._tokens.items() if g.account.login == login]

    # -- the OAuth app flow ------------------------------------------------------------------------------

    def _redirect_ok(self, app: App, redirect_uri: str) -> bool:
        # GitHub: same scheme, host and port as the callback URL, path the same or below it
        if not redirect_uri:
            return True
        a, b = urlsplit(redirect_uri), urlsplit(app.callback_url)
        base = b.path.rstrip("/")
        return (a.scheme, a.netloc) == (b.scheme, b.netloc) and (a.path == b.path or a.path.startswith(base + "/"))

    def _authorize_page(self, app: App, params: dict[str, str]) -> str:
        hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items())
        users = "".join(f'<label><input type="radio" name="login" value="{escape(a.login)}"> {escape(a.login)}'
                        "</label>" for a in self.accounts.values())
        return (f"<!doctype html><title>Authorize application</title><h1>Authorize {escape(app.client_id)}</h1>"
                f'<form method="post" action="/login/oauth/authorize">{hidden}<fieldset>{users}</fieldset>'
                '<button name="authorize" value="1">Authorize</button>'
                '<button name="authorize" value="0">Cancel</button></form>')

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params) if request.method == "GET" else {
            k: str(v) for k, v in (await request.form()).items()}
        app = self.apps.get(params.get("client_id", ""))
        if app is None:
            return HTMLResponse("<h1>404</h1><p>This is not the web page you are looking for.</p>", 404)
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state", "")
        back = redirect_uri or app.callback_url
        if not self._redirect_ok(app, redirect_uri):
            return _redirect(app.callback_url, error="redirect_uri_mismatch", state=state,
                             error_description="The redirect_uri MUST match the registered callback URL for "
                                               "this application.")
        if request.method == "GET":
            keep = {k: params[k] for k in ("client_id", "redirect_uri", "scope", "state", "code_challenge",
                                           "code_challenge_method") if k in params}
            return HTMLResponse(self._authorize_page(app, keep))
        if params.get("authorize") != "1":
            return _redirect(back, error="access_denied", state=state,
                             error_description="The user has denied your application access.")
        account = self.accounts.get(params.get("login", "").lower())
        if account is None:
            return HTMLResponse("<p>Choose who signs in.</p>", 400)
        if params.get("code_challenge") and params.get("code_challenge_method", "plain") != "S256":
            return _redirect(back, error="invalid_request", state=state,
                             error_description="code_challenge_method must be S256")
        scopes = [s for s in params.get("scope", "").replace(",", " ").split() if s]
        code = secrets.token_hex(10)
        with self._lock:
            self._codes[code] = _Grant(app, account, scopes, redirect_uri, params.get("code_challenge", ""),
                                       time.monotonic())
        return _redirect(back, code=code, state=state)

    def _client(self, request: Request, form: dict[str, str]) -> App | None:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                client_id, secret = base64.b64decode(header[6:]).decode().split(":", 1)
        app = self.apps.get(client_id)
        return app if app and hmac.compare_digest(app.client_secret.encode(), secret.encode()) else None

    async def _access_token(self, request: Request) -> Response:
        form = {**dict(request.query_params), **{k: str(v) for k, v in (await request.form()).items()}}
        app = self._client(request, form)
        if app is None:
            return _token_answer(request, error="incorrect_client_credentials",
                                 error_description="The client_id and/or client_secret passed are incorrect.")
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single use, whatever follows
        if grant is None or grant.app is not app or time.monotonic() - grant.issued > CODE_LIFETIME:
            return _token_answer(request, error="bad_verification_code",
                                 error_description="The code passed is incorrect or expired.")
        if form.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
            return _token_answer(request, error="redirect_uri_mismatch",
                                 error_description="The redirect_uri MUST match the registered callback URL for "
                                                   "this application.")
        if grant.challenge and _s256(form.get("code_verifier", "")) != grant.challenge:
            return _token_answer(request, error="bad_verification_code",
                                 error_description="The code_verifier does not match the code_challenge.")
        token = "gho_" + secrets.token_urlsafe(27)
        with self._lock:
            self._tokens[token] = grant
        return _token_answer(request, access_token=token, token_type="bearer", scope=",".join(grant.scopes))

    # -- the REST API -------------------------------------------------------------------------------------

    def _grant(self, request: Request) -> _Grant | Response:
        kind, _, token = request.headers.get("authorization", "").partition(" ")
        if kind.lower() not in ("bearer", "token") or not token:
            return _api_error(401, "Requires authentication")
        with self._lock:
            grant = self._tokens.get(token.strip())
        return grant if grant is not None else _api_error(401, "Bad credentials")

    def _user_json(self, a: Account) -> dict[str, Any]:
        api = self.api_url
        return {"login": a.login, "id": a.id, "node_id": f"U_{a.id}", "avatar_url": f"{self.url}/avatars/{a.id}",
                "url": f"{api}/users/{a.login}", "html_url": f"{self.url}/{a.login}", "type": "User",
                "site_admin": False, "name": a.name, "company": None, "blog": "", "location": None, "email": a.email,
                "hireable": None, "bio": None, "public_repos": 0, "followers": 0, "following": 0,
                "created_at": "2020-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}

    def _org_json(self, org: str) -> dict[str, Any]:
        return {"login": org, "id": ORGS[org], "node_id": f"O_{ORGS[org]}", "url": f"{self.api_url}/orgs/{org}",
                "description": None}

    def _team_json(self, org: str, slug: str) -> dict[str, Any]:
        team_id, name = TEAMS[(org, slug)]
        return {"id": team_id, "node_id": f"T_{team_id}", "name": name, "slug": slug, "description": "",
                "privacy": "closed", "permission": "pull", "url": f"{self.api_url}/teams/{team_id}",
                "html_url": f"{self.url}/orgs/{org}/teams/{slug}", "organization": self._org_json(org)}

    def _visible(self, grant: _Grant, org: str) -> bool:
        """Whether the token sees that its user is a member of `org` (private memberships need read:org)."""
        public = grant.account.orgs.get(org)
        return public is not None and (public or "read:org" in grant.scopes)

    def _page(self, request: Request, items: list[dict[str, Any]], scopes: list[str]) -> Response:
        try:
            per_page = max(1, min(int(request.query_params.get("per_page", "30")), 100, self.page_size))
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            return _api_error(400, "Invalid pagination parameters")
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {"X-OAuth-Scopes": ", ".join(scopes)}
        if page * per_page < len(items):
            nxt = f"{request.url.replace(query=urlencode({'per_page': per_page, 'page': page + 1}))}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(chunk, headers=headers)

    def _routes(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.add_api_route("/login/oauth/authorize", self._authorize, methods=["GET", "POST"])
        app.add_api_route("/login/oauth/access_token", self._access_token, methods=["POST"])

        @app.get("/api/v3/user")
        async def user(request: Request) -> Response:
            grant = self._grant(request)
            if isinstance(grant, Response):
                return grant
            return JSONResponse(self._user_json(grant.account), headers={"X-OAuth-Scopes": ", ".join(grant.scopes)})

        @app.get("/api/v3/user/orgs")
        async def user_orgs(request: Request) -> Response:
            grant = self._grant(request)
            if isinstance(grant, Response):
                return grant
            orgs = [self._org_json(o) for o in grant.account.orgs if self._visible(grant, o)]
            return self._page(request, orgs, grant.scopes)

        @app.get("/api/v3/user/teams")
        async def user_teams(request: Request) -> Response:
            grant = self._grant(request)
            if isinstance(grant, Response):
                return grant
            if "read:org" not in grant.scopes:
                return _api_error(403, "Resource not accessible without the read:org scope")
            teams = [self._team_json(o, t) for (o, t), (_, state) in grant.account.teams.items() if state == "active"]
            return self._page(request, teams, grant.scopes)

        @app.get("/api/v3/orgs/{org}/members/{login}")
        async def org_member(request: Request, org: str, login: str) -> Response:
            grant = self._grant(request)
            if isinstance(grant, Response):
                return grant
            if org not in ORGS:
                return _api_error(404, "Not Found")
            if not self._visible(grant, org):  # asked by someone outside the organization
                return RedirectResponse(f"{self.api_url}/orgs/{org}/public_members/{login}", 302)
            member = self.accounts.get(login.lower())
            ok = member is not None and (member.orgs.get(org) is not None)
            return Response(status_code=204) if ok else _api_error(404, "User does not exist or is not a member "
                                                                        "of the organization")

        @app.get("/api/v3/orgs/{org}/public_members/{login}")
        async def public_member(request: Request, org: str, login: str) -> Response:
            grant = self._grant(request)
            if isinstance(grant, Response):
                return grant
            member = self.accounts.get(login.lower())
            return Response(status_code=204) if member and member.orgs.get(org) else _api_error(404, "Not Found")

        @app.get("/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
        async def team_membership(request: Request, org: str, slug: str, login: str) -> Response:
            grant = self._grant(request)
            if isinstance(grant, Response):
                return grant
            member = self.accounts.get(login.lower())
            if (org, slug) not in TEAMS or "read:org" not in grant.scopes or member is None \
                    or (org, slug) not in member.teams:
                return _api_error(404, "Not Found")
            role, state = member.teams[(org, slug)]
            return JSONResponse({"url": f"{self.api_url}/teams/{TEAMS[(org, slug)][0]}/memberships/{member.login}",
                                 "role": role, "state": state})

        @app.delete("/api/v3/applications/{client_id}/token")
        async def revoke(request: Request, client_id: str) -> Response:
            app_ = self._client(request, {})
            if app_ is None or app_.client_id != client_id:
                return _api_error(404, "Not Found")
            body = await request.json()
            with self._lock:
                grant = self._tokens.get(str(body.get("access_token", "")))
                if grant is None or grant.app is not app_:
                    return _api_error(404, "Not Found")
                del self._tokens[body["access_token"]]
            return Response(status_code=204)

        return app


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _redirect(url: str, **params: str) -> Response:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}{urlencode({k: v for k, v in params.items() if v})}", 302)


def _token_answer(request: Request, **fields: str) -> Response:
    # GitHub answers 200 whatever happened, in JSON only when asked to
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({**fields, **({"error_uri": f"{DOCS}/oauth"} if "error" in fields else {})})
    return PlainTextResponse(urlencode(fields), media_type="application/x-www-form-urlencoded")


def _api_error(status: int, message: str) -> Response:
    return JSONResponse({"message": message, "documentation_url": DOCS, "status": str(status)}, status)


@contextlib.contextmanager
def running_github(apps: list[App], accounts: list[Account] | None = None) -> Iterator[GitHubStandin]:
    """The stand-in served by uvicorn in a thread on a free 127.0.0.1 port (the socket is listening before
    this yields, so no wait is needed), stopped on exit."""
    standin = GitHubStandin(apps, ACCOUNTS if accounts is None else accounts)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    standin.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(standin.app, lifespan="off", log_config=None, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="github-standin", daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
