"""`base_url`: the setting's checks, the public form of the hub's paths, and the proxy's routing under it."""

from __future__ import annotations

import pytest

from fleethub.services.proxy.replicas import Replicas
from fleethub.services.proxy.routing import HEALTHY, LOADING, Answer, Forward, route
from fleethub.services.proxy.table import RouteTable
from fleethub.shared.baseurl import check_base_url, inner_path, public_location, public_path
from fleethub.shared.events import RegistryEntry, Route


@pytest.mark.parametrize(("given", "normal"), [("/", "/"), ("/jhub", "/jhub/"), ("/jhub/", "/jhub/"),
                                               ("/a/b.c/", "/a/b.c/"), ("/x~y-z_/", "/x~y-z_/")])
def test_base_urls_are_normalized(given: str, normal: str) -> None:
    assert check_base_url(given) == normal


@pytest.mark.parametrize("bad", ["", "jhub/", "http://host/jhub/", "//host/", "/a//b/", "/a/../b/", "/./",
                                 "/jhub/?x=1", "/jhub/#f", "/j hub/", "/j%2e/", "/hub/", "/user/x/", "/services/"])
def test_bad_base_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_base_url(bad)


def test_public_and_inner_forms() -> None:
    assert public_path("/", "/hub/home") == "/hub/home"
    assert public_path("/jhub/", "/hub/home") == "/jhub/hub/home"
    assert public_path("/jhub/", "/jhub/user/a/") == "/jhub/user/a/"  # already public
    assert public_path("/jhub/", "https://elsewhere/x") == "https://elsewhere/x"
    assert inner_path("/jhub/", "/jhub/hub/home") == "/hub/home"
    assert inner_path("/jhub/", "/jhub") == "/"
    assert inner_path("/jhub/", "/jhubx/hub/") is None and inner_path("/jhub/", "/hub/") is None
    loc = public_location("/jhub/", "/hub/login?next=%2Fhub%2Fapi%2Foauth2%2Fauthorize%3Fclient_id%3Dc&x=1")
    assert loc == "/jhub/hub/login?next=/jhub/hub/api/oauth2/authorize%3Fclient_id%3Dc&x=1"
    assert public_location("/", "/hub/login?next=%2Fhub%2Fhome") == "/hub/login?next=%2Fhub%2Fhome"


def _setup() -> tuple[RouteTable, Replicas]:
    table = RouteTable()
    table.put("user.alice._", Route(routespec="/user/alice/", target="http://127.0.0.1:9000"))
    replicas = Replicas()
    replicas.put("api.a1", RegistryEntry(service="api", replica="api-1", url="http://127.0.0.1:8001"))
    replicas.put("auth.x1", RegistryEntry(service="auth", replica="auth-1", url="http://127.0.0.1:8101"))
    return table, replicas


def test_proxy_routes_under_the_base_url() -> None:
    table, replicas = _setup()
    base = "/jhub/"
    alice = Forward(("127.0.0.1", 9000), "user.alice._", None)
    assert route("/jhub/user/alice/lab", b"/jhub/user/alice/lab?x=1", table, replicas, base) == alice
    assert route("/jhub/hub/login", b"/jhub/hub/login", table, replicas, base) == Forward(("127.0.0.1", 8101), None,
                                                                                          "auth")
    assert route("/jhub/hub/home", b"/jhub/hub/home", table, replicas, base) == Forward(("127.0.0.1", 8001), None,
                                                                                         "api")
    # the hub's redirects keep the prefix
    assert route("/jhub/", b"/jhub/?a=1", table, replicas, base) == Answer(302, "", b"/jhub/hub/?a=1")
    assert route("/jhub", b"/jhub", table, replicas, base) == Answer(302, "", b"/jhub/hub/")
    assert route("/jhub/user/bob/lab", b"/jhub/user/bob/lab?q", table, replicas, base) == \
        Answer(302, "", b"/jhub/hub/user/bob/lab?q")
    # outside the prefix: / is sent into the hub, the rest is not the hub's (not even a user's route)
    assert route("/", b"/", table, replicas, base) == Answer(302, "", b"/jhub/hub/")
    for path in ("/hub/login", "/hub/api/", "/user/alice/lab", "/jhubx/hub/", "/favicon.ico"):
        answer = route(path, path.encode(), table, replicas, base)
        assert isinstance(answer, Answer) and answer.status == 404 and "/jhub/" in answer.message, path
    # the node's own health check stays where configurable-http-proxy has it
    assert route("/_chp_healthz", b"/_chp_healthz", table, replicas, base) == HEALTHY
    assert route("/jhub/user/alice/", b"/jhub/user/alice/", None, replicas, base) == LOADING
