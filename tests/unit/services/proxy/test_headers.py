"""Header rewriting and the proxy's own answers."""

from __future__ import annotations

import json

from fleethub.services.proxy.headers import has_dot_segment, request_head, response_head, tokens
from fleethub.services.proxy.replies import error, redirect, wants_json


def parse(head: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    assert lines[-2:] == ["", ""], "a head ends with an empty line"
    pairs = [line.split(": ", 1) for line in lines[1:-2]]
    return lines[0].encode(), [(k, v) for k, v in pairs]


CLIENT = [
    (b"Host", b"hub.example:8000"),
    (b"Connection", b"keep-alive, X-Secret"),
    (b"X-Secret", b"hop"),
    (b"Keep-Alive", b"timeout=5"),
    (b"TE", b"trailers"),
    (b"Proxy-Authorization", b"Basic abc"),
    (b"X-Forwarded-For", b"6.6.6.6"),
    (b"x-forwarded-proto", b"https"),
    (b"X-Forwarded-Host", b"evil.example"),
    (b"X-Forwarded-Prefix", b"/evil"),
    (b"Forwarded", b"for=6.6.6.6"),
    (b"X-Real-IP", b"6.6.6.6"),
    (b"Cookie", b"a=b"),
    (b"Content-Length", b"3"),
]


def test_request_head_keeps_end_to_end_headers_and_sets_forwarded_ones() -> None:
    head = request_head(b"POST", b"/user/alice/api?x=1", CLIENT, client_ip="10.0.0.7", port=8000,
                        host=b"hub.example:8000", chunked=False, upgrade=None)
    start, headers = parse(head)
    assert start == b"POST /user/alice/api?x=1 HTTP/1.1"
    assert headers == [
        ("Host", "hub.example:8000"),
        ("Cookie", "a=b"),
        ("Content-Length", "3"),
        ("X-Forwarded-For", "10.0.0.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "hub.example:8000"),
        ("X-Forwarded-Port", "8000"),
    ]


def test_request_head_framing_and_upgrade() -> None:
    client = [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"websocket"),
              (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", b"k")]
    _, headers = parse(request_head(b"GET", b"/ws", client, client_ip="::1", port=1, host=b"h", chunked=True,
                                    upgrade=b"websocket"))
    names = [k for k, _ in headers]
    assert names.count("Transfer-Encoding") == 1 and ("Transfer-Encoding", "chunked") in headers
    assert ("Connection", "Upgrade") in headers and ("Upgrade", "websocket") in headers
    assert ("Sec-WebSocket-Key", "k") in headers and ("X-Forwarded-For", "::1") in headers
    _, plain = parse(request_head(b"GET", b"/", [(b"Upgrade", b"h2c"), (b"Connection", b"Upgrade")],
                                  client_ip="1.2.3.4", port=1, host=None, chunked=False, upgrade=None))
    assert [k for k, _ in plain] == ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port"]


def test_response_head() -> None:
    upstream = [(b"Content-Type", b"text/plain"), (b"Transfer-Encoding", b"chunked"), (b"Connection", b"close"),
                (b"Keep-Alive", b"timeout=1"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
    start, headers = parse(response_head(200, b"OK", upstream, chunked=True, close=False))
    assert start == b"HTTP/1.1 200 OK"
    assert headers == [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                       ("Transfer-Encoding", "chunked")]
    _, headers = parse(response_head(404, b"", [(b"Content-Length", b"0")], chunked=False, close=True))
    assert headers == [("Content-Length", "0"), ("Connection", "close")]
    _, headers = parse(response_head(101, b"Switching Protocols", [(b"Upgrade", b"websocket"),
                                                                   (b"Connection", b"upgrade"),
                                                                   (b"Sec-WebSocket-Accept", b"x")],
                                     chunked=False, close=False, upgrade=b"websocket"))
    assert headers == [("Sec-WebSocket-Accept", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")]
    assert tokens([(b"connection", b"Keep-Alive, Upgrade"), (b"Connection", b" x ")], b"connection") == {
        b"keep-alive", b"upgrade", b"x"}


def test_dot_segments_are_detected_in_every_spelling() -> None:
    for path in ("/user/alice/../bob/", "/user/alice/%2e%2e/bob/", "/user/alice/%2E./bob", "/user/./alice/",
                 "/user/alice/..", "/a/.%2e/b"):
        assert has_dot_segment(path), path
    for path in ("/user/alice/", "/user/alice/file.ipynb", "/user/al.ice/", "/user/alice/...", "/user/a%2Fb/",
                 "/user/alice/.hidden", "/"):
        assert not has_dot_segment(path), path


def test_errors_are_json_for_api_clients_and_html_for_browsers() -> None:
    assert wants_json("/user/alice/api/contents", [])
    assert wants_json("/hub/x", [(b"Accept", b"application/json, text/html")])
    assert wants_json("/hub/x", [(b"accept", b"application/vnd.api+json")])
    assert not wants_json("/hub/x", [(b"Accept", b"text/html,application/json;q=0.9")])
    assert not wants_json("/user/alice/lab", [])
    raw = error(503, "nothing <here>", as_json=True, close=False, retry_after=1)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Content-Type: application/json" in head and b"Retry-After: 1" in head and b"Connection" not in head
    assert json.loads(body) == {"status": 503, "message": "nothing <here>"}
    assert f"Content-Length: {len(body)}".encode() in head
    head, body = error(502, "nothing <here>", as_json=False, close=True).split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head and b"text/html" in head
    assert b"nothing &lt;here&gt;" in body and b"<here>" not in body
    assert redirect(b"/hub/user/alice/?a=1", close=False) == (
        b"HTTP/1.1 302 Found\r\nLocation: /hub/user/alice/?a=1\r\nContent-Length: 0\r\n\r\n")
