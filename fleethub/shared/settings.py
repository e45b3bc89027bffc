"""The one settings model of fleethub: a TOML file plus `FLEETHUB_<SECTION>__<KEY>` variables.

Every service reads the same file and variables, validated at start; errors name the setting and
its environment variable. Option names follow JupyterHub's where the meaning is the same.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fleethub.shared.authenticator_settings import (
    GitHubSettings,
    LdapSettings,
    OAuthSettings,
    PamSettings,
    PasswordSettings,
)
from fleethub.shared.backend_settings import BatchSettings, DockerSettings, Profile, SystemUserSettings, parse_size
from fleethub.shared.baseurl import BaseUrl
from fleethub.shared.errors import BadRequest, ConfigError
from fleethub.shared.names import normalize_username
from fleethub.shared.ops_settings import OpsSettings
from fleethub.shared.page_settings import PageSettings
from fleethub.shared.scopes import allowed_scope_problem
from fleethub.shared.secret import _REVEAL_SECRETS, Secret, crypt_key_bytes
from fleethub.shared.webhook_settings import Webhooks

ENV_PREFIX = "FLEETHUB_"
NESTED_DELIMITER = "__"
SETTINGS_VAR = ENV_PREFIX + "SETTINGS_JSON"
"""The variable that hands a parent's validated settings to a child process (see `child_env`)."""

CRYPT_KEY_VAR = "JUPYTERHUB_CRYPT_KEY"
# named crash points switched on for one process (tests only; `fleethub.shared.faults`); never a setting,
# so no config file or handed-down settings document can carry it to another process
FAULT_VAR = ENV_PREFIX + "FAULT"
"""JupyterHub's variable for the keys of `auth.crypt_key` (`;`-separated), read when the setting is unset."""

