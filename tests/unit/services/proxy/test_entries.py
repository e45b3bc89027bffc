"""What a proxy node accepts from the route and registry buckets (the checks, without NATS)."""

from __future__ import annotations

import pytest

from fleethub.services.proxy.entries import check_origin, check_registry, check_route, implied_prefix
from fleethub.services.proxy.routeapi import path_key
from fleethub.shared.events import RegistryEntry, Route
from fleethub.shared.names import route_key, service_route_key
from fleethub.shared.registry import registry_key
from fleethub.shared.routes import route_for, service_routes
from fleethub.shared.settings import HubService


@pytest.mark.parametrize("url", ["http://127.0.0.1:8888", "http://127.0.0.1:8888/", "http://[::1]:80",
                                 "http://hub-api.svc.cluster.local:8081", "http://LOCALHOST:1", "http://jupyter_alice:8888",
                                 "http://svc.local", "http://[::1]"])
def test_origins(url: str) -> None:
    assert check_origin(url) == url


@pytest.mark.parametrize("url", [
    "https://127.0.0.1:1", "ftp://127.0.0.1:1", "http://127.0.0.1:", "http://127.0.0.1:0", "http://127.0.0.1:70000",
    "http://127.0.0.1:x", "http://u@127.0.0.1:1", "http://u:p@127.0.0.1:1", "http://127.0.0.1:1/p",
    "http://127.0.0.1:1?x", "http://127.0.0.1:1/?", "http://127.0.0.1:1#f", "http://:1", "http://[zz]:1",
    "http://a b:1", "http://127.0.0.1:1\r\n", "http://-x:1", "http://x/y:1", "127.0.0.1:1", "",
])
def test_not_origins(url: str) -> None:
    with pytest.raises(ValueError):
        check_origin(url)


def test_the_routes_we_write_pass() -> None:
    for user, server in [("alice", ""), ("alice", "gpu"), ("a b@c", "x.y"), ("ünï", "")]:
        route = route_for(user, server, "http://127.0.0.1:9000", "spawn-1")
        assert check_route(route_key(user, server), route) is route
    (key, svc_route), = service_routes([HubService(name="my.svc-1", url="http://127.0.0.1:10101")]).items()
    assert key == service_route_key("my.svc-1") and check_route(key, svc_route) is svc_route
    for path, routespec in [("/", "/"), ("/user/alice", "/user/alice/"), ("/a/b c", "/a/b c/")]:
        assert check_route(path_key(path), Route(routespec=routespec, target="http://127.0.0.1:1")).routespec


@pytest.mark.parametrize(("key", "routespec"), [
    (route_key("bob"), "/user/alice/"), (route_key("bob", "gpu"), "/user/bob/"), (route_key("bob"), "/user/bob"),
    (route_key("bob"), "/user/bob/gpu/"), ("user.a_zz._", "/user/a_zz/"), ("user.bob", "/user/bob/"),
    ("user._._", "/user//"), ("service.x", "/services/y/"), ("service.x.y", "/services/x.y/"), ("path.a", "/b/"),
    ("path.user._2E_2E", "/user/../"), (route_key(".."), "/user/../"), (route_key("."), "/user/./"),
    ("other", "/other/"), ("", "/"),
])
def test_routes_that_disagree_with_their_key(key: str, routespec: str) -> None:
    with pytest.raises(ValueError):
        check_route(key, Route(routespec=routespec, target="http://127.0.0.1:1"))


def test_implied_prefixes() -> None:
    assert implied_prefix(route_key("a b", "s")) == "/user/a%20b/s/"
    assert implied_prefix("path") == "/" and implied_prefix("path.user.alice") == "/user/alice/"


def test_registry_entries() -> None:
    good = RegistryEntry(service="auth", replica="r-1.x", url="http://127.0.0.1:8081")
    assert check_registry(registry_key("auth", "r-1.x"), good) is good
    for key, entry in [
        (registry_key("api", "r-1.x"), good),  # service disagrees
        (registry_key("spawner", "r"), RegistryEntry(service="spawner", replica="r", url="http://127.0.0.1:1")),
        (registry_key("auth", "other"), good),  # replica disagrees
        ("auth", good), ("auth.a.b", good),
        (registry_key("auth", "r"), RegistryEntry(service="auth", replica="r", url="http://u@127.0.0.1:1")),
        (registry_key("auth", "r"), RegistryEntry(service="auth", replica="r", url="http://127.0.0.1:1/x")),
    ]:
        with pytest.raises(ValueError):
            check_registry(key, entry)
