"""The `ldap` authenticator: a form login checked by binding to an LDAP directory with the user's password
(`[auth.ldap]`, ldapauthenticator's option names), with ldap3.

The bind DN comes from `bind_dn_template` (the name filled in, RFC 4514-escaped) or from a search
(`lookup_dn`: the name filled into `lookup_dn_search_filter`, RFC 4515-escaped; exactly one entry must
match). Group DNs (`allowed_groups`, `admin_groups`) are checked here, each with a base search of the
group, so the hub-wide rules, which compare group names, never see them. ldap3 is synchronous: every login
runs in a worker thread, each connect and each answer bounded by `http_timeout`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPCommunicationError, LDAPException, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticator_settings import LdapSettings
from fleethub.shared.authenticators.base import Authenticator, AuthUser, LoginRefused
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)
UNREACHABLE = "The login service cannot reach the LDAP directory; please try again later."
BROKEN = "The login service cannot check passwords against the LDAP directory right now; please try again later."


class _VerifyingTls(ldap3.Tls):
    """ldap3's TLS, verified by OpenSSL with a standard client context (chain and host name). ldap3's own
    host name check calls `ssl.match_hostname`, deprecated since Python 3.7 and gone in 3.12."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._host = host

    def wrap_socket(self, connection: ldap3.Connection, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(connection.socket, server_side=False,
                                                      do_handshake_on_connect=do_handshake, server_hostname=self._host)


@dataclass(frozen=True)
class _Bound:
    """A connection bound as the user, and who the user is in the directory."""

    conn: ldap3.Connection
    dn: str
    name: str
    """The user's name (not yet normalized): as typed, or `lookup_dn_user_dn_attribute`'s value."""


def _check_template(setting: str, template: str, keys: tuple[str, ...], required: str | None) -> None:
    if required is not None and "{" + required + "}" not in template:
        raise ConfigError(f"auth.ldap.{setting}: {template!r} must contain {{{required}}}")
    try:
        template.format(**dict.fromkeys(keys, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"auth.ldap.{setting}: {template!r} is not a valid template "
                          f"(placeholders: {', '.join('{' + k + '}' for k in keys)}): {exc}") from None


def _check(c: LdapSettings) -> None:
    if not c.server_address:
        raise ConfigError("auth.ldap.server_address (FLEETHUB_AUTH__LDAP__SERVER_ADDRESS) must be set")
    if "://" in c.server_address or "/" in c.server_address:
        raise ConfigError(f"auth.ldap.server_address: {c.server_address!r} must be a host name or address "
                          "(tls_strategy chooses LDAPS or StartTLS)")
    if not c.lookup_dn and not c.bind_dn_template:
        raise ConfigError("auth.ldap: set bind_dn_template, or lookup_dn with user_search_base")
    if c.lookup_dn and not c.user_search_base:
        raise ConfigError("auth.ldap.user_search_base must be set with lookup_dn")
    for template in c.bind_dn_template:
        _check_template("bind_dn_template", template, ("username",), "username")
    _check_template("lookup_dn_search_filter", c.lookup_dn_search_filter, ("login", "login_attr"), "login")
    _check_template("group_search_filter", c.group_search_filter, ("userdn", "uid"), None)


def _json_values(values: list[bytes]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(v.decode())
        except UnicodeDecodeError:  # binary attributes (certificates, photos) as base64
            out.append(base64.b64encode(v).decode())
    return out


def _entries(conn: ldap3.Connection) -> list[dict[str, Any]]:
    return [r for r in conn.response or () if r.get("type") == "searchResEntry"]


def _values(entry: dict[str, Any], attribute: str) -> list[str]:
    """The values of `attribute` (any case) in a search result entry, as text."""
    wanted = attribute.lower()
    return next((_json_values(v) for k, v in entry["raw_attributes"].items() if k.lower() == wanted), [])


class LdapAuthenticator(Authenticator):
    """Users of an LDAP directory, by their password. Membership of `[auth.ldap]` allowed_groups is an
    allow rule of its own (`AuthUser.allowed`); admin_groups make admins (and non-members not)."""

    name = "ldap"

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        self.config = settings.auth.ldap
        _check(self.config)
        if self.config.tls_strategy == "insecure":
            log.warning("auth.ldap.tls_strategy is 'insecure': passwords go to %s unencrypted",
                        self.config.server_address)
        self._context: ssl.SSLContext | None = None  # made at the first login (reads tls_ca_file)

    @property
    def grants_access(self) -> bool:
        return bool(self.config.allowed_groups)

    # allowed_groups/admin_groups (the rules' group *names*) stay the base's, `[auth]`'s alone: `[auth.ldap]`'s
    # are group DNs, checked against the directory at login

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | None:
        if not password:  # an empty password would make an unauthenticated bind, which "succeeds"
            log.info("LDAP login of %r refused: empty password", username[:64])
            return None
        if self.normalize_name(username) is None:
            return None
        return await asyncio.to_thread(self._login, username, password)

    def _login(self, username: str, password: str) -> AuthUser | None:
        c = self.config
        try:
            bound = self._bind_user(username, password)
            if bound is None:
                return None
            try:
                return self._user(bound)
            finally:
                bound.conn.unbind()
        except (LDAPCommunicationError, LDAPStartTLSError, LDAPBindError, OSError) as exc:
            # LDAPBindError: with raise_exceptions off, only a connection lost during a bind raises it
            log.warning("LDAP server %s:%s cannot be reached (%s): %s", c.server_address, self._port,
                        type(exc).__name__, exc)
            raise LoginRefused(UNREACHABLE, 503) from None
        except LDAPException as exc:
            log.error("LDAP login of %r failed (%s): %s", username[:64], type(exc).__name__, exc)
            raise LoginRefused(BROKEN, 503) from None

    @property
    def _port(self) -> int:
        return self.config.server_port or (636 if self.config.tls_strategy == "on_connect" else 389)

    def _tls(self) -> _VerifyingTls | None:
        c = self.config
        if c.tls_strategy == "insecure":
            return None
        if self._context is None:
            if c.tls_ca_file is not None and not os.path.isfile(c.tls_ca_file):
                log.error("auth.ldap.tls_ca_file %s is not a readable file", c.tls_ca_file)
                raise LoginRefused(BROKEN, 503)
            self._context = ssl.create_default_context(cafile=c.tls_ca_file)
        return _VerifyingTls(self._context, c.server_address)

    def _connect(self) -> ldap3.Connection:
        """An open (not yet bound) connection, TLS started as `tls_strategy` says."""
        c = self.config
        server = ldap3.Server(c.server_address, port=self._port, use_ssl=c.tls_strategy == "on_connect",
                              tls=self._tls(), get_info=ldap3.NONE, connect_timeout=c.http_timeout)
        # ldap3 sets SO_RCVTIMEO from receive_timeout with struct.pack('LL'): whole seconds only
        conn = ldap3.Connection(server, receive_timeout=math.ceil(c.http_timeout), read_only=True,
                                auto_referrals=False, raise_exceptions=False)
        try:
            conn.open()
            # each request is one small write awaiting its answer: without this, Nagle's algorithm holds the
            # first one after a TLS handshake for the server's delayed ACK (about 40 ms a login)
            conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if c.tls_strategy == "before_bind" and not conn.start_tls():  # never bind without it
                raise LDAPStartTLSError("StartTLS was not started")
        except BaseException:
            conn.unbind()
            raise
        return conn

    def _bind_user(self, username: str, password: str) -> _Bound | None:
        """A connection bound as the user; None if no candidate DN takes the password."""
        conn = self._connect()
        bound = None
        try:
            bound = self._bind_as_user(conn, username, password)
            return bound
        finally:
            if bound is None:
                conn.unbind()

    def _bind_as_user(self, conn: ldap3.Connection, username: str, password: str) -> _Bound | None:
        c = self.config
        name = username
        dns = [t.format(username=escape_rdn(username)) for t in c.bind_dn_template]
        if c.lookup_dn:
            found = self._lookup(conn, username)
            if found is None:
                return None
            entry_dn, name = found
            dns = [t.format(username=escape_rdn(name)) for t in c.bind_dn_template] or [entry_dn]
        for dn in dns:
            if conn.rebind(dn, password):
                return _Bound(conn, dn, name)
        log.info("LDAP login of %r refused: no bind with that password (%s)", username[:64],
                 conn.result.get("description") if conn.result else "no answer")
        return None

    def _lookup(self, conn: ldap3.Connection, username: str) -> tuple[str, str] | None:
        """Find the user's entry as the search account (or anonymously): its DN and the user's name."""
        c = self.config
        secret = c.lookup_dn_search_password
        if c.lookup_dn_search_user and not conn.rebind(c.lookup_dn_search_user,
                                                       secret.get_secret_value() if secret else ""):
            log.error("auth.ldap.lookup_dn_search_user %s cannot bind: %s", c.lookup_dn_search_user,
                      conn.result.get("description") if conn.result else "no answer")
            raise LoginRefused(BROKEN, 503)
        search_filter = c.lookup_dn_search_filter.format(login_attr=c.user_attribute,
                                                         login=escape_filter_chars(username))
        attribute = c.lookup_dn_user_dn_attribute
        conn.search(c.user_search_base, search_filter, ldap3.SUBTREE, attributes=[attribute] if attribute else [],
                    size_limit=2)
        entries = _entries(conn)
        if len(entries) != 1:
            log.log(logging.WARNING if entries else logging.INFO,
                    "LDAP login of %r refused: %d entries under %s match %s (exactly one must)", username[:64],
                    len(entries), c.user_search_base, search_filter)
            return None
        dn = str(entries[0]["dn"])
        if not attribute:
            return dn, username
        values = _values(entries[0], attribute)
        if not values:
            log.warning("LDAP login of %r refused: %s has no %s", username[:64], dn, attribute)
            return None
        return dn, values[0]

    def _user(self, bound: _Bound) -> AuthUser | None:
        """The user as the hub takes them: groups, admin flag, auth_state attributes."""
        c = self.config
        wanted = list(dict.fromkeys([c.user_attribute, *c.auth_state_attributes]))
        attributes: dict[str, list[str]] = {}
        if c.allowed_groups or c.admin_groups or c.auth_state_attributes:
            bound.conn.search(bound.dn, "(objectClass=*)", ldap3.BASE, attributes=wanted)
            found = _entries(bound.conn)
            attributes = {a: _values(found[0], a) for a in wanted} if found else {}
        login = (attributes.get(c.user_attribute) or [bound.name])[0]  # as the directory spells it
        groups = self._groups(bound, login)
        allowed = bool(set(groups) & set(c.allowed_groups))
        if c.allowed_groups and not allowed:
            log.info("LDAP user %s is in none of auth.ldap.allowed_groups", bound.dn)
        state = {"user_attributes": {a: attributes[a] for a in c.auth_state_attributes if attributes.get(a)}}
        known = bool(c.allowed_groups or c.admin_groups)
        return AuthUser(
            bound.name,
            admin=bool(set(groups) & set(c.admin_groups)) if c.admin_groups else None,
            groups=list(groups.values()) if known else None,
            auth_state=state if c.auth_state_attributes else None,
            allowed=True if allowed else None,
        )

    def _groups(self, bound: _Bound, login: str) -> dict[str, str]:
        """The configured group DNs the user is in, each with its name (cn)."""
        c = self.config
        search_filter = c.group_search_filter.format(userdn=escape_filter_chars(bound.dn),
                                                     uid=escape_filter_chars(login))
        out: dict[str, str] = {}
        for group in dict.fromkeys([*c.allowed_groups, *c.admin_groups]):
            bound.conn.search(group, search_filter, ldap3.BASE, attributes=["cn"])
            found = _entries(bound.conn)
            if found:
                cn = _json_values(found[0]["raw_attributes"].get("cn", []))
                out[group] = cn[0] if cn else str(parse_dn(group)[0][1])
        return out
