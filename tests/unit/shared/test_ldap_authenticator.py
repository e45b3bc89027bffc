"""The ldap authenticator without a directory: its settings checked at construction, what it refuses
before any connection, and how its group DNs stay out of the hub-wide (group name) rules."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fleethub.shared.authenticators import AuthUser, LoginRefused, decide, load_authenticator
from fleethub.shared.authenticators.ldap import LdapAuthenticator
from fleethub.shared.authenticators.rules import has_allow_rule
from fleethub.shared.errors import ConfigError
from fleethub.shared.net import free_port
from fleethub.shared.settings import load_settings

GROUP = "cn=scientists,ou=groups,dc=example,dc=org"


def _ldap(**ldap: Any) -> LdapAuthenticator:
    auth = ldap.pop("auth", {})
    section = {"server_address": "127.0.0.1", "bind_dn_template": ["uid={username},dc=example,dc=org"], **ldap}
    authenticator = load_authenticator(load_settings(None, auth={"authenticator": "ldap", "ldap": section, **auth}))
    assert isinstance(authenticator, LdapAuthenticator)
    return authenticator


@pytest.mark.parametrize(("ldap", "message"), [
    ({"server_address": ""}, "server_address .* must be set"),
    ({"server_address": "ldaps://ldap.example.org"}, "must be a host name"),
    ({"bind_dn_template": []}, "set bind_dn_template, or lookup_dn"),
    ({"bind_dn_template": [], "lookup_dn": True}, "user_search_base must be set"),
    ({"bind_dn_template": ["uid=alice,dc=example,dc=org"]}, r"must contain \{username\}"),
    ({"bind_dn_template": ["uid={username},{base}"]}, "not a valid template"),
    ({"lookup_dn_search_filter": "(uid={user})"}, r"must contain \{login\}"),
    ({"lookup_dn_search_filter": "({login_attr}={login}{0})"}, "not a valid template"),
    ({"group_search_filter": "(member={dn})"}, "group_search_filter: .* not a valid template"),
])
def test_bad_settings_are_refused_at_start(ldap: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _ldap(**ldap)


def test_insecure_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        _ldap(tls_strategy="insecure")
    assert "unencrypted" in caplog.text
    caplog.clear()
    _ldap()
    assert "unencrypted" not in caplog.text


async def test_refused_before_any_connection() -> None:
    # nothing listens there: a connection attempt would end in LoginRefused (503), not None
    ldap = _ldap(server_port=free_port(), tls_strategy="insecure")
    session: Any = None
    for name, password in [("alice", ""), ("", "pw"), ("a b", "pw"), ("a/b", "pw"), ("a\x00b", "pw"), ("a\\00b", "pw")]:
        assert await ldap.authenticate(session, name, password) is None, (name, password)


def test_group_dns_stay_out_of_the_name_rules() -> None:
    ldap = _ldap(allowed_groups=[GROUP], admin_groups=[GROUP])
    assert ldap.allowed_groups == [] and ldap.admin_groups == [] and ldap.grants_access and has_allow_rule(ldap)
    # a user the directory found in an allowed group is let in by the authenticator's own rule
    assert decide(ldap, AuthUser("alice", groups=["scientists"], allowed=True), exists=False).allowed
    assert not decide(ldap, AuthUser("alice", groups=["scientists"]), exists=False).allowed
    # the hub-wide lists name groups (the cn the authenticator reports)
    named = _ldap(auth={"allowed_groups": ["scientists"], "admin_groups": ["admins"]})
    assert named.allowed_groups == ["scientists"] and not named.grants_access
    verdict = decide(named, AuthUser("alice", groups=["scientists"]), exists=False)
    assert verdict.allowed and verdict.admin is False
    assert decide(named, AuthUser("carol", groups=["admins"]), exists=False).admin is True
    assert not has_allow_rule(_ldap())


async def test_a_missing_ca_file_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    ldap = _ldap(server_port=free_port(), tls_ca_file="/nonexistent/ca.pem")
    session: Any = None
    with pytest.raises(LoginRefused) as refused:
        await ldap.authenticate(session, "alice", "alice-pw")
    assert refused.value.status == 503 and "try again later" in refused.value.message
    assert "/nonexistent/ca.pem is not a readable file" in caplog.text
