"""The `github` authenticator's settings and first step, without GitHub: choice by name, required and checked
settings, endpoints, scopes, groups, the authorization URL with PKCE."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleethub.shared.authenticators import load_authenticator
from fleethub.shared.authenticators.github import GitHubAuthenticator
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings, load_settings

CREDENTIALS = {"client_id": "the-id", "client_secret": "the-secret"}


def _settings(auth: dict[str, Any] | None = None, **section: Any) -> ServiceSettings:
    return load_settings(None, auth={"authenticator": "github", "github": {**CREDENTIALS, **section}, **(auth or {})})


def test_chosen_by_name_with_its_section() -> None:
    auth = load_authenticator(_settings(allowed_organizations=["fleet"]))
    assert isinstance(auth, GitHubAuthenticator)
    assert auth.redirects and auth.login_service == "GitHub" and auth.grants_access
    assert not GitHubAuthenticator(_settings()).grants_access
    assert GitHubAuthenticator(_settings(login_service="Our GitHub")).login_service == "Our GitHub"


@pytest.mark.parametrize("field", ["client_id", "client_secret"])
def test_credentials_are_required(field: str) -> None:
    section = {**CREDENTIALS, field: "" if field == "client_id" else None}
    settings = load_settings(None, auth={"authenticator": "github", "github": section})
    with pytest.raises(ConfigError, match=f"auth.github.{field} \\(FLEETHUB_AUTH__GITHUB__{field.upper()}\\)"):
        load_authenticator(settings)


@pytest.mark.parametrize("entry", ["org:team:x", "", "org/team", "-org", "org:", "o rg", "org:team/../x"])
def test_organization_entries_are_checked(entry: str) -> None:
    for field in ("allowed_organizations", "admin_groups", "allowed_groups"):
        with pytest.raises(ConfigError, match=f"auth.github.{field} .*is not an organization"):
            _settings(**{field: [entry]})


def test_endpoints_follow_github_url() -> None:
    cloud = GitHubAuthenticator(_settings())
    assert cloud.github_api == "https://api.github.com"
    assert cloud.authorize_endpoint == "https://github.com/login/oauth/authorize"
    assert cloud.token_endpoint == "https://github.com/login/oauth/access_token"
    server = GitHubAuthenticator(_settings(github_url="https://ghe.example.org/"))
    assert server.github_api == "https://ghe.example.org/api/v3"
    assert server.token_endpoint == "https://ghe.example.org/login/oauth/access_token"
    custom = GitHubAuthenticator(_settings(github_api="https://api.example.org/", authorize_url="https://a.example/x",
                                           token_url="https://t.example/y"))
    assert (custom.github_api, custom.authorize_endpoint, custom.token_endpoint) == (
        "https://api.example.org", "https://a.example/x", "https://t.example/y")


def test_scopes_ask_for_read_org_only_when_memberships_matter() -> None:
    assert GitHubAuthenticator(_settings()).scope == ["read:user"]
    for needs in ({"allowed_organizations": ["fleet"]}, {"admin_groups": ["fleet:admins"]},
                  {"populate_teams_in_auth_state": True}, {"auth": {"manage_groups": True}},
                  {"auth": {"admin_groups": ["fleet:admins"]}}):
        assert GitHubAuthenticator(_settings(**needs)).scope == ["read:user", "read:org"], needs
    assert GitHubAuthenticator(_settings(scope=["user"], allowed_organizations=["x"])).scope == ["user"]


def test_groups_are_lowercased_and_merged_with_the_hubs() -> None:
    auth = GitHubAuthenticator(_settings(auth={"admin_groups": ["Fleet:Admins"], "allowed_groups": ["lab"]},
                                         admin_groups=["fleet:admins", "Other"], allowed_groups=["Fleet:Users"]))
    assert auth.admin_groups == ["fleet:admins", "other"]
    assert auth.allowed_groups == ["lab", "fleet:users"]


async def test_authorization_url_with_pkce() -> None:
    auth = GitHubAuthenticator(_settings(allowed_organizations=["fleet"]))
    redirect = await auth.authorize_url("https://hub.example/hub/oauth_callback", "the-state")
    url = urlsplit(redirect.url)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://github.com/login/oauth/authorize"
    verifier = redirect.keep["code_verifier"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert query == {"response_type": "code", "client_id": "the-id", "state": "the-state",
                     "redirect_uri": "https://hub.example/hub/oauth_callback", "scope": "read:user read:org",
                     "code_challenge": challenge, "code_challenge_method": "S256"}
    assert verifier not in redirect.url and "the-secret" not in redirect.url and len(verifier) >= 43
    plain = await GitHubAuthenticator(_settings(enable_pkce=False)).authorize_url("https://h/cb", "s")
    assert plain.keep == {} and "code_challenge" not in plain.url
    await auth.close()
