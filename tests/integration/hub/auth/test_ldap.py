"""The `ldap` authenticator through the hub's login form, against a real OpenLDAP slapd
(`tests.support.slapd`): bind DN templates, DN lookup, groups, admins, injection, TLS, outages, auth_state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import ldap3
import pytest
from sqlalchemy import select

from fleethub.shared.crypt import AuthStateCrypt, is_sealed
from fleethub.shared.db.models import Group, GroupMember, User
from fleethub.shared.net import free_port
from tests.support.certs import make_certs
from tests.support.hub import XSRF_FIELD, Hub, hub_settings, running_hub
from tests.support.slapd import GROUPS, PASSWORDS, PEOPLE, READER, READER_PASSWORD, Slapd, running_slapd

pytestmark = pytest.mark.integration

TEMPLATE = f"uid={{username}},{PEOPLE}"
LOOKUP = {"lookup_dn": True, "user_search_base": PEOPLE, "lookup_dn_search_user": READER,
          "lookup_dn_search_password": READER_PASSWORD}
INVALID = "Invalid username or password"
UNREACHABLE = "cannot reach the LDAP directory"
INJECTIONS = ["al*", "*", "alice)(uid=*", "(|(uid=*))", "*)(uid=*", "alice*", "*lice", "alice)(|(uid=*"]


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    with running_slapd(tls=True) as server:
        yield server


@pytest.fixture
def make_hub(tmp_path: Path, nats_url: str, database_url: str,
             nats_namespace: str) -> Any:
    """`make_hub(ldap={...}, **auth)`: a hub whose authenticator is `ldap` (login throttling off: these tests
    fail many logins on purpose)."""

    @contextlib.asynccontextmanager
    async def start(ldap: dict[str, Any], **auth: Any) -> AsyncIterator[Hub]:
        auth = {"authenticator": "ldap", "login_throttle": False, "ldap": ldap, **auth}
        async with running_hub(hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth=auth)) as hub:
            yield hub

    return start


def plain(slapd: Slapd, **ldap: Any) -> dict[str, Any]:
    """`[auth.ldap]` for slapd's ldap:// port without TLS."""
    return {"server_address": "127.0.0.1", "server_port": slapd.port, "tls_strategy": "insecure", **ldap}


async def login(hub: Hub, client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    """POST the login form with exactly this user name and password (hub.login fills in empty passwords)."""
    page = await client.get("/hub/login")
    m = XSRF_FIELD.search(page.text)
    assert m, page.text
    return await client.post("/hub/login", data={"username": user, "password": password, "_xsrf": m.group(1)})


async def logs_in(hub: Hub, user: str, password: str) -> str:
    """Log in with a fresh browser; the hub user name the login got (it must reach /hub/home)."""
    async with hub.new_client() as c:
        r = await login(hub, c, user, password)
        assert r.status_code == 302 and r.headers["location"] == "/hub/home", (user, r.status_code, r.text[-500:])
        assert (await c.get("/hub/home")).status_code == 200
        me = await c.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(c)})
        name: str = me.json()["name"]
        return name


async def refused(hub: Hub, user: str, password: str, status: int = 403, message: str = INVALID) -> None:
    async with hub.new_client() as c:
        r = await login(hub, c, user, password)
        assert r.status_code == status and message in r.text, (user, r.status_code, r.text.split("<h1>")[-1][:300])
        assert "jupyterhub-hub-login" not in r.cookies


async def user_row(hub: Hub, name: str) -> User:
    async with hub.sessions() as s:
        return (await s.execute(select(User).where(User.name == name))).scalar_one()


async def test_bind_dn_template_tries_each_in_order(slapd: Slapd, make_hub: Any) -> None:
    templates = [f"uid={{username}},ou=nobody,{PEOPLE}", TEMPLATE]
    async with make_hub(plain(slapd, bind_dn_template=templates), allow_all=True) as hub:
        assert await logs_in(hub, "alice", PASSWORDS["alice"]) == "alice"
        assert await logs_in(hub, "Bob", PASSWORDS["bob"]) == "bob"
        # the name is put into the DN escaped (RFC 4514): ',' would otherwise start another RDN
        assert await logs_in(hub, "o(k),*", PASSWORDS["o(k),*"]) == "o(k),*"
        await refused(hub, "alice", PASSWORDS["bob"])
        await refused(hub, "nobody", "nobody-pw")
        await refused(hub, "alice,ou=people", PASSWORDS["alice"])


