"""`llmtools serve` HTTP mechanics on a deterministic fake backend, through a real uvicorn server
on 127.0.0.1: shapes, streaming, auth, limits, queue, timeouts, metrics, the request log."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time

import httpx
import orjson
import pytest
from tests.helpers.fake_backend import BatchingFake, FakeBackend, Loader, running_server

from llmtools.ops.serve.protocol import Defaults


def chat_body(text="hello there", **kw):
    return {"model": "fake-a", "messages": [{"role": "user", "content": text}], **kw}


def assert_error(resp: httpx.Response, status: int, code: str | None = None, type_: str | None = None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    if type_ is not None:
        assert err["type"] == type_
    return err


def sse_events(text: str) -> list:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


# --------------------------------------------------------------------------- shapes


def test_chat_completion_shape_usage_and_request_id():
    with running_server(Loader()) as (url, state):
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=50), headers={"x-request-id": "abc123"})
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "abc123"
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["id"] == "chatcmpl-abc123"
        assert body["model"] == "fake-a"
        choice = body["choices"][0]
        # `refusal: null` too: OpenAI's schema requires the key, and strict clients validate it
        assert choice["message"] == {"role": "assistant", "content": "fake-a user: hello there assistant:", "refusal": None}
        assert choice["finish_reason"] == "stop"
        assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
        assert body["system_fingerprint"] == state.manager.active.identity.short


def test_max_tokens_gives_length_finish_and_stop_sequences_apply():
    with running_server(Loader()) as (url, _):
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body("a b c d e f g", max_tokens=3))
        assert r.json()["choices"][0]["finish_reason"] == "length"
        assert r.json()["usage"]["completion_tokens"] == 3
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": "one two STOP three", "stop": "STOP"})
        assert r.json()["choices"][0]["text"] == "fake-a one two"


def test_completions_single_and_list_prompt():
    with running_server(Loader()) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": "x y"})
        body = r.json()
        assert body["object"] == "text_completion"
        assert body["choices"] == [{"index": 0, "text": "fake-a x y", "logprobs": None, "finish_reason": "stop"}]
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": ["a", "b c"]})
        body = r.json()
        assert [c["text"] for c in body["choices"]] == ["fake-a a", "fake-a b c"]
        assert body["usage"]["completion_tokens"] == 2 + 3


def test_chat_stream_sse_ends_with_done_and_usage_chunk():
    with running_server(Loader()) as (url, _):
        r = httpx.post(f"{url}/v1/chat/completions",
                       json=chat_body("one two", stream=True, stream_options={"include_usage": True}))
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "fake-a user: one two assistant:"
        finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


def test_completion_stream_without_usage():
    with running_server(Loader()) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": "p q", "stream": True})
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        assert all("usage" not in e for e in events[:-1])
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "fake-a p q"


def test_models_lists_active_identity_and_provenance():
    with running_server(Loader()) as (url, state):
        body = httpx.get(f"{url}/v1/models").json()
        assert body["object"] == "list"
        (entry,) = body["data"]
        assert entry["id"] == "fake-a" and entry["object"] == "model" and entry["active"] is True
        assert entry["version"] == 1 and body["active_version"] == 1
        assert entry["identity"]["sha256"] == state.manager.active.identity.sha256
        assert entry["provenance"] == {"kind": "fake", "data": "fake-a-data.jsonl"}
        assert body["versions"][0]["state"] == "active"


def test_embeddings_float_and_base64_and_unsupported():
    with running_server(Loader()) as (url, _):
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "fake-a", "input": ["ab", "c d e"]})
        body = r.json()
        assert [d["embedding"] for d in body["data"]] == [[0.2, 0.5, -1.25, 1.0], [0.5, 0.5, -1.25, 3.0]]
        assert body["usage"]["prompt_tokens"] == 4
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "fake-a", "input": "ab", "encoding_format": "base64"})
        raw = base64.b64decode(r.json()["data"][0]["embedding"])
        assert struct.unpack("<4f", raw) == pytest.approx((0.2, 0.5, -1.25, 1.0))
    with running_server(Loader(embeddings=False)) as (url, _):
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "fake-a", "input": "x"})
        assert_error(r, 400, "embeddings_not_supported")


# --------------------------------------------------------------------------- errors


def test_auth_bearer_required_except_health_and_keys_rotate():
    with running_server(Loader(), api_keys=("k-old", "k-new")) as (url, _):
        assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat_body()), 401, "invalid_api_key", "authentication_error")
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer wrong"})
        assert_error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.get(f"{url}/v1/models", headers={"Authorization": "Basic k-new"}), 401)
        assert_error(httpx.get(f"{url}/metrics"), 401)
        for key in ("k-old", "k-new"):
            assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200


def test_body_limit_413_for_declared_and_chunked_bodies():
    with running_server(Loader(), max_body=1000) as (url, _):
        big = chat_body("w " * 2000)
        assert_error(httpx.post(f"{url}/v1/chat/completions", json=big), 413, "request_too_large")

        def chunks():
            data = json.dumps(big).encode()
            for i in range(0, len(data), 256):
                yield data[i : i + 256]

        assert_error(httpx.post(f"{url}/v1/chat/completions", content=chunks()), 413, "request_too_large")
        assert httpx.post(f"{url}/v1/chat/completions", json=chat_body("small")).status_code == 200


def test_bad_json_and_bad_fields_are_400_with_param():
    with running_server(Loader()) as (url, _):
        headers = {"Content-Type": "application/json"}
        assert_error(httpx.post(f"{url}/v1/chat/completions", content=b"{nope", headers=headers), 400, "invalid_json")
        assert_error(httpx.post(f"{url}/v1/chat/completions", content=b"[1, 2]", headers=headers), 400, "invalid_json")
        assert_error(httpx.post(f"{url}/v1/chat/completions", content=b"", headers=headers), 400, "invalid_json")
        for depth in (1024, 5000):  # beyond the parser's limit: a 400, not a 500
            deep = b'{"model": "fake-a", "messages": []' + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
            err = assert_error(httpx.post(f"{url}/v1/chat/completions", content=deep, headers=headers), 400, "invalid_json")
            assert "nested too deeply" in err["message"]
        within = orjson.dumps(chat_body())[:-1] + b', "user": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # answered
        ok = httpx.post(f"{url}/v1/chat/completions", content=within, headers=headers)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
        err = assert_error(httpx.post(f"{url}/v1/chat/completions", json={"model": "fake-a", "messages": []}), 400)
        assert err["param"] == "messages"
        err = assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat_body(temperature="hot")), 400)
        assert err["param"] == "temperature"
        err = assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat_body(n=3)), 400)
        assert err["param"] == "n"
        assert_error(httpx.get(f"{url}/v1/nothing"), 404, "not_found")
        assert_error(httpx.get(f"{url}/v1/chat/completions"), 405, "method_not_allowed")


def test_unknown_model_is_404_model_not_found():
    with running_server(Loader()) as (url, state):
        err = assert_error(httpx.post(f"{url}/v1/chat/completions", json={**chat_body(), "model": "gpt-9"}), 404,
                           "model_not_found", "invalid_request_error")
        assert err["param"] == "model" and "gpt-9" in err["message"]
        # the served name, the short id and an omitted model all reach the active version
        for name in ("fake-a", state.manager.active.identity.short, None):
            body = chat_body()
            body["model"] = name
            assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200


def test_backend_failures_answer_for_that_request_only():
    with running_server(Loader()) as (url, _):
        err = assert_error(httpx.post(f"{url}/v1/completions", json={"prompt": "w " * 600}), 400, "context_length_exceeded")
        assert "fills the context" in err["message"]
        assert_error(httpx.post(f"{url}/v1/completions", json={"prompt": "EXPLODE"}), 500, "generation_failed", "server_error")
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body("EXPLODE", stream=True))
        assert_error(r, 500, "generation_failed")  # failed before the first token: a real status, not a 200 stream
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "fine"}).status_code == 200


def test_max_tokens_cap_is_enforced():
    with running_server(Loader(), defaults=Defaults(max_tokens=8, max_tokens_cap=16)) as (url, _):
        err = assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=17)), 400, "max_tokens_too_large")
        assert err["param"] == "max_tokens"
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": "a " * 40})
        assert r.json()["usage"]["completion_tokens"] == 8  # the default when the request gives none


def _fire(url, n, body, path="/v1/chat/completions", timeout=30):
    results: list = [None] * n

    def one(i):
        results[i] = httpx.post(f"{url}{path}", json=body, timeout=timeout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    return results


def test_queue_full_is_429_with_retry_after_and_never_a_backlog():
    # ~1.2 s per request: all five arrive while the first runs, even on a loaded machine.
    loader = Loader(delay=0.2)
    with running_server(loader, max_concurrency=1, max_queue=1) as (url, state):
        results = _fire(url, 5, chat_body("a b c d"))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 200, 429, 429, 429], statuses
        rejected = [r for r in results if r.status_code == 429]
        for r in rejected:
            assert_error(r, 429, "queue_full", "rate_limit_error")
            assert r.headers["retry-after"] == "1"
        # The slot is released just after the response is sent: allow it that moment.
        deadline = time.monotonic() + 5
        while state.limiter.admitted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.limiter.admitted == 0
        assert httpx.post(f"{url}/v1/chat/completions", json=chat_body()).status_code == 200


def test_requests_to_one_model_are_serialised():
    loader = Loader(delay=0.01)
    with running_server(loader, max_concurrency=8, max_queue=8) as (url, _):
        results = _fire(url, 6, chat_body("a b c"))
        assert all(r.status_code == 200 for r in results)
        assert loader.built["fake-a"].max_active == 1


def test_timeout_is_504_and_stops_the_generation():
    loader = Loader(delay=0.1)
    with running_server(loader, timeout=0.3) as (url, state):
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body("w " * 30))
        assert_error(r, 504, "timeout", "timeout_error")
        deadline = time.monotonic() + 5
        while state.limiter.admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.limiter.admitted == 0  # the worker gave the slot back
        assert loader.built["fake-a"].cancelled_streams == 1  # stopped early, not run to the end


def test_client_disconnect_mid_stream_cancels_generation():
    loader = Loader(delay=0.05)
    with running_server(loader) as (url, state):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat_body("w " * 60, stream=True)) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content":"fake-a"' in line:
                    break
        deadline = time.monotonic() + 5
        while loader.built["fake-a"].cancelled_streams == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loader.built["fake-a"].cancelled_streams == 1


def test_micro_batching_merges_waiting_requests_for_a_batching_backend():
    loader = Loader(cls=BatchingFake, delay=0.05)
    with running_server(loader, max_concurrency=8, max_queue=8, micro_batch=4) as (url, _):
        results = _fire(url, 6, {"model": "fake-a", "prompt": "m n"}, path="/v1/completions")
        assert all(r.status_code == 200 for r in results)
        assert all(r.json()["choices"][0]["text"] == "fake-a m n" for r in results)
        sizes = [n for what, n in loader.built["fake-a"].calls if what == "batch"]
        assert max(sizes) > 1 and max(sizes) <= 4, sizes


def test_draining_refuses_new_requests_with_503():
    with running_server(Loader()) as (url, state):
        state.draining = True
        assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat_body()), 503, "shutting_down")
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "draining"


def test_health_is_503_while_loading_then_200():
    loader = Loader()
    loader.gate = threading.Event()
    with running_server(loader, wait_loaded=False) as (url, state):
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat_body()), 503, "model_loading")
        loader.gate.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


# --------------------------------------------------------------------------- metrics and log


def test_metrics_prometheus_text():
    from prometheus_client.parser import text_string_to_metric_families

    with running_server(Loader()) as (url, state):
        for _ in range(3):
            httpx.post(f"{url}/v1/chat/completions", json=chat_body("a b"))
        httpx.post(f"{url}/v1/chat/completions", json={**chat_body(), "model": "nope"})
        httpx.post(f"{url}/v1/chat/completions", json=chat_body("s", stream=True))
        r = httpx.get(f"{url}/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        samples = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        assert samples[("llmtools_requests_total", (("endpoint", "chat"), ("status", "200")))] == 4
        assert samples[("llmtools_requests_total", (("endpoint", "chat"), ("status", "404")))] == 1
        assert samples[("llmtools_request_errors_total", (("endpoint", "chat"), ("type", "model_not_found")))] == 1
        assert samples[("llmtools_request_latency_seconds_count", (("endpoint", "chat"),))] == 5
        assert samples[("llmtools_time_to_first_token_seconds_count", (("endpoint", "chat"),))] == 4
        model = (("model", state.manager.active.identity.short),)
        assert samples[("llmtools_prompt_tokens_total", model)] == 3 * 4 + 3
        assert samples[("llmtools_completion_tokens_total", model)] == 3 * 5 + 4
        assert samples[("llmtools_queue_depth", ())] == 0
        sha = state.manager.active.identity.sha256
        assert samples[("llmtools_model_info", (("name", "fake-a"), ("sha256", sha), ("version", "1")))] == 1


def test_request_log_records_and_content_only_when_asked(tmp_path):
    log = tmp_path / "requests.jsonl"
    with running_server(Loader(), log_path=str(log)) as (url, state):
        httpx.post(f"{url}/v1/chat/completions", json=chat_body("secret words"), headers={"x-request-id": "r1"})
        httpx.post(f"{url}/v1/chat/completions", json=chat_body("s t", stream=True))
        httpx.post(f"{url}/v1/chat/completions", json={**chat_body(), "model": "nope"})
        httpx.get(f"{url}/health")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 3  # /health is not logged
    first = records[0]
    assert list(first) == ["time", "request_id", "model", "model_version", "endpoint", "status", "latency_ms", "ttft_ms",
                           "prompt_tokens", "completion_tokens", "stream", "error"]
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert first["request_id"] == "r1" and first["endpoint"] == "chat" and first["status"] == 200
    assert first["model"]["name"] == "fake-a" and first["model"]["sha256"]
    assert first["prompt_tokens"] == 4 and first["completion_tokens"] == 5
    assert 0 <= first["ttft_ms"] <= first["latency_ms"]
    assert first["stream"] is False and first["error"] is None
    assert records[1]["stream"] is True and records[1]["completion_tokens"] == 5
    assert records[2]["status"] == 404 and records[2]["error"] == "model_not_found"
    assert "secret" not in log.read_text()

    log2 = tmp_path / "content.jsonl"
    with running_server(Loader(), log_path=str(log2), log_content=True) as (url, _):
        httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": "secret words"})
    (rec,) = [json.loads(line) for line in log2.read_text().splitlines()]
    assert rec["prompt"] == "secret words" and rec["response"] == "fake-a secret words"


def test_accepted_connections_have_nagle_off():
    """A response goes out as headers then body; with Nagle on, the body waited for the client's
    delayed ACK (up to 40 ms a request). asyncio sets TCP_NODELAY only when the socket says TCP."""
    import asyncio
    import socket

    from llmtools.ops.serve import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP

    async def accept_one() -> int:
        got = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            got.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
            value = await asyncio.wait_for(got, 10)
            writer.close()
            return value
        finally:
            server.close()

    assert asyncio.run(accept_one()) != 0
