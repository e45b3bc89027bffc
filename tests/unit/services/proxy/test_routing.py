"""Where a request goes, and the replica list it is balanced over."""

from __future__ import annotations

import time

from fleethub.services.proxy.replicas import EXPIRY, Replicas
from fleethub.services.proxy.routing import HEALTHY, Answer, Forward, hub_service, route
from fleethub.services.proxy.table import RouteTable
from fleethub.shared.events import RegistryEntry, Route


def entry(service: str, port: int) -> RegistryEntry:
    return RegistryEntry(service=service, replica=f"{service}-{port}", url=f"http://127.0.0.1:{port}")


def setup() -> tuple[RouteTable, Replicas]:
    table = RouteTable()
    table.put("user.alice._", Route(routespec="/user/alice/", target="http://127.0.0.1:9000"))
    replicas = Replicas()
    replicas.put("api.a1", entry("api", 8001))
    replicas.put("api.a2", entry("api", 8002))
    replicas.put("auth.x1", entry("auth", 8101))
    return table, replicas


def test_routing_decisions() -> None:
    table, replicas = setup()
    assert route("/user/alice/lab", b"/user/alice/lab?x=1", table, replicas) == Forward(("127.0.0.1", 9000),
                                                                                         "user.alice._", None)
    assert route("/", b"/", table, replicas) == Answer(302, "", b"/hub/")
    assert route("/", b"/?next=x", table, replicas) == Answer(302, "", b"/hub/?next=x")
    assert route("", b"", table, replicas) == Answer(302, "", b"/hub/")
    # an unrouted user path goes to the hub, with the same rest of path and query
    answer = route("/user/bob/lab", b"/user/bob/lab?a=%20", table, replicas)
    assert answer == Answer(302, "", b"/hub/user/bob/lab?a=%20")
    assert route("/user/bob", b"/user/bob", table, replicas) == Answer(302, "", b"/hub/user/bob")
    assert route("/user/alicex/", b"/user/alicex/", table, replicas).location == b"/hub/user/alicex/"  # type: ignore[union-attr]
    # anything else unrouted: an api replica (which answers 404)
    for path in ("/user/", "/user//bob", "/services/x/", "/favicon.ico", "/hubx"):
        decision = route(path, path.encode(), table, replicas)
        assert isinstance(decision, Forward) and decision.service == "api", path
    login = route("/hub/login", b"/hub/login?next=/x", table, replicas)
    assert login == Forward(("127.0.0.1", 8101), None, "auth")


def test_no_user_route_is_served_before_the_table_is_loaded() -> None:
    _, replicas = setup()
    for path in ("/user/alice/lab", "/user/bob/", "/services/x/", "/favicon.ico"):
        decision = route(path, path.encode(), None, replicas)
        assert isinstance(decision, Answer) and decision.status == 503 and "loading" in decision.message
    assert isinstance(route("/hub/home", b"/hub/home", None, replicas), Forward)  # the hub needs no table
    assert route("/", b"/", None, replicas) == Answer(302, "", b"/hub/")


def test_hub_paths_are_split_between_auth_and_api_by_whole_segments() -> None:
    for path in ("/hub/login", "/hub/login/", "/hub/logout", "/hub/signup", "/hub/change-password",
                 "/hub/oauth_callback", "/hub/api/oauth2/authorize", "/hub/api/oauth2/token"):
        assert hub_service(path) == "auth", path
    for path in ("/hub/", "/hub", "/hub/loginx", "/hub/change-passwordx", "/hub/api/users", "/hub/api/oauth2",
                 "/hub/home", "/hub/user/alice/login", "/hub/spawn/login"):
        assert hub_service(path) == "api", path
    empty = Replicas()
    decision = route("/hub/api/users", b"/hub/api/users", RouteTable(), empty)
    assert isinstance(decision, Answer) and decision.status == 503 and "api" in decision.message


def test_replicas_round_robin_forget_and_replace() -> None:
    _, replicas = setup()
    picks = [replicas.choose("api") for _ in range(4)]
    assert picks == [("127.0.0.1", 8001), ("127.0.0.1", 8002), ("127.0.0.1", 8001), ("127.0.0.1", 8002)]
    assert replicas.choose("api", avoid=("127.0.0.1", 8001)) == ("127.0.0.1", 8002)
    assert replicas.choose("auth", avoid=("127.0.0.1", 8101)) is None
    assert replicas.choose("spawner") is None
    replicas.forget(("127.0.0.1", 8001))
    assert replicas.origins("api") == [("127.0.0.1", 8002)]
    replicas.put("api.a1", entry("api", 8001))  # its next refresh brings it back
    assert len(replicas.origins("api")) == 2
    replicas.put("api.a1", entry("api", 8003))  # a replica that moved
    assert sorted(replicas.origins("api")) == [("127.0.0.1", 8002), ("127.0.0.1", 8003)]
    replicas.delete("api.a2")
    replicas.delete("api.a2")
    assert replicas.origins("api") == [("127.0.0.1", 8003)]


def test_replicas_expire_when_not_refreshed() -> None:
    replicas = Replicas()
    replicas.put("api.fresh", entry("api", 8001))
    replicas.put("api.old", entry("api", 8002), age=EXPIRY - 1.0)  # written long ago (read in a snapshot)
    now = time.monotonic()
    replicas.expire(now + 0.5)
    assert len(replicas) == 2
    replicas.expire(now + 1.5)
    assert replicas.origins("api") == [("127.0.0.1", 8001)]
    replicas.expire(now + EXPIRY + 0.5)
    assert len(replicas) == 0 and replicas.choose("api") is None


def test_replicas_are_kept_while_nats_is_away() -> None:
    replicas = Replicas()
    replicas.put("api.a1", entry("api", 8001))
    now = time.monotonic()
    for step in range(1, 4):  # an outage three times longer than the expiry
        replicas.extend(now + step * EXPIRY)
    replicas.expire(now + 3 * EXPIRY + 1.0)
    assert replicas.origins("api") == [("127.0.0.1", 8001)]
    replicas.expire(now + 4 * EXPIRY + 0.5)  # NATS is back but the replica never refreshes: gone
    assert len(replicas) == 0


def test_a_classic_hub_behind_a_root_route_gets_hub_paths_when_no_replica_is_registered() -> None:
    table, replicas = setup()
    table.put("path", Route(routespec="/", target="http://127.0.0.1:8081"))
    hub = Forward(("127.0.0.1", 8081), "path", None)
    assert route("/", b"/", table, replicas) == hub
    assert route("/user/bob/", b"/user/bob/", table, replicas) == hub
    # fleethub's own replicas take /hub/ while there are any
    assert route("/hub/api/users", b"/hub/api/users", table, replicas) == Forward(("127.0.0.1", 8001), None, "api")
    assert route("/hub/api/users", b"/hub/api/users", table, Replicas()) == hub
    assert route("/hub/login", b"/hub/login", table, Replicas()) == hub


def test_health_check_answers_once_the_table_is_loaded() -> None:
    table, replicas = setup()
    assert route("/_chp_healthz", b"/_chp_healthz", table, replicas) == HEALTHY
    assert route("/_chp_healthz", b"/_chp_healthz", None, replicas).status == 503  # type: ignore[union-attr]