async def test_lookup_dn_with_a_search_account(slapd: Slapd, make_hub: Any) -> None:
    async with make_hub(plain(slapd, **LOOKUP), allow_all=True) as hub:
        assert await logs_in(hub, "carol", PASSWORDS["carol"]) == "carol"
        # special characters of the name match literally (RFC 4515-escaped in the filter)
        assert await logs_in(hub, "o(k),*", PASSWORDS["o(k),*"]) == "o(k),*"
        await refused(hub, "carol", PASSWORDS["alice"])
        await refused(hub, "nobody", "nobody-pw")
    # log in by mail address; the hub name is the entry's uid
    by_mail = plain(slapd, **LOOKUP, user_attribute="mail", lookup_dn_user_dn_attribute="uid")
    async with make_hub(by_mail, allow_all=True) as hub:
        assert await logs_in(hub, "alice@example.org", PASSWORDS["alice"]) == "alice"
        await refused(hub, "alice", PASSWORDS["alice"])
    # without the search account the directory shows anonymous clients nothing: nobody is found
    anonymous = plain(slapd, lookup_dn=True, user_search_base=PEOPLE)
    async with make_hub(anonymous, allow_all=True) as hub:
        await refused(hub, "alice", PASSWORDS["alice"])


async def test_empty_password_is_refused_without_a_bind(slapd: Slapd, make_hub: Any) -> None:
    # the directory takes a DN with an empty password as an (unauthenticated) bind that succeeds
    whoami = await asyncio.create_subprocess_exec(
        "ldapwhoami", "-x", "-H", f"ldap://127.0.0.1:{slapd.port}", "-D", slapd.dn("alice"), "-w", "",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(whoami.communicate(), 10)
    assert whoami.returncode == 0 and out.strip() == b"anonymous", err
    for ldap in (plain(slapd, bind_dn_template=[TEMPLATE]), plain(slapd, **LOOKUP)):
        async with make_hub(ldap, allow_all=True) as hub:
            await refused(hub, "alice", "")
            await refused(hub, "bob", "")
            async with hub.sessions() as s:
                assert (await s.execute(select(User.id).where(User.name == "bob"))).first() is None


def _search(slapd: Slapd, search_filter: str) -> list[str]:
    """The DNs of the people `search_filter` finds, searching as the search account."""
    conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=slapd.port), READER, READER_PASSWORD, auto_bind=True)
    try:
        conn.search(PEOPLE, search_filter, attributes=["uid"])
        return [e.entry_dn for e in conn.entries]
    finally:
        conn.unbind()


async def test_injection_never_matches_someone_else(slapd: Slapd, make_hub: Any) -> None:
    # the premise: unescaped, '(uid=al*)' finds exactly alice, so a login as "al*" with alice's password
    # would bind as alice
    assert await asyncio.to_thread(_search, slapd, "(uid=al*)") == [slapd.dn("alice")]
    for ldap in (plain(slapd, **LOOKUP), plain(slapd, bind_dn_template=[TEMPLATE])):
        async with make_hub(ldap, allow_all=True) as hub:
            for name in INJECTIONS:
                await refused(hub, name, PASSWORDS["alice"])
            await refused(hub, "a\\00b", PASSWORDS["alice"], 400, "invalid username")  # not a hub name at all
            async with hub.sessions() as s:
                names = set((await s.execute(select(User.name))).scalars())
            assert not names & {n.lower() for n in INJECTIONS}
            assert await logs_in(hub, "alice", PASSWORDS["alice"]) == "alice"  # the right name still works


async def test_allowed_groups_of_both_kinds(slapd: Slapd, make_hub: Any) -> None:
    groups = [f"cn=scientists,{GROUPS}", f"cn=staff,{GROUPS}"]  # groupOfNames (member), posixGroup (memberUid)
    for ldap in (plain(slapd, bind_dn_template=[TEMPLATE], allowed_groups=groups),
                 plain(slapd, **LOOKUP, allowed_groups=groups)):
        async with make_hub(ldap, manage_groups=True) as hub:
            assert await logs_in(hub, "alice", PASSWORDS["alice"]) == "alice"
            assert await logs_in(hub, "Bob", PASSWORDS["bob"]) == "bob"  # memberUid is the directory's 'bob'
            await refused(hub, "dave", PASSWORDS["dave"])
            await refused(hub, "carol", PASSWORDS["carol"])
            async with hub.sessions() as s:
                rows = (await s.execute(select(User.name, Group.name).join(GroupMember, GroupMember.user_id == User.id)
                                        .join(Group, Group.id == GroupMember.group_id))).all()
            assert sorted(rows) == [("alice", "scientists"), ("bob", "staff")]


