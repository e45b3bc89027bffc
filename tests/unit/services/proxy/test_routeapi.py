"""The pure parts of the route API: paths, keys, dates, authorization."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleethub.services.proxy.node import Node
from fleethub.services.proxy.routeapi import ApiError, RouteApi, chp_path, iso, parse_since, path_key
from fleethub.services.proxy.upstream import Pool


def test_paths_map_to_distinct_valid_keys() -> None:
    assert path_key("/") == "path"
    assert path_key("/user/alice") == path_key("/user/alice/") == "path.user.alice"
    assert path_key("/user/a.b/x y") == "path.user.a_2Eb.x_20y"
    keys = {path_key(p) for p in ("/user/a.b", "/user/a/b", "/user/a_2Eb", "/path", "/")}
    assert len(keys) == 5
    assert chp_path("/user/alice/") == "/user/alice" and chp_path("/") == "/"


def test_dates_are_written_and_read_as_chp_does() -> None:
    ts = datetime(2026, 11, 23, 10, 15, 11, 204000, tzinfo=UTC).timestamp()
    assert iso(ts) == "2026-11-23T10:15:11.204Z"
    assert parse_since("2026-11-23T10:15:11.204Z") == pytest.approx(ts)
    assert parse_since("2026-11-23T10:15:11.204") == pytest.approx(ts)  # naive = UTC
    assert parse_since("2026-11-23T11:15:11.204+01:00") == pytest.approx(ts)
    for bad in ("yesterday", "", "2026-13-01"):
        with pytest.raises(ApiError) as err:
            parse_since(bad)
        assert err.value.status == 400


def test_only_the_token_scheme_with_the_exact_token_is_authorized() -> None:
    api = RouteApi(Node(port=1, upstream_timeout=1, pool=Pool(connect_timeout=1)), bus=None, token="s3cret")  # type: ignore[arg-type]
    assert api.authorized(b"token s3cret") and api.authorized(b"Token   s3cret")
    for header in (None, b"", b"token", b"token s3cre", b"token s3cretx", b"Bearer s3cret", b"basic s3cret"):
        assert not api.authorized(header), header
    with pytest.raises(ValueError):
        RouteApi(api.node, bus=None, token="")  # type: ignore[arg-type]
