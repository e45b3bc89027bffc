"""The sections of the built-in authenticators: `[auth.oauth]`, `[auth.github]`, `[auth.ldap]`, `[auth.pam]`
and `[auth.password]`. Option names follow the JupyterHub plug-in that does the same job (oauthenticator,
ldapauthenticator, JupyterHub's PAMAuthenticator, NativeAuthenticator) where the meaning is the same."""

from __future__ import annotations

import codecs
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleethub.shared.secret import Secret

# GitHub organization names: letters, digits, hyphens; team slugs also '_' and '.'
_ORG_TEAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}(:[A-Za-z0-9][A-Za-z0-9._-]{0,99})?")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OAuthSettings(_Section):
    """`[auth.oauth]`: any OAuth 2.0 / OpenID Connect provider (oauthenticator's GenericOAuthenticator)."""

    client_id: str = Field("", description="The hub's client id at the provider.")
    client_secret: Secret | None = Field(None, description="The hub's client secret at the provider.")
    oauth_callback_url: str = Field(
        "", description="Where the provider sends the browser back; default <public_url><base_url>hub/oauth_callback.")
    issuer: str = Field(
        "", description="OpenID Connect issuer: the endpoints, JWKS and ID-token checks come from "
                        "<issuer>/.well-known/openid-configuration (then authorize_url etc. may be left empty).")
    authorize_url: str = Field("", description="The provider's authorization endpoint.")
    token_url: str = Field("", description="The provider's token endpoint.")
    userdata_url: str = Field("", description="The provider's user info endpoint.")
    scope: list[str] = Field(
        default_factory=list, description="Scopes asked for; default ['openid', 'email', 'profile'] with an issuer.")
    username_claim: str = Field("preferred_username", description="Claim of the user info that is the user name.")
    claim_groups_key: str = Field("groups", description="Claim of the user info that lists the user's groups.")
    allowed_groups: list[str] = Field(default_factory=list, description="Members of these groups may log in.")
    admin_groups: list[str] = Field(default_factory=list, description="Members of these groups are admins.")
    enable_pkce: bool = Field(True, description="Use PKCE (S256) in the authorization request.")
    basic_auth: bool = Field(
        True, description="Send the client credentials to the token endpoint with HTTP Basic (else in the body).")
    userdata_from_id_token: bool = Field(
        False, description="Take the user's claims from the ID token instead of the user info endpoint.")
    login_service: str = Field("OpenID Connect", description="Shown on the login button: 'Sign in with …'.")
    tls_verify: bool = Field(True, description="Check the provider's TLS certificate.")
    http_timeout: float = Field(10.0, gt=0, description="Seconds each request to the provider may take.")


