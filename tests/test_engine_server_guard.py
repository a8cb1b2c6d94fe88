"""whalebone serve keeps web pages and oversized or pathological bodies out: Host, Origin and
content-type checks (DNS rebinding, cross-site POSTs), bodies capped as they stream in, deeply
nested JSON a 400 on a connection that stays usable. A real server on 127.0.0.1, real sockets."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import httpx
import pytest
from hostile import FORM_CONTENT_TYPES, HOSTILE_HOSTS, HOSTILE_ORIGINS, LOOPBACK_HOSTS
from serving import serving

from whalebone.dsml import emit_completion
from whalebone.engine.scripted import ScriptedEngine
from whalebone.engine.serve.http import MAX_JSON_DEPTH

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "disabled"}}


@pytest.fixture(scope="module")
def server() -> Any:
    engine = ScriptedEngine([emit_completion("fine")] * 200)
    with serving(engine, max_body=1024 * 1024) as (base, srv):
        yield base, srv, engine


def post(base: str, body: Any = BODY, **kw: Any) -> httpx.Response:
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=10, **kw)


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_foreign_host_is_refused_before_anything_runs(server: Any, host: str) -> None:
    base, _, engine = server
    before = len(engine.requests)
    for r in (post(base, headers={"Host": host}),
              httpx.get(base + "/v1/models", headers={"Host": host})):
        assert r.status_code == 403, (host, r.text)
        assert r.json()["error"]["code"] == "host_not_allowed"
    assert len(engine.requests) == before


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_hosts_are_served(server: Any, host: str) -> None:
    assert post(server[0], headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
def test_a_foreign_origin_is_refused(server: Any, origin: str) -> None:
    base, _, engine = server
    before = len(engine.requests)
    r = post(base, headers={"Origin": origin})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    assert len(engine.requests) == before


def test_a_loopback_origin_is_served(server: Any) -> None:
    assert post(server[0], headers={"Origin": "http://localhost:3000"}).status_code == 200


@pytest.mark.parametrize("ctype", FORM_CONTENT_TYPES)
def test_a_post_that_is_not_json_is_refused(server: Any, ctype: str | None) -> None:
    # What a cross-site form or a no-preflight fetch sends: JSON text under another type.
    base, _, engine = server
    before = len(engine.requests)
    headers = {"Content-Type": ctype} if ctype else {}
    with httpx.Client() as client:
        request = client.build_request("POST", base + "/v1/chat/completions",
                                       content=json.dumps(BODY).encode(), headers=headers)
        assert "content-type" not in request.headers or ctype is not None
        r = client.send(request)
    assert r.status_code == 415, r.text
    assert len(engine.requests) == before
    assert post(base, headers={"Content-Type": "application/json; charset=utf-8"}
                ).status_code == 200


def test_configured_hosts_and_any_address() -> None:
    engine = ScriptedEngine([emit_completion("fine")] * 4)
    with serving(engine, hosts=["gpu1.lan"]) as (base, _):
        assert post(base, headers={"Host": "gpu1.lan:8000"}).status_code == 200
        assert post(base, headers={"Host": "10.0.0.5"}).status_code == 403
    with serving(engine, any_address=True) as (base, _):
        # Bound to every interface: any address literal (a rebinding page sends a name)...
        assert post(base, headers={"Host": "10.0.0.5:8000"}).status_code == 200
        assert post(base, headers={"Host": "evil.example"}).status_code == 403


# --- bodies -------------------------------------------------------------------------------------


def _raw(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _status(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: Any) -> None:
    with _raw(server[0]) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: 209715200\r\n\r\n")  # 200 MB announced, none sent
        assert b" 413 " in _status(sock)


def test_a_streamed_oversized_body_is_refused_while_it_streams(server: Any) -> None:
    # Chunked, no length: the 413 comes once the cap is passed, before the body ends (the old
    # server read the whole body first and never answered here).
    with _raw(server[0]) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(24):  # 1.5 MiB, over the 1 MiB cap, and no terminating chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except BrokenPipeError:
            pass  # the server answered and closed before the body ended (a busy client's race)
        assert b" 413 " in _status(sock)


def _deep(depth: int) -> bytes:
    return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 5, 5000, 100_000])
def test_deep_json_is_a_400_and_the_connection_stays_usable(server: Any, depth: int) -> None:
    host, port = server[0].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json"}
    conn.request("POST", "/v1/chat/completions", body=_deep(depth), headers=headers)
    r = conn.getresponse()
    error = json.loads(r.read())["error"]
    assert r.status == 400 and error["code"] == "json_too_deep", error
    sock = conn.sock
    conn.request("POST", "/v1/chat/completions", body=json.dumps(BODY), headers=headers)
    r = conn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    assert conn.sock is sock  # the same connection carried the next request
    conn.close()
