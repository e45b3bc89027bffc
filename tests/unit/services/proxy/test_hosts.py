"""The Host values a node accepts, Connection naming end-to-end fields, and the redirect port's answer."""

from __future__ import annotations

import pytest

from fleethub.services.proxy.headers import request_head, response_head
from fleethub.services.proxy.hosts import allowed_hosts, url_hosts
from fleethub.services.proxy.tls import redirect_response
from fleethub.shared.settings import load_settings


def test_url_hosts_default_port_and_case() -> None:
    assert url_hosts("https://Hub.Example.org/") == {"hub.example.org", "hub.example.org:443"}
    assert url_hosts("http://hub.example.org:8080/x") == {"hub.example.org:8080"}
    assert url_hosts("http://[::1]:8000") == {"[::1]:8000"}
    assert url_hosts("not a url") == set()


def test_without_public_url_the_bound_address_and_loopback_names() -> None:
    hosts = allowed_hosts(load_settings(proxy={"host": "127.0.0.1"}), "127.0.0.1", 8123, tls=False)
    for ok in (b"127.0.0.1:8123", b"localhost:8123", b"LocalHost:8123", b"[::1]:8123"):
        assert hosts.allows(ok), ok
    for bad in (b"127.0.0.1", b"127.0.0.1:8124", b"evil.example", b"evil.example:8123", b"localhost.:8123", b"",
                b"127.0.0.1:8123 ", b"127.0.0.1:8123\x00"):
        assert not hosts.allows(bad), bad
    assert not hosts.local  # no per-connection address for a node bound to one address


def test_a_node_on_every_interface_also_takes_the_address_dialled() -> None:
    hosts = allowed_hosts(load_settings(proxy={"host": "0.0.0.0"}), "0.0.0.0", 80, tls=False)
    local = hosts.local_name(("10.0.0.5", 80))
    assert local == b"10.0.0.5:80"
    assert hosts.allows(b"10.0.0.5:80", local) and hosts.allows(b"localhost", local)
    assert not hosts.allows(b"10.0.0.6:80", local) and not hosts.allows(b"evil.example", local)
    assert hosts.local_name(("::1", 80)) == b"[::1]:80"


def test_with_public_url_its_host_the_api_url_host_and_extras_only() -> None:
    settings = load_settings(public_url="https://hub.example.org", spawner={"hub_api_url": "http://proxy:8000/hub/api"},
                             proxy={"allowed_hosts": ["Alias.Example:8443"]})
    hosts = allowed_hosts(settings, "0.0.0.0", 8000, tls=False)
    for ok in (b"hub.example.org", b"hub.example.org:443", b"HUB.EXAMPLE.ORG", b"proxy:8000", b"alias.example:8443"):
        assert hosts.allows(ok), ok
    for bad in (b"127.0.0.1:8000", b"localhost:8000", b"hub.example.org:80", b"proxy", b"alias.example"):
        assert not hosts.allows(bad), bad
    assert not hosts.local


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "x@y", "h\u00e9.example"])
def test_allowed_hosts_must_be_host_and_port(bad: str) -> None:
    from fleethub.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_settings(proxy={"allowed_hosts": [bad]})


def test_connection_can_not_name_end_to_end_fields_hop_by_hop() -> None:
    client = [(b"Host", b"hub.example"), (b"Connection", b"Host, content-length, Cookie, AUTHORIZATION, X-Hop"),
              (b"Cookie", b"a=b"), (b"Authorization", b"token t"), (b"Content-Length", b"3"), (b"X-Hop", b"1")]
    head = request_head(b"POST", b"/x", client, client_ip="1.2.3.4", port=1, host=b"hub.example", chunked=False,
                        upgrade=None)
    for line in (b"Host: hub.example", b"Cookie: a=b", b"Authorization: token t", b"Content-Length: 3"):
        assert line + b"\r\n" in head, line
    assert b"X-Hop" not in head and b"Connection:" not in head
    upstream = [(b"Connection", b"content-length, set-cookie"), (b"Content-Length", b"2"), (b"Set-Cookie", b"a=1")]
    out = response_head(200, b"OK", upstream, chunked=False, close=False)
    assert b"Content-Length: 2\r\n" in out and b"Set-Cookie: a=1\r\n" in out


def test_request_head_scheme_of_the_connection() -> None:
    head = request_head(b"GET", b"/", [(b"X-Forwarded-Proto", b"http")], client_ip="1.2.3.4", port=443,
                        host=b"h", chunked=False, upgrade=None, proto=b"https")
    assert b"X-Forwarded-Proto: https\r\n" in head and b"X-Forwarded-Proto: http\r\n" not in head


def test_redirect_response() -> None:
    origin = b"https://hub.example.org"
    assert b"301 Moved" in redirect_response(b"GET", b"/a?b=c", origin)
    assert b"\r\nLocation: https://hub.example.org/a?b=c\r\n" in redirect_response(b"HEAD", b"/a?b=c", origin)
    post = redirect_response(b"POST", b"/hub/api/users", origin)
    assert post.startswith(b"HTTP/1.1 308 ") and b"Location: https://hub.example.org/hub/api/users\r\n" in post
    for target in (b"http://evil.example/", b"//evil.example/x", b"*"):
        assert b"Location: https://hub.example.org/\r\n" in redirect_response(b"GET", target, origin), target
    # anything outside the URL-safe set is percent-encoded (no header injection, no raw bytes)
    odd = redirect_response(b"GET", b"/a b\"<\xff", origin)
    assert b"Location: https://hub.example.org/a%20b%22%3C%FF\r\n" in odd
