"""Batch mode as an op (fake backends) and the protocol validation it shares with HTTP."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.helpers.fake_backend import BatchingFake, FakeBackend, Loader, running_server

from llmtools.ops.serve import parse_size
from llmtools.ops.serve.batch import batch, validator
from llmtools.ops.serve.protocol import ApiError, Defaults, generation_params


def test_batch_groups_equal_options_and_keeps_order():
    backend = BatchingFake("m")
    records = [
        {"id": 0, "prompt": "a b", "max_tokens": 2},
        {"id": 1, "prompt": "c", "max_tokens": 5},
        {"id": 2, "prompt": "d e f", "max_tokens": 2},
        {"id": 3, "messages": [{"role": "user", "content": "hi"}]},
        {"id": 4, "prompt": "g", "max_tokens": 2},
    ]
    out = list(batch([dict(r) for r in records], backend, batch_size=8))
    assert [r["id"] for r in out] == [0, 1, 2, 3, 4]
    assert [r["prediction"] for r in out[:3]] == ["m a", "m c", "m d"]
    assert out[0]["finish_reason"] == "length" and out[1]["finish_reason"] == "stop"
    assert out[3]["prediction"].startswith("m user: hi")
    # one generate_batch for the three max_tokens=2 prompts; the rest ran alone (generate -> stream)
    assert ("batch", 3) in backend.calls
    assert out[0]["_llmtools"]["latency_ms"] == out[2]["_llmtools"]["latency_ms"]
    assert out[0]["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_batch_window_size_bounds_each_call():
    backend = BatchingFake("m")
    out = list(batch(({"prompt": f"p{i}"} for i in range(10)), backend, batch_size=4))
    assert len(out) == 10
    assert [n for what, n in backend.calls if what == "batch"] == [4, 4, 2]


def test_batch_output_field_chat_flag_and_existing_bookkeeping():
    backend = FakeBackend("m")
    rec = {"q": {"text": "x y"}, "_llmtools": {"source": "augment"}}
    (out,) = batch([rec], backend, field="q.text", output_field="answer.text", chat=True)
    assert out["answer"]["text"] == "m user: x y assistant:"
    assert out["_llmtools"]["source"] == "augment" and out["_llmtools"]["model"]["name"] == "m"


def test_batch_defaults_apply_and_records_override():
    backend = FakeBackend("m")
    defaults = Defaults(max_tokens=2, stop=("STOP",))
    a, b = batch([{"prompt": "a b c STOP d"}, {"prompt": "a b c STOP d", "max_tokens": 9, "stop": []}], backend,
                 defaults=defaults)
    assert a["prediction"] == "m a"
    assert b["prediction"] == "m a b c STOP d"  # an explicit empty list turns the default stop off


def test_validator_reasons():
    check = validator("prompt", "messages", Defaults())
    assert check({"prompt": "x"}) is None
    assert check({"messages": [{"role": "user", "content": "x"}]}) is None
    assert "neither" in check({"text": "x"})
    assert "not a string" in check({"prompt": 3})
    assert "unknown role" in check({"messages": [{"role": "robot", "content": "x"}]})
    assert "top_p" in check({"prompt": "x", "top_p": 0})
    assert "seed" in check({"prompt": "x", "seed": 1.5})
    assert "stop" in check({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})


def test_generation_params_cap_and_aliases():
    d = Defaults(max_tokens=50, max_tokens_cap=100)
    assert generation_params({}, d).max_tokens == 50
    assert generation_params({"max_completion_tokens": 70}, d).max_tokens == 70
    with pytest.raises(ApiError) as exc:
        generation_params({"max_tokens": 101}, d)
    assert exc.value.code == "max_tokens_too_large"
    with pytest.raises(ApiError):
        generation_params({"max_tokens": True}, d)
    p = generation_params({"temperature": 0.7, "top_k": 5, "seed": 3, "stop": "x"}, d)
    assert (p.temperature, p.top_k, p.seed, tuple(p.stop)) == (0.7, 5, 3, ("x",))


def test_parse_size():
    assert parse_size("1048576") == 1 << 20
    assert parse_size("512k") == 512 << 10
    assert parse_size("1M") == 1 << 20
    assert parse_size("2MiB") == 2 << 20


@pytest.mark.slow
def test_sixteen_clients_many_requests_no_5xx():
    """16 concurrent keep-alive clients, mixed endpoints, a bounded queue big enough to hold them."""
    loader = Loader(delay=0.0005)
    statuses: list[int] = []
    lock = threading.Lock()
    with running_server(loader, max_concurrency=4, max_queue=16) as (url, state):
        def client(i):
            with httpx.Client(base_url=url, timeout=60) as c:
                for n in range(40):
                    if n % 3 == 0:
                        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}],
                                                                 "stream": True, "max_tokens": 3})
                    elif n % 3 == 1:
                        r = c.post("/v1/completions", json={"prompt": f"c{i} {n}", "max_tokens": 3})
                    else:
                        r = c.get("/v1/models")
                    with lock:
                        statuses.append(r.status_code)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert state.limiter.admitted == 0
    assert len(statuses) == 16 * 40
    assert set(statuses) == {200}
    assert loader.built["fake-a"].max_active == 1