class GitHubSettings(OAuthSettings):
    """`[auth.github]`: GitHub (or GitHub Enterprise Server) as the OAuth provider, through an OAuth app
    (oauthenticator's GitHubOAuthenticator). `allowed_groups` and `admin_groups` name organizations ('org')
    and teams ('org:team-slug') as `allowed_organizations` does."""

    github_url: str = Field("https://github.com", description="GitHub's web address (authorize and token URLs).")
    github_api: str = Field(
        "", description="GitHub's REST API (user, orgs, teams); default https://api.github.com for github.com, "
                        "else <github_url>/api/v3 (GitHub Enterprise Server).")
    allowed_organizations: list[str] = Field(
        default_factory=list,
        description="Members of these organizations ('org') or teams ('org:team-slug') may log in "
                    "('read:org' is then asked for).")
    populate_teams_in_auth_state: bool = Field(
        False, description="Keep the user's teams (GitHub's team objects) in auth_state['teams'].")
    username_claim: str = Field("login", description="Field of GitHub's user model that is the user name.")
    login_service: str = Field("GitHub", description="Shown on the login button: 'Sign in with …'.")
    basic_auth: bool = Field(
        False, description="Send the client credentials to the token endpoint with HTTP Basic (GitHub's "
                           "documented way, the default, is in the body).")

    @field_validator("allowed_organizations", "allowed_groups", "admin_groups")
    @classmethod
    def _org_or_team(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not _ORG_TEAM.fullmatch(entry):
                raise ValueError(f"{entry!r} is not an organization ('org') or a team ('org:team-slug')")
        return value


class LdapSettings(_Section):
    """`[auth.ldap]`: bind to an LDAP directory with the user's password (ldapauthenticator)."""

    server_address: str = Field("", description="Host name or address of the LDAP server.")
    server_port: int | None = Field(None, ge=1, le=65535, description="Port; default 636 for on_connect, else 389.")
    tls_strategy: Literal["before_bind", "on_connect", "insecure"] = Field(
        "before_bind", description="StartTLS before binding, LDAPS from the start, or no TLS (tests only).")
    tls_ca_file: str | None = Field(None, description="CA certificates the server's certificate is checked against.")
    bind_dn_template: list[str] = Field(
        default_factory=list, description="DNs to bind as, '{username}' filled in, tried in order.")
    lookup_dn: bool = Field(False, description="Search the user's DN first (search, then bind).")
    user_search_base: str = Field("", description="Where the DN search looks.")
    user_attribute: str = Field("uid", description="Attribute the login name is matched against.")
    lookup_dn_search_filter: str = Field(
        "({login_attr}={login})", description="Filter of the DN search ({login_attr}, {login} filled in, escaped).")
    lookup_dn_search_user: str | None = Field(None, description="DN the search binds as (unset: anonymous).")
    lookup_dn_search_password: Secret | None = Field(None, description="Password of lookup_dn_search_user.")
    lookup_dn_user_dn_attribute: str | None = Field(
        None, description="Attribute whose value becomes the user name after a lookup.")
    allowed_groups: list[str] = Field(default_factory=list, description="DNs of the groups whose members may log in.")
    admin_groups: list[str] = Field(default_factory=list, description="DNs of the groups whose members are admins.")
    group_search_filter: str = Field(
        "(|(member={userdn})(uniqueMember={userdn})(memberUid={uid}))",
        description="Filter finding the user in a group ({userdn}, {uid} filled in, escaped).")
    auth_state_attributes: list[str] = Field(default_factory=list, description="User attributes kept in auth_state.")
    http_timeout: float = Field(10.0, gt=0, description="Seconds a connection and each operation may take.")


class PamSettings(_Section):
    """`[auth.pam]`: the host's Unix accounts through PAM (JupyterHub's PAMAuthenticator)."""

    service: str = Field("login", description="PAM service (a file in /etc/pam.d) that checks the password.")
    open_sessions: bool = Field(
        False, description="Open a PAM session at login and close it at logout (/hub/logout; a session that expires "
                           "or ends otherwise is not closed).")
    check_account: bool = Field(True, description="Also run PAM's account check (expired or locked accounts).")
    admin_groups: list[str] = Field(default_factory=list, description="Members of these Unix groups are admins.")
    allowed_groups: list[str] = Field(default_factory=list, description="Members of these Unix groups may log in.")
    encoding: str = Field("utf8", description="Encoding of user names and passwords handed to PAM.")
    max_concurrent: int = Field(
        4, ge=1, le=64, description="PAM calls in flight at once (each holds a thread, a failed password 2–3 s "
                                    "with pam_faildelay); further logins wait for a free one.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


class PasswordSettings(_Section):
    """`[auth.password]`: rules of the built-in password accounts (NativeAuthenticator's names)."""

    minimum_password_length: int = Field(8, ge=1, le=1000, description="Shortest password accepted.")
    check_common_password: bool = Field(True, description="Refuse passwords from a list of common passwords.")
    enable_signup: bool = Field(
        False, description="Anyone may ask for an account at /hub/signup; an admin approves it (open_signup: "
                           "no approval).")
