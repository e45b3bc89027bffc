"""A proxy node refuses route and registry entries that do not agree with their keys (the security review):
bad entries written straight into the real KV buckets are logged and never routed to, while a valid entry
next to them is served."""

from __future__ import annotations

import json

import pytest

from fleethub.shared.names import route_key
from fleethub.shared.registry import registry_key
from tests.integration.proxy.conftest import ProxyEnv, answers, get, node_ready
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


def _route(routespec: str, target: str) -> bytes:
    return json.dumps({"routespec": routespec, "target": target, "data": {}}).encode()


async def test_bad_routes_are_not_served(env: ProxyEnv) -> None:
    alice, evil, last = await env.backend("alice"), await env.backend("evil"), await env.backend("last")
    host_port = evil.url.split("://", 1)[1]
    await env.route("alice", alice.url)
    kv = await env.bus.js.key_value(env.bus.names.routes_bucket)
    bad = {
        route_key("bob"): _route("/user/alice/", evil.url),  # another user's prefix
        route_key("bob", "gpu"): _route("/user/bob/", evil.url),  # the default server's prefix for a named one
        route_key("carol"): _route("/user/carol/", f"http://user:pw@{host_port}"),  # userinfo
        route_key("dave"): _route("/user/dave/", f"{evil.url}/somewhere"),  # a path
        route_key("erin"): _route("/user/erin/", f"{evil.url}/?x=1"),  # a query
        route_key("fred"): _route("/user/fred/", f"{evil.url}#frag"),  # a fragment
        route_key("gina"): _route("/user/gina/", f"ftp://{host_port}"),  # another scheme
        route_key("hank"): _route("/user/hank/", "http://127.0.0.1:0"),  # no valid port
        route_key("ivan"): b'{"routespec": "/user/ivan/"}',  # no target: does not parse
        route_key("judy"): b"not json",
        "user.a_zz._": _route("/user/a_zz/", evil.url),  # a key that does not decode
        "user.kim": _route("/user/kim/", evil.url),  # a key of the wrong shape
        "service.x": _route("/user/kim/", evil.url),
        "path.user.leo": _route("/user/leo/x/", evil.url),
        "other.key": _route("/other/", evil.url),
        route_key(".."): _route("/user/../", evil.url),  # a prefix with a dot segment
    }
    for key, value in bad.items():
        await kv.put(key, value)
    await env.route("zed", last.url)  # written last: once it is served, every entry above was applied
    _, base = env.node()
    await node_ready(env, base)
    await wait_for(lambda: answers(f"{base}/user/zed/", "last"), timeout=20, what="the last route")

    assert await answers(f"{base}/user/alice/lab", "alice")
    for user in ("bob", "carol", "dave", "erin", "fred", "gina", "hank", "ivan", "judy", "kim", "leo"):
        r = await get(f"{base}/user/{user}/x")
        assert r.status_code == 302 and r.headers["location"] == f"/hub/user/{user}/x", user
    assert (await get(f"{base}/user/bob/gpu/x")).status_code == 302
    assert (await get(f"{base}/other/")).headers.get("x-backend") != "evil"
    assert not evil.seen, [s.target for s in evil.seen]
    log = _log(env)
    for key in bad:
        assert f"ignoring route {key}" in log, key

    # a valid route overwritten by a bad value is no longer served (not left pointing at the old target)
    await kv.put(route_key("alice"), _route("/user/alice/", f"http://x@{host_port}"))
    await wait_for(lambda: _to_hub(f"{base}/user/alice/lab"), timeout=10, what="alice's bad route dropped")
    await env.route("alice", alice.url)
    await wait_for(lambda: answers(f"{base}/user/alice/lab", "alice"), timeout=10, what="alice's route back")
    assert not evil.seen


def _log(env: ProxyEnv) -> str:
    return "".join(p.read_text(errors="replace") for p in env.cluster.log_dir.glob("proxy-*.log"))


async def _to_hub(url: str) -> bool:
    return (await get(url)).status_code == 302


async def test_bad_registry_entries_are_not_served(env: ProxyEnv) -> None:
    auth, evil = await env.backend("auth"), await env.backend("evil")
    host_port = evil.url.split("://", 1)[1]
    kv = await env.bus.js.key_value(env.bus.names.registry_bucket)

    def entry(service: str, replica: str, url: str) -> bytes:
        return json.dumps({"service": service, "replica": replica, "url": url}).encode()

    bad = {
        registry_key("api", "r1"): entry("auth", "r1", evil.url),  # the value's service is not the key's
        registry_key("spawner", "r2"): entry("spawner", "r2", evil.url),  # not a hub service
        registry_key("auth", "r3"): entry("auth", "r3", f"http://u:p@{host_port}"),  # userinfo
        registry_key("auth", "r4"): entry("auth", "r4", f"{evil.url}/x"),  # a path
        registry_key("auth", "r5"): entry("auth", "r5", f"https://{host_port}"),  # a scheme nodes do not speak
        registry_key("auth", "r6"): entry("auth", "other", evil.url),  # another replica's name
        registry_key("auth", "r7"): b'{"service": "auth"}',  # does not parse
    }
    for key, value in bad.items():
        await kv.put(key, value)
    await env.replica("auth", "good", auth.url)
    _, base = env.node()
    await node_ready(env, base)
    await wait_for(lambda: answers(f"{base}/hub/login", "auth"), timeout=20, what="the auth replica")
    for _ in range(20):  # round robin would reach any accepted replica within a few requests
        r = await get(f"{base}/hub/login")
        assert r.headers.get("x-backend") == "auth"
    r = await get(f"{base}/hub/home")  # api has no valid replica: the node says so, it does not use r1
    assert r.status_code == 503 and r.headers.get("x-backend") is None
    assert not evil.seen
    log = _log(env)
    for key in bad:
        assert f"ignoring registry entry {key}" in log, key
