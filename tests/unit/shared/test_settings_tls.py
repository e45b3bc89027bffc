"""TLS settings of the proxy: paired files, an https public URL, the redirect port."""

from __future__ import annotations

import pytest

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import load_settings


def test_ssl_cert_makes_the_default_public_url_https() -> None:
    s = load_settings(proxy={"ssl_cert": "/c.pem", "ssl_key": "/k.pem", "port": 8443})
    assert s.hub_public_url == "https://127.0.0.1:8443" and s.hub_api_url == "https://127.0.0.1:8443/hub/api"
    assert load_settings(proxy={"host": "::1", "port": 1}).hub_public_url == "http://[::1]:1"


@pytest.mark.parametrize(("values", "match"), [
    ({"proxy": {"ssl_cert": "/c.pem"}}, "set together"),
    ({"proxy": {"ssl_key": "/k.pem"}}, "set together"),
    ({"proxy": {"ssl_cert": "/c.pem", "ssl_key": "/k.pem"}, "public_url": "http://hub.example"}, "must be https"),
    ({"proxy": {"http_redirect_port": 8080}}, "http_redirect_port"),
    ({"proxy": {"http_redirect_port": 8080}, "public_url": "http://hub.example"}, "http_redirect_port"),
    ({"proxy": {"hsts_max_age": -1}}, "hsts_max_age"),
])
def test_tls_settings_are_checked(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(**values)


def test_a_redirect_port_behind_a_terminator() -> None:
    s = load_settings(public_url="https://hub.example", proxy={"http_redirect_port": 8080})
    assert s.proxy.http_redirect_port == 8080 and s.proxy.ssl_cert is None
