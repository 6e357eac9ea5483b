"""serve's HTTP side against misbehaving clients (issue 25): every malformed request is a 4xx in
OpenAI's error shape, never a 500 and never a hang past --timeout, and the server goes on
serving a well-formed request afterwards."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from tests.helpers.fake_backend import Loader, running_server

TIMEOUT = 1.0  # the server's --timeout
MAX_BODY = 4096
GOOD = {"model": "fake-a", "messages": [{"role": "user", "content": "hello there"}]}


def _chat(**kw) -> bytes:
    return json.dumps({**GOOD, **kw}).encode()


def _deep(depth: int) -> bytes:
    return _chat()[:-1] + b', "user": ' + b"[" * depth + b"]" * depth + b"}"


def _request(body: bytes, headers: bytes = b"", length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + headers
            + b"Content-Length: %d\r\n\r\n" % length + body)


def _exchange(url: str, data: bytes, wait: float = 10.0) -> tuple[int, dict, float]:
    """Send raw bytes, read the answer until the server closes; (status, JSON body, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server may answer and close before it has read everything
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, sep, rest = b"".join(chunks).partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                declared = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= declared:
                    break
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), time.monotonic() - t0


def _assert_openai_error(status: int, body: dict, expected: int) -> dict:
    assert status == expected, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def _still_serving(url: str) -> None:
    resp = httpx.post(f"{url}/v1/chat/completions", json=GOOD, timeout=10)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]


CASES = {
    "not-json": (_request(b"{this is not json"), 400),
    "not-an-object": (_request(b"[1, 2]"), 400),
    "messages-a-string": (_request(_chat(messages="hello")), 400),
    "max-tokens-negative": (_request(_chat(max_tokens=-1)), 400),
    "max-tokens-huge": (_request(_chat(max_tokens=10**30)), 400),
    "max-tokens-not-a-number": (_request(_chat(max_tokens="many")), 400),
    "nested-too-deeply": (_request(_deep(1500)), 400),
    "body-over-max-body": (_request(b'{"x": "' + b"a" * (2 * MAX_BODY) + b'"}'), 413),
    "declared-over-max-body": (_request(b"{}", length=10 * MAX_BODY), 413),
    "header-section-1mb": (_request(_chat(), headers=b"X-Big: " + b"a" * (1 << 20) + b"\r\n"), 400),
    "many-headers": (_request(_chat(), headers=b"".join(b"X-H%d: v\r\n" % i for i in range(20000))), 400),
    "not-http": (b"\x16\x03\x01 not http at all\r\n\r\n", 400),
    "half-a-body-then-a-stall": (_request(_chat()[:10], length=len(_chat())), 408),
}


@pytest.fixture(scope="module")
def server():
    with running_server(Loader(), timeout=TIMEOUT, max_body=MAX_BODY) as (url, state):
        yield url


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_is_a_4xx_in_openai_shape(server, case):
    data, expected = CASES[case]
    status, body, seconds = _exchange(server, data)
    _assert_openai_error(status, body, expected)
    assert seconds < TIMEOUT + 3  # never a hang past --timeout
    _still_serving(server)


def test_idle_connections_are_closed_and_do_not_block_others(monkeypatch):
    from llmtools.ops.serve import server as server_mod

    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT", 1)
    with running_server(Loader(), timeout=TIMEOUT) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(200)]
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: te")  # inside the headers
        try:
            t0 = time.monotonic()
            _still_serving(url)
            assert time.monotonic() - t0 < 5
            time.sleep(2.5)
            closed = 0
            for sock in [*idle, stalled]:
                sock.settimeout(2)
                try:
                    closed += sock.recv(1) == b""
                except (ConnectionResetError, TimeoutError):
                    pass
            assert closed == len(idle) + 1  # the server closed every one of them
            _still_serving(url)
        finally:
            for sock in [*idle, stalled]:
                sock.close()
