"""The oauth authenticator without a provider: its settings checks, scopes, groups and the AuthUser it builds
(the flows against a real provider: tests/integration/hub/auth/test_oauth_login.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fleethub.shared.authenticators import LoginRefused, load_authenticator
from fleethub.shared.authenticators.oauth import OAuthAuthenticator
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import load_settings

ISSUER = "https://id.example.org"


def make(auth: dict[str, Any] | None = None, **oauth: Any) -> OAuthAuthenticator:
    section = {"client_id": "hub", "client_secret": "s3cret-value", **oauth}
    authenticator = load_authenticator(load_settings(None, auth={"authenticator": "oauth", "oauth": section,
                                                                 **(auth or {})}))
    assert isinstance(authenticator, OAuthAuthenticator)
    return authenticator


def test_settings_are_checked_without_io() -> None:
    with pytest.raises(ConfigError, match=r"auth\.oauth\.client_id must be set"):
        make(client_id="", issuer=ISSUER)
    with pytest.raises(ConfigError, match=r"auth\.oauth\.issuer, or auth\.oauth\.authorize_url and .*token_url"):
        make(authorize_url="https://x/auth")
    with pytest.raises(ConfigError, match=r"userdata_url must be set without an issuer"):
        make(authorize_url="https://x/auth", token_url="https://x/token")
    a = make(issuer=ISSUER)
    assert a.redirects and a.login_service == "OpenID Connect" and a._client is None  # nothing opened yet


def test_scopes() -> None:
    assert make(issuer=ISSUER).scope == ["openid", "email", "profile"]
    assert make(issuer=ISSUER, scope=["openid", "groups"]).scope == ["openid", "groups"]
    plain = make(authorize_url="https://x/auth", token_url="https://x/token", userdata_url="https://x/user")
    assert plain.scope == []


def test_groups_are_the_union_of_both_sections() -> None:
    a = make({"allowed_groups": ["staff"], "admin_groups": ["root"]}, issuer=ISSUER,
             allowed_groups=["students", "staff"], admin_groups=["ops"])
    assert a.allowed_groups == ["staff", "students"] and a.admin_groups == ["root", "ops"]


def test_groups_from_claims() -> None:
    a = make(issuer=ISSUER)
    assert a.groups_from({"groups": ["a", 3, "b"]}) == ["a", "b"]
    assert a.groups_from({"groups": "solo"}) == ["solo"]
    assert a.groups_from({}) == []
    nested = make(issuer=ISSUER, claim_groups_key="realm_access.roles")
    assert nested.groups_from({"realm_access": {"roles": ["r1"]}}) == ["r1"]
    assert nested.groups_from({"realm_access": ["not", "an", "object"]}) == []
    dotted = make(issuer=ISSUER, claim_groups_key="https://example.org/groups")  # a namespaced claim
    assert dotted.groups_from({"https://example.org/groups": ["g"]}) == ["g"]
    assert make(issuer=ISSUER, claim_groups_key="").groups_from({"groups": ["a"]}) is None


def test_the_user_and_auth_state() -> None:
    a = make(issuer=ISSUER, admin_groups=["ops"], username_claim="email")
    token = {"access_token": "at", "refresh_token": "rt", "id_token": "it", "expires_at": 100, "token_type": "Bearer"}
    claims = {"email": "Ann@example.org", "groups": ["ops"]}
    user = a.user_from(token, claims)
    assert user.name == "Ann@example.org" and user.admin is True and user.groups == ["ops"]
    assert user.auth_state == {"access_token": "at", "refresh_token": "rt", "id_token": "it", "token_response": token,
                               "oauth_user": claims, "expires_at": 100}
    assert a.user_from(token, {"email": "b@example.org", "groups": []}).admin is False
    assert make(issuer=ISSUER).user_from(token, {"preferred_username": "c"}).admin is None  # no admin groups
    with pytest.raises(LoginRefused, match="did not say the user's 'email'"):
        a.user_from(token, {"sub": "x"})