async def test_admin_groups_make_admins(slapd: Slapd, make_hub: Any) -> None:
    ldap = plain(slapd, bind_dn_template=[TEMPLATE], admin_groups=[f"cn=admins,{GROUPS}"])
    async with make_hub(ldap, allow_all=True) as hub:
        await hub.token_for("dave", admin=True)  # an admin before: the directory says otherwise now
        assert await logs_in(hub, "carol", PASSWORDS["carol"]) == "carol"
        assert await logs_in(hub, "alice", PASSWORDS["alice"]) == "alice"
        assert await logs_in(hub, "dave", PASSWORDS["dave"]) == "dave"
        assert [(await user_row(hub, n)).admin for n in ("carol", "alice", "dave")] == [True, False, False]
    # an admin group is enough to log in, even with no allow rule for everyone
    async with make_hub(ldap) as hub:
        assert await logs_in(hub, "carol", PASSWORDS["carol"]) == "carol"
        await refused(hub, "alice", PASSWORDS["alice"])


async def test_starttls_and_ldaps(slapd: Slapd, make_hub: Any, tmp_path: Path) -> None:
    assert slapd.certs is not None and slapd.ldaps_port is not None
    ca = str(slapd.certs.ca_file)
    starttls = {"server_address": "127.0.0.1", "server_port": slapd.port, "tls_strategy": "before_bind",
                "tls_ca_file": ca, "bind_dn_template": [TEMPLATE]}
    ldaps = {**starttls, "server_port": slapd.ldaps_port, "tls_strategy": "on_connect"}
    other_ca = str(make_certs(tmp_path / "other").ca_file)  # a CA that did not sign the server's certificate
    for ldap in (starttls, ldaps):
        async with make_hub(ldap, allow_all=True) as hub:
            assert await logs_in(hub, "alice", PASSWORDS["alice"]) == "alice"
            await refused(hub, "alice", PASSWORDS["bob"])
        for untrusted in ({**ldap, "tls_ca_file": other_ca}, {**ldap, "tls_ca_file": None}):
            async with make_hub(untrusted, allow_all=True) as hub:
                await refused(hub, "alice", PASSWORDS["alice"], 503, UNREACHABLE)
    # LDAPS on the StartTLS port (a plain server) fails cleanly too
    async with make_hub({**ldaps, "server_port": slapd.port}, allow_all=True) as hub:
        await refused(hub, "alice", PASSWORDS["alice"], 503, UNREACHABLE)


async def test_server_down_or_silent_is_a_clear_error(slapd: Slapd, make_hub: Any) -> None:
    down = plain(slapd, server_port=free_port(), bind_dn_template=[TEMPLATE])
    async with make_hub(down, allow_all=True) as hub:
        await refused(hub, "alice", PASSWORDS["alice"], 503, UNREACHABLE)
    # a server that takes the connection and never answers: the receive timeout ends the attempt
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        mute = plain(slapd, server_port=port, bind_dn_template=[TEMPLATE], http_timeout=0.5)
        async with make_hub(mute, allow_all=True) as hub:
            await refused(hub, "alice", PASSWORDS["alice"], 503, UNREACHABLE)
    # a wrong search-account password is the hub's fault, not the user's
    broken = plain(slapd, **{**LOOKUP, "lookup_dn_search_password": "not-it"})
    async with make_hub(broken, allow_all=True) as hub:
        await refused(hub, "alice", PASSWORDS["alice"], 503, "cannot check passwords")


async def test_auth_state_attributes_are_stored_encrypted(slapd: Slapd, make_hub: Any) -> None:
    key = os.urandom(32).hex()
    ldap = plain(slapd, **LOOKUP, auth_state_attributes=["mail", "cn", "telephoneNumber"])
    async with make_hub(ldap, allow_all=True, enable_auth_state=True, crypt_key=[key]) as hub:
        assert await logs_in(hub, "alice", PASSWORDS["alice"]) == "alice"
        stored = (await user_row(hub, "alice")).auth_state
        assert is_sealed(stored) and "alice@example.org" not in str(stored)
        opened = AuthStateCrypt([bytes.fromhex(key)]).open(stored, "alice")
        # an attribute the entry does not have is left out
        assert opened == {"user_attributes": {"mail": ["alice@example.org"], "cn": ["Alice Example"]}}
