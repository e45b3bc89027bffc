"""The route table: longest-prefix lookup by whole segments, replacement, origins."""

from __future__ import annotations

import pytest

from fleethub.services.proxy.table import RouteTable, Target, parse_origin, prefix_of
from fleethub.shared.events import Route


def table(*specs: str) -> RouteTable:
    t = RouteTable()
    for i, spec in enumerate(specs):
        t.put(f"k{i}", Route(routespec=spec, target=f"http://127.0.0.1:{9000 + i}"))
    return t


def port(hit: Target | None) -> int | None:
    return None if hit is None else hit.origin[1]


def test_longest_prefix_matches_whole_segments_only() -> None:
    t = table("/user/alice/", "/user/alice/gpu/", "/user/bob/", "/services/announce/")
    assert port(t.lookup("/user/alice/lab")) == 9000
    assert port(t.lookup("/user/alice/")) == 9000
    assert port(t.lookup("/user/alice")) == 9000  # the server redirects to the slash form itself
    assert port(t.lookup("/user/alice/gpu")) == 9001
    assert port(t.lookup("/user/alice/gpu/api/kernels")) == 9001
    assert port(t.lookup("/user/alice/gpux/api")) == 9000
    assert port(t.lookup("/services/announce/x")) == 9003
    for miss in ("/user/alicex/lab", "/user/alic", "/user/", "/user", "/", "", "/hub/user/alice/", "/userx/alice/"):
        assert t.lookup(miss) is None, miss


def test_raw_path_is_matched_as_received() -> None:
    t = table("/user/al%40ice/", "/user/bob@x/")
    assert port(t.lookup("/user/al%40ice/tree")) == 9000
    assert t.lookup("/user/al@ice/tree") is None  # no decoding: the route is that of the path forwarded
    assert port(t.lookup("/user/bob@x/")) == 9001


def test_put_replaces_and_delete_returns_the_old_target() -> None:
    t = table("/user/alice/", "/user/alice/gpu/")
    old = t.put("k0", Route(routespec="/user/alice/", target="http://[::1]:7000/ignored/path"))
    assert old is not None and old.origin == ("127.0.0.1", 9000)
    hit = t.lookup("/user/alice/x")
    assert hit is not None and hit.origin == ("::1", 7000) and hit.key == "k0" and len(t) == 2
    gone = t.delete("k1")
    assert gone is not None and gone.routespec == "/user/alice/gpu/"
    assert port(t.lookup("/user/alice/gpu/api")) == 7000
    assert t.delete("k1") is None and t.get("k1") is None
    assert {target.key for target in t} == {"k0"}


def test_lookup_cost_is_bounded_by_the_deepest_route() -> None:
    t = table("/user/a/")
    assert t.max_depth == 2
    assert t.lookup("/user/a/" + "x/" * 100_000) is not None  # two probes, whatever the path's depth
    assert t.lookup("/" + "y/" * 100_000) is None


def test_origins_and_rejected_routes() -> None:
    assert parse_origin("http://127.0.0.1:8888") == ("127.0.0.1", 8888)
    assert parse_origin("http://host.example") == ("host.example", 80)
    assert parse_origin("http://[fe80::1]:81/x") == ("fe80::1", 81)
    for bad in ("https://x:1", "127.0.0.1:80", "http://:80", "http://x:0", "http://x:70000", "http://x:port"):
        with pytest.raises(ValueError):
            parse_origin(bad)
    t = RouteTable()
    with pytest.raises(ValueError):
        t.put("k", Route(routespec="bob.hub.example/user/bob/", target="http://127.0.0.1:1"))
    assert prefix_of("/user/alice/") == prefix_of("/user/alice") == "/user/alice"


def test_root_route_catches_what_no_longer_route_does() -> None:
    t = table("/user/alice/", "/")
    assert port(t.lookup("/user/alice/lab")) == 9000
    assert port(t.lookup("/user/bob/lab")) == 9001
    assert port(t.lookup("/")) == 9001
    assert port(t.lookup("/hub/api/")) == 9001
    assert t.at_prefix("/") is t.root and t.at_prefix("/user/alice") is t.get("k0")
    t.delete("k1")
    assert t.root is None and t.lookup("/user/bob/lab") is None