# JupyterHub's LocalProcessSpawner.env_keep (jupyterhub 6.1; the base Spawner keeps only JUPYTERHUB_SINGLEUSER_APP)
ENV_KEEP_DEFAULT = ("CONDA_DEFAULT_ENV", "CONDA_ROOT", "JUPYTERHUB_SINGLEUSER_APP", "LANG", "LC_ALL",
                    "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "VIRTUAL_ENV")

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenSettings(_Section):
    """Where an HTTP service listens and how others reach it."""

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(0, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    advertise_url: str | None = Field(
        None, description="URL other services use to reach this replica; default http://<host>:<bound port>."
    )


class AuthSettings(ListenSettings):
    """The auth service: authenticators, login/logout, sessions."""

    authenticator: str = Field(
        "password", description="Authenticator: 'password', 'oauth', 'github', 'ldap', 'pam', 'dummy' "
                                "(development only), an entry point of fleethub.authenticators, or 'module:Class'.")
    dummy_password: Secret | None = Field(
        None, description="Shared password of the dummy authenticator (development only; required to use it)."
    )
    admin_users: list[str] = Field(
        default_factory=list, description="Users who are admins (as JupyterHub's admin_users)."
    )
    allowed_users: list[str] = Field(
        default_factory=list, description="If not empty, only these users (and admins) may log in."
    )
    blocked_users: list[str] = Field(default_factory=list, description="Users who may never log in.")
    open_signup: bool = Field(False, description="Let anyone create a password account at /hub/signup.")
    initial_admin_password_file: Path | None = Field(None, description=(
        "A 0600 file whose first line becomes the password of every admin_users entry without a password "
        "account, when the auth service starts (an existing account is never changed)."))
    cookie_max_age_days: float = Field(14.0, gt=0, description="Lifetime of the hub login cookie and session.")
    crypt_key: list[Secret] = Field(
        default_factory=list,
        description="Keys encrypting users' auth_state at rest (32 bytes each, base64 or hex); the first "
                    "encrypts, any decrypts (add a new one first to rotate). Default: $JUPYTERHUB_CRYPT_KEY "
                    "(';'-separated). Unset: auth_state is stored unencrypted (a warning at start).",
    )

    @field_validator("crypt_key")
    @classmethod
    def _keys_decode(cls, value: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(value):
            try:
                crypt_key_bytes(key.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"key {i + 1} {exc} (also read from {CRYPT_KEY_VAR})") from None
        return value

    @property
    def crypt_keys(self) -> list[bytes]:
        """The raw 32-byte keys of `crypt_key`, first the one that encrypts."""
        return [crypt_key_bytes(key.get_secret_value()) for key in self.crypt_key]

    login_throttle: bool = Field(
        True, description="Slow down password guessing: attempts after repeated failures wait (429) before the "
                          "password is even checked; state in PostgreSQL, shared by every replica.")
    throttle_free_attempts: int = Field(
        5, ge=1, description="Attempts one user name may fail in a row before each next one has to wait.")
    throttle_client_free_attempts: int = Field(
        20, ge=1, description="Failed attempts one client address may make (any user names) before each next "
                              "one has to wait (higher: many people may share one address).")
    throttle_base_delay_seconds: float = Field(
        1.0, gt=0, description="The first wait; it doubles with every further failure, up to the caps.")
    throttle_max_delay_seconds: float = Field(
        30.0, gt=0, description="Longest wait of one user name: the real user, from anywhere, waits at most this "
                                "long however much someone else guesses.")
    throttle_client_max_delay_seconds: float = Field(
        300.0, gt=0, description="Longest wait of one client address.")
    throttle_forget_seconds: float = Field(
        3600.0, gt=0, description="Failures older than this (with none since) are forgotten.")

    allow_all: bool | None = Field(
        None, description="Everyone who authenticates may log in (JupyterHub 5's allow_all); default: true "
                          "for 'dummy' without allowed_users, else false.")
    allow_existing_users: bool | None = Field(
        None, description="Users already in the hub's database (made through the API or an earlier login) may "
                          "log in; default: true when allowed_users is set, else false (JupyterHub 5's rule).")
    allowed_groups: list[str] = Field(
        default_factory=list, description="Members of these groups (as the authenticator reports them) may log in.")
    admin_groups: list[str] = Field(
        default_factory=list, description="Members of these groups (as the authenticator reports them) are admins.")
    manage_groups: bool = Field(
        False, description="The authenticator's groups are the user's hub groups: created and synced at every "
                           "login and refresh (the API then refuses to change memberships).")
    auto_login: bool = Field(
        False, description="The login page sends the browser straight to the provider (redirect authenticators).")
    enable_auth_state: bool = Field(
        False, description="Keep what the authenticator knows of a user (tokens, attributes) in auth_state, "
                           "encrypted with crypt_key, and hand it to the spawner before every spawn.")
    refresh_pre_spawn: bool = Field(
        False, description="Refresh the user's authentication (e.g. an OAuth token) before every spawn; a user "
                           "whose refresh fails must log in again before the spawn goes ahead.")
    auth_refresh_age: float = Field(
        300.0, ge=0, description="Seconds after which a logged-in user's authentication is refreshed in the "
                                 "background (0: never).")
    post_auth_hook: str | None = Field(
        None, description="Called after every successful authentication, before the allow rules: an entry point "
                          "of fleethub.hooks or 'module:function' taking (authenticator, user) and returning the "
                          "user (changed or not) or None to refuse.")
    oauth: OAuthSettings = Field(default_factory=OAuthSettings, description="[auth.oauth] section.")
    github: GitHubSettings = Field(default_factory=GitHubSettings, description="[auth.github] section.")
    ldap: LdapSettings = Field(default_factory=LdapSettings, description="[auth.ldap] section.")
    pam: PamSettings = Field(default_factory=PamSettings, description="[auth.pam] section.")
    password: PasswordSettings = Field(default_factory=PasswordSettings, description="[auth.password] section.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Settings of a third-party authenticator, under keys of its own "
                                          "([auth.extra], FLEETHUB_AUTH__EXTRA__<KEY>): it reads "
                                          "settings.auth.extra; fleethub does not check them.")

    @field_validator("admin_users", "allowed_users", "blocked_users")
    @classmethod
    def _normalized_names(cls, value: list[str]) -> list[str]:
        try:  # compared with normalized names at login, as JupyterHub normalizes these lists at start
            return list(dict.fromkeys(normalize_username(name) for name in value))
        except BadRequest as exc:
            raise ValueError(exc.message) from None


class ApiSettings(ListenSettings):
    """The api service: REST API, hub pages, desired state."""

    allow_named_servers: bool = Field(False, description="Allow users to have named servers.")
    named_server_limit_per_user: int = Field(0, ge=0, description="Maximum named servers per user; 0 = no limit.")
    concurrent_spawn_limit: int = Field(100, ge=0, description="Spawns pending at once across the hub; 0 = no limit.")
    active_server_limit: int = Field(0, ge=0, description="Servers active at once across the hub; 0 = no limit.")
    slow_spawn_timeout: float = Field(10.0, ge=0, description="Seconds a start request waits for ready before 202.")
    slow_stop_timeout: float = Field(10.0, ge=0, description="Seconds a stop request waits before answering 202.")
    token_expires_in_max_seconds: int = Field(
        0, ge=0,
        description="Longest lifetime of a token created through the API; 0 = no limit (never-expiring allowed).",
    )


WORKER_ONLY = (("docker", "host"), ("batch", "environment"), ("batch", "env_keep"))
"""Settings of how a spawner worker reaches its backend's system: the worker's own, never a profile's."""


class SpawnerSettings(_Section):
    """The spawner workers and their backend."""

    backend: str = Field("local", description="Spawner backend: 'local' (subprocess), an entry point name, or "
                                              "an import path 'module:Class'.")
    cmd: list[str] = Field(default_factory=lambda: ["jupyterhub-singleuser"], description="Command of the user server.")
    args: list[str] = Field(default_factory=list, description="Extra arguments appended to cmd.")
    env_keep: list[str] = Field(
        default_factory=lambda: list(ENV_KEEP_DEFAULT),
        description="Variables of the spawner worker's environment that user servers and managed services "
                    "inherit (JupyterHub's env_keep); nothing else of it reaches them. FLEETHUB_* and "
                    "JUPYTERHUB_CRYPT_KEY are refused.",
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for user servers (applied last; {username}, {servername} filled in).",
    )
    notebook_dir: str | None = Field(
        None, description="The servers' root directory (JUPYTERHUB_ROOT_DIR), e.g. '/home/{username}/work'."
    )
    default_url: str | None = Field(
        None, description="Where a server's root URL leads (JUPYTERHUB_DEFAULT_URL), e.g. '/lab' or '/tree'."
    )
    ip: str = Field("127.0.0.1", description="Address user servers listen on.")
    start_timeout: float = Field(60.0, gt=0, description="Seconds the backend may take to start a server.")
    http_timeout: float = Field(30.0, gt=0, description="Seconds a started server may take to answer HTTP.")
    poll_interval: float = Field(0.05, gt=0, le=5, description="Fixed interval of the readiness poll, in seconds.")
    lease_ttl: float = Field(6.0, ge=1, description="Seconds a worker's lease on a server lasts without renewal.")
    max_concurrent: int = Field(64, ge=1, description="Commands one worker process handles at once.")
    hub_api_url: str | None = Field(
        None, description="JUPYTERHUB_API_URL given to servers; default <public_url><base_url>hub/api."
    )
    backends: list[str] = Field(
        default_factory=list,
        description="Backends this worker process serves (it consumes only their commands); empty: every "
                    "backend the settings name (spawner.backend and each profile's).",
    )
    mem_limit: str | None = Field(None, description="Memory limit of a server ('2G'); exported as MEM_LIMIT "
                                                    "(bytes), enforced where the backend can (docker, batch).")
    mem_guarantee: str | None = Field(None, description="Memory guaranteed to a server; MEM_GUARANTEE.")
    cpu_limit: float | None = Field(None, gt=0, description="CPUs a server may use; exported as CPU_LIMIT.")
    cpu_guarantee: float | None = Field(None, gt=0, description="CPUs guaranteed to a server; CPU_GUARANTEE.")
    pre_spawn_hook: str | None = Field(
        None, description="Called in the spawner worker before a server starts, with its ServerSpec (may return "
                          "a changed one; an exception fails the spawn with its message): an entry point of "
                          "'fleethub.hooks' or an import path 'module:function'.",
    )
    post_stop_hook: str | None = Field(
        None, description="Called in the spawner worker after a server stopped, exited or failed, with a "
                          "StopInfo (user, server, spawn id, state, reason); its exception is logged: an entry "
                          "point of 'fleethub.hooks' or 'module:function'.",
    )
    profiles: list[Profile] = Field(default_factory=list, description="[[spawner.profiles]]: what the spawn "
                                                                      "form offers; none: one implicit profile.")
    system_user: SystemUserSettings = Field(default_factory=SystemUserSettings,
                                            description="[spawner.system_user] section.")
    docker: DockerSettings = Field(default_factory=DockerSettings, description="[spawner.docker] section.")
    batch: BatchSettings = Field(default_factory=BatchSettings, description="[spawner.batch] section.")

    @field_validator("mem_limit", "mem_guarantee")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        parse_size(value)
        return value

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, value: list[Profile]) -> list[Profile]:
        slugs = [p.key() for p in value]
        dup = sorted({s for s in slugs if slugs.count(s) > 1})
        if dup:
            raise ValueError(f"profiles share the slug {dup[0]!r}; give each its own")
        if sum(p.default for p in value) > 1:
            raise ValueError("more than one profile is the default")
        for profile in value:
            if "profiles" in profile.overrides or "backends" in profile.overrides:
                raise ValueError(f"profile {profile.key()!r}: overrides cannot change profiles or backends")
            for section, key in WORKER_ONLY:
                if isinstance(profile.overrides.get(section), dict) and key in profile.overrides[section]:
                    raise ValueError(
                        f"profile {profile.key()!r}: spawner.{section}.{key} is how a worker reaches its system "
                        f"(polls and stops use the worker's own): set it in [spawner.{section}] of the workers "
                        "serving that backend, not in a profile")
        return value

    @model_validator(mode="after")
    def _overrides_valid(self) -> SpawnerSettings:
        from fleethub.shared.profiles import with_overrides  # it imports this module's names lazily too

        for profile in self.profiles:
            try:
                with_overrides(self, profile.overrides)
            except ValueError as exc:
                raise ValueError(f"profile {profile.key()!r} overrides: {exc}") from None
        return self

    @field_validator("env_keep")
    @classmethod
    def _no_secrets_kept(cls, value: list[str]) -> list[str]:
        for name in value:
            if name.upper().startswith(ENV_PREFIX) or name.upper() == CRYPT_KEY_VAR:
                raise ValueError(f"{name!r} carries the hub's secrets and may not be passed to servers")
        return value


class ProxySettings(_Section):
    """The proxy nodes: the public entry point."""

    host: str = Field("127.0.0.1", description="Interface the public proxy binds.")
    port: int = Field(8000, ge=0, le=65535, description="Public port of the proxy.")
    activity_interval: float = Field(5.0, gt=0, description="Seconds between activity batches.")
    upstream_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for an upstream to connect/answer headers."
    )
    workers: int = Field(
        1, ge=1, le=64,
        description="Worker processes of one node, sharing the public port (SO_REUSEPORT); each holds the whole table.",
    )
    api_host: str = Field("127.0.0.1", description="Interface of the configurable-http-proxy-compatible route API.")
    api_port: int | None = Field(
        None, ge=0, le=65535,
        description="Port of the configurable-http-proxy-compatible route API (/api/routes); unset: no API.",
    )
    auth_token: Secret | None = Field(
        None, description="Token of the route API (`Authorization: token …`); default: $CONFIGPROXY_AUTH_TOKEN.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses/networks (CIDR) of load balancers in front of the proxy whose X-Forwarded-* are "
                    "believed.",
    )

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values (host[:port], exact, case-insensitive) accepted besides the public URL's "
                    "host and spawner.hub_api_url's host (or, with no public_url, the bound address and localhost); "
                    "any other Host gets a 400.",
    )
    ssl_cert: Path | None = Field(
        None, description="PEM certificate (chain) of the public port: with ssl_key, the proxy serves https "
                          "(JupyterHub's ssl_cert).",
    )
    ssl_key: Path | None = Field(
        None, description="PEM private key of ssl_cert (JupyterHub's ssl_key); keep it 0600.",
    )
    http_redirect_port: int | None = Field(
        None, ge=0, le=65535,
        description="A plain-HTTP port (on proxy.host) that redirects every request to the https public URL; "
                    "unset: none.",
    )
    hsts_max_age: int = Field(
        31536000, ge=0,
        description="max-age of Strict-Transport-Security on the hub's own responses when the public URL is https; "
                    "0: no header.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item or any(c in item for c in "/ \t,@?#") or not item.isascii():
                raise ValueError(f"{item!r} is not a host[:port]")
        return [item.lower() for item in value]

    @model_validator(mode="after")
    def _tls_pair(self) -> ProxySettings:
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise ValueError("proxy.ssl_cert and proxy.ssl_key (FLEETHUB_PROXY__SSL_CERT, FLEETHUB_PROXY__SSL_KEY) "
                             "must be set together")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an address or network ({exc})") from None
        return value


class CullerSettings(_Section):
    """The idle culler."""

    enabled: bool = Field(True, description="Run the idle policy.")
    timeout: float = Field(600.0, gt=0, description="Seconds of inactivity after which a server is stopped.")
    every: float | None = Field(None, gt=0, description="Seconds between passes; default timeout/2, at most 60.")

    @property
    def interval(self) -> float:
        """Seconds between culling passes."""
        return self.every if self.every is not None else max(0.5, min(self.timeout / 2, 60.0))


class HubService(_Section):
    """One `[[services]]` entry: an external service known to the hub (JupyterHub's `services`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$", description="Service name (URL-safe).")
    url: str | None = Field(None, description="Where the service listens; routed at /services/<name>/.")
    api_token: Secret | None = Field(None, description="The service's API token, also its OAuth client secret.")
    oauth_client_id: str | None = Field(None, description="OAuth client id; default service-<name>.")
    oauth_redirect_uri: str | None = Field(
        None, description="OAuth redirect URI; default /services/<name>/oauth_callback."
    )
    oauth_no_confirm: bool = Field(False, description="Skip the consent page for this service's OAuth client.")
    oauth_client_allowed_scopes: list[str] = Field(
        default_factory=list,
        description="Scopes its OAuth client's tokens may carry beyond identifying the user and reaching the "
                    "service (bare filters such as !user refer to the user who logs in).")
    oauth_roles: list[str] = Field(
        default_factory=list,
        description="[[roles]] whose scopes its OAuth client's tokens may carry (JupyterHub's deprecated form).")
    display: bool = Field(True, description="Listed on the hub's pages.")
    info: dict[str, Any] = Field(default_factory=dict, description="Free-form information shown by the API.")
    admin: bool = Field(False, description="Give the service the admin role (deprecated in JupyterHub; use roles).")
    command: list[str] = Field(
        default_factory=list, description="Hub-managed: the command a spawner worker runs (and restarts) for it."
    )
    environment: dict[str, str] = Field(default_factory=dict, description="Extra environment of a managed service.")
    cwd: str | None = Field(None, description="Working directory of a managed service.")

    @field_validator("url")
    @classmethod
    def _http_origin(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("http://"):
            raise ValueError("a service url must be http://host:port")
        return value.rstrip("/") if value else value

    @field_validator("oauth_client_id")
    @classmethod
    def _client_prefix(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("service-"):
            raise ValueError("a service's oauth_client_id must start with 'service-'")
        return value

    @property
    def managed(self) -> bool:
        """Whether the hub runs it (it has a command)."""
        return bool(self.command)

    @property
    def oauth_client(self) -> bool:
        """Whether it is an OAuth client: it has a token (configured, or generated when managed) and a
        place to send users back to."""
        return (self.api_token is not None or self.managed) and (self.url is not None or
                                                                 self.oauth_redirect_uri is not None)

    @property
    def prefix(self) -> str:
        """The service's URL prefix on the hub's public URL."""
        return f"/services/{self.name}/"

    @property
    def client_id(self) -> str:
        return self.oauth_client_id or f"service-{self.name}"

    @property
    def redirect_uri(self) -> str:
        return self.oauth_redirect_uri or f"{self.prefix}oauth_callback"


class CustomScope(_Section):
    """One `[custom_scopes."custom:…"]` entry (JupyterHub's `custom_scopes`): a scope services define."""

    description: str = Field(min_length=1, description="What the scope allows (required, as in JupyterHub).")
    subscopes: list[str] = Field(
        default_factory=list, description="Other custom scopes this one includes (holding it holds them too).")


class RoleSpec(_Section):
    """One `[[roles]]` entry (JupyterHub's `load_roles`): a custom role and who holds it.

    Config roles are authoritative: at start the api makes their scopes and members exactly these.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9\-_~.]{1,253}[a-z0-9]$", description="Role name.")
    description: str = Field("", description="What the role is for.")
    scopes: list[str] = Field(default_factory=list, description="Scopes the role grants (filters allowed).")
    users: list[str] = Field(default_factory=list, description="Users holding the role (created if missing).")
    groups: list[str] = Field(default_factory=list, description="Groups whose members hold it (created if missing).")
    services: list[str] = Field(default_factory=list, description="Configured services holding it.")


class ServiceSettings(BaseSettings):
    """Settings shared by every fleethub service, read once at the entry point and passed down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER, extra="forbid", case_sensitive=False
    )

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    nats_namespace: str = Field(
        "fh", pattern=r"^[a-z][a-z0-9]{0,15}$", description="Prefix of every subject, stream and bucket."
    )
    nats_replicas: int = Field(1, ge=1, le=5, description="Replicas of the hub's streams and buckets "
                               "(in a JetStream cluster, e.g. 3; 1 on a single server).")
    nats_nkey_file: Path | None = Field(
        None,
        description="File (0600) holding this service's NATS nkey seed (`fleethub nats-config` writes one per "
        "service; `fleethub up` passes each child its own); unset: connect without credentials (warned).",
    )
    nats_tls_ca_file: Path | None = Field(
        None, description="CA certificate the NATS server's certificate is checked against (`tls://` URLs)."
    )
    nats_tls_cert_file: Path | None = Field(
        None, description="Client certificate presented to NATS (mutual TLS), with nats_tls_key_file."
    )
    nats_tls_key_file: Path | None = Field(None, description="Key of nats_tls_cert_file.")
    database_url: Secret | None = Field(None, description="PostgreSQL URL (postgresql://… or postgresql+asyncpg://…).")
    public_url: str | None = Field(
        None, description="Public URL of the hub; default http://<proxy.host>:<proxy.port>."
    )
    base_url: BaseUrl = Field("/", description="URL prefix of the whole hub, e.g. /jhub/ (JupyterHub's base_url).")
    secret_key: Secret | None = Field(
        None,
        description="Key signing cookies and deriving server tokens; default: one generated by `fleethub migrate`.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text, or one JSON object each "
                                                "(time, level, service, replica, logger, message, request_id, …).")
    data_dir: Path = Field(Path(".fleethub"), description="Directory of the embedded servers and runtime files.")

    auth: AuthSettings = Field(default_factory=AuthSettings, description="[auth] section.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="[api] section.")
    spawner: SpawnerSettings = Field(default_factory=SpawnerSettings, description="[spawner] section.")
    proxy: ProxySettings = Field(default_factory=ProxySettings, description="[proxy] section.")
    culler: CullerSettings = Field(default_factory=CullerSettings, description="[culler] section.")
    pages: PageSettings = Field(default_factory=PageSettings, description="[pages] section.")
    ops: OpsSettings = Field(default_factory=OpsSettings, description="[ops.<service>] operations listeners.")
    services: list[HubService] = Field(default_factory=list, description="[[services]] entries.")
    webhooks: Webhooks = Field(default_factory=list, description="[[webhooks]] entries: events POSTed, signed.")
    roles: list[RoleSpec] = Field(default_factory=list, description="[[roles]] entries (JupyterHub's load_roles).")
    custom_scopes: dict[str, CustomScope] = Field(
        default_factory=dict, description="[custom_scopes] entries: scopes named custom:<name> that roles may grant."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_secrets(self) -> ServiceSettings:
        if self.auth.authenticator == "dummy":
            pw = self.auth.dummy_password
            if pw is None or len(pw.get_secret_value()) < 8:
                raise ValueError(
                    "auth.dummy_password (FLEETHUB_AUTH__DUMMY_PASSWORD) must be set, at least 8 characters, "
                    "when auth.authenticator is 'dummy'"
                )
        names = [svc.name for svc in self.services]
        if len(set(names)) != len(names):
            raise ValueError("services: two [[services]] entries have the same name")
        roles = [role.name for role in self.roles]
        if len(set(roles)) != len(roles):
            raise ValueError("roles: two [[roles]] entries have the same name")
        for scope in self.custom_scopes:
            if not re.fullmatch(r"custom:[a-z0-9][a-z0-9_\-\*:]+[a-z0-9_\*]", scope):
                raise ValueError(f"custom_scopes: {scope!r} must look like custom:<lowercase name>")
        for scope, spec in self.custom_scopes.items():
            undeclared = set(spec.subscopes) - set(self.custom_scopes)
            if undeclared:
                raise ValueError(f"custom_scopes: {scope!r} includes undeclared custom scopes {sorted(undeclared)} "
                                 "(subscopes must be declared in [custom_scopes] too)")
        for svc in self.services:
            problem = self.oauth_scopes_problem(svc)
            if problem:
                raise ValueError(f"services: {svc.name!r} {problem}")
        for role in self.roles:
            undeclared = {s.split("!", 1)[0] for s in role.scopes if s.startswith("custom:")} - set(self.custom_scopes)
            if undeclared:
                raise ValueError(f"roles: role {role.name!r} grants undeclared custom scopes {sorted(undeclared)}")
            if role.name in ("admin", "user", "server", "token"):
                raise ValueError(f"roles: {role.name!r} is a default role and cannot be redefined")
            unknown = set(role.services) - set(names)
            if unknown:
                raise ValueError(f"roles: role {role.name!r} names services that are not configured: {sorted(unknown)}")
        if self.proxy.ssl_cert is not None and self.public_url and not self.public_url.lower().startswith("https://"):
            raise ValueError("public_url (FLEETHUB_PUBLIC_URL) must be https:// when proxy.ssl_cert is set")
        if self.proxy.http_redirect_port is not None and not self.hub_public_url.startswith("https://"):
            raise ValueError("proxy.http_redirect_port redirects to https: set proxy.ssl_cert or an https:// "
                             "public_url")
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("secret_key (FLEETHUB_SECRET_KEY) must be at least 32 characters")
        return self

    @property
    def hub_public_url(self) -> str:
        """The public origin (and path) of the hub, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.proxy.host in ("0.0.0.0", "", "::") else self.proxy.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.proxy.ssl_cert is not None else "http"
        return f"{scheme}://{host}:{self.proxy.port}"

    @property
    def hub_api_url(self) -> str:
        """`JUPYTERHUB_API_URL` as seen from user servers."""
        return (self.spawner.hub_api_url or f"{self.hub_public_url}{self.base_url}hub/api").rstrip("/")

    def oauth_scopes_problem(self, svc: HubService) -> str | None:
        """What is wrong with the `oauth_client_allowed_scopes` or `oauth_roles` of `svc` (configured, or
        created at run time), or None."""
        unknown = set(svc.oauth_roles) - {role.name for role in self.roles}
        if unknown:
            return f"oauth_roles: no such role in [[roles]]: {sorted(unknown)}"
        for text in svc.oauth_client_allowed_scopes:
            problem = allowed_scope_problem(text, set(self.custom_scopes))
            if problem:
                return f"oauth_client_allowed_scopes: {problem}"
        return None

    def oauth_allowed_scopes(self, svc: HubService) -> list[str]:
        """What the OAuth client of `svc` may put in its tokens beyond the defaults: its
        `oauth_client_allowed_scopes` and the scopes of its `oauth_roles`."""
        out = list(svc.oauth_client_allowed_scopes)
        for role in self.roles:
            if role.name in svc.oauth_roles:
                out += [s for s in role.scopes if s not in out]
        return out

    @functools.cached_property
    def custom_subscopes(self) -> dict[str, tuple[str, ...]]:
        """`[custom_scopes]` subscopes, for scope expansion (`fleethub.shared.scopes.expand`)."""
        return {name: tuple(spec.subscopes) for name, spec in self.custom_scopes.items() if spec.subscopes}

    def require_database_url(self) -> str:
        """The database URL in SQLAlchemy asyncpg form; a ConfigError names the variable if unset."""
        if self.database_url is None:
            raise ConfigError("database_url (FLEETHUB_DATABASE_URL) is not set")
        url = self.database_url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        if not url.startswith("postgresql+asyncpg://"):
            raise ConfigError("database_url (FLEETHUB_DATABASE_URL) must be a postgresql:// URL")
        return url


class _DataSource(PydanticBaseSettingsSource):
    """Lowest-priority source: the values of the TOML file, or in a child process the parent's settings."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + NESTED_DELIMITER.join(p.upper() for p in parts)


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem, each naming the setting and its environment variable."""
    lines = []
    for problem in err.errors():
        loc = tuple(problem.get("loc", ()))
        msg = problem.get("msg", "invalid")
        if loc:
            dotted = ".".join(str(p) for p in loc)
            lines.append(f"{dotted} ({_env_name(loc)}): {msg}")
        else:
            lines.append(msg.removeprefix("Value error, "))
    return "invalid configuration: " + "; ".join(lines)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> ServiceSettings:
    """Build the settings from (lowest to highest) the TOML file, `FLEETHUB_*` variables and overrides.

    In a child process started with `child_env`, `SETTINGS_VAR` holds the parent's validated settings
    (its file and variables already applied): they take the place of the file and the variables.

    Args:
        config_file: a TOML file; its top-level keys and `[section]` tables match the model.
        **overrides: values that win over everything (used by the CLI and tests).

    Raises:
        ConfigError: the file cannot be read or a value is invalid; the message names the setting.
    """
    inherited = os.environ.get(SETTINGS_VAR)
    if inherited is not None:
        if config_file is not None:
            raise ConfigError(f"{SETTINGS_VAR} (settings handed down by a parent process) is set: "
                              f"it replaces the config file {config_file}")
        return _build(_parse_inherited(inherited), overrides, with_env=False, origin=f"{SETTINGS_VAR}: ")
    data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return _build(_with_crypt_key_var(data), overrides, with_env=True)


def _with_crypt_key_var(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with JupyterHub's `JUPYTERHUB_CRYPT_KEY` (`;`-separated keys) as `auth.crypt_key` when the
    file sets none; `FLEETHUB_AUTH__CRYPT_KEY` and overrides still win over both."""
    keys = [key.strip() for key in os.environ.get(CRYPT_KEY_VAR, "").split(";") if key.strip()]
    auth = data.get("auth", {})
    if not keys or not isinstance(auth, dict) or "crypt_key" in auth:
        return data
    return {**data, "auth": {**auth, "crypt_key": keys}}


def _parse_inherited(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{SETTINGS_VAR} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{SETTINGS_VAR} must hold a JSON object")
    return data


def _build(data: dict[str, Any], overrides: dict[str, Any], *, with_env: bool, origin: str = "") -> ServiceSettings:
    """The settings from `data` (a TOML file's or a parent's values), under `FLEETHUB_*` variables if
    `with_env`, under `overrides`."""

    class _Layered(ServiceSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            base = _DataSource(settings_cls, data)
            return (init_settings, env_settings, base) if with_env else (init_settings, base)

    try:
        # the instance keeps `model_fields_set`, so callers can tell configured values from defaults
        return _Layered(**overrides)
    except ValidationError as exc:
        raise ConfigError(origin + describe_validation_error(exc)) from None


def settings_json(settings: ServiceSettings) -> str:
    """The settings as JSON with their secrets revealed, for `SETTINGS_VAR`; a child rebuilds them with
    `load_settings`.

    Settings that are None are left out, so they stay out of the child's `model_fields_set` (`fleethub
    token` run by a parent tells an unset database URL that way); every setting that may be None
    defaults to None, so the child's values equal the parent's. Every other value is written, even a
    default: one changed in place or by `model_copy` arrives too.
    """
    return settings.model_dump_json(exclude_none=True, context={_REVEAL_SECRETS: True})


def fault_plan_text() -> str:
    """This process's `FLEETHUB_FAULT` (crash points a test switched on), "" when unset."""
    return os.environ.get(FAULT_VAR, "")


def kept_environment(names: list[str]) -> dict[str, str]:
    """The variables `names` (`spawner.env_keep`) that are set in this process's environment: all that a
    user server or managed service inherits from its spawner worker."""
    return {name: os.environ[name] for name in names if name in os.environ}


# Linux refuses to exec with one environment string longer than this (MAX_ARG_STRLEN, 32 pages).
_MAX_ENV_STRING = 32 * 4096


def child_env(settings: ServiceSettings) -> dict[str, str]:
    """The environment of a child service process: ours without `FLEETHUB_*` (but `FAULT_VAR`, so a test's
    crash points reach a supervisor's children), plus `SETTINGS_VAR`.

    The settings travel in one environment variable rather than in a file: a file of mode 0600 in the
    data dir is readable by exactly who can read `/proc/<pid>/environ` (the same Unix user, and root),
    so it would protect nothing more, while it would put secrets given only by environment (compose's
    FLEETHUB_DATABASE_URL) on disk and would have to outlive every restart of every child (the proxy
    supervisor reuses one environment for its workers' restarts). What keeps the settings from user
    servers and managed services is that their environment holds only the allow-listed variables of
    `spawner.env_keep` (`kept_environment`), never a `FLEETHUB_*` one.

    Raises:
        ConfigError: the settings are too large for one environment variable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k == FAULT_VAR}
    text = settings_json(settings)
    if len(SETTINGS_VAR) + len(text.encode()) + 2 > _MAX_ENV_STRING:
        raise ConfigError(f"the settings are too large to hand to a child process in {SETTINGS_VAR} "
                          f"({len(text.encode())} bytes; at most {_MAX_ENV_STRING - len(SETTINGS_VAR) - 2})")
    env[SETTINGS_VAR] = text
    return env
