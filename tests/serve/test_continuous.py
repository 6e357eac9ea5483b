"""`serve --parallel N`: continuous batching through the HTTP server.

The first tests drive the server's BatchingRunner with a fake batcher (the same interface as
llama_batching.ContinuousBatcher, one word per step), so the server side (streaming, limits,
cancel, metrics, drain, blue/green) is checked in seconds; the slow ones use the real smollm2 GGUF.
"""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest
from tests.helpers.fake_backend import ContinuousFake, Loader, running_server

from llmtools.ops.serve import KeepPolicy


def chat(text="hello there", **kw):
    return {"model": "fake-a", "messages": [{"role": "user", "content": text}], **kw}


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def stream_words(url: str, body: dict) -> tuple[list[str], str | None]:
    words, finish = [], None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice["delta"].get("content"):
                words.append(choice["delta"]["content"])
            finish = choice["finish_reason"] or finish
    return words, finish


def test_concurrent_requests_share_steps_and_the_batch_size_histogram_counts_them():
    loader = Loader(cls=ContinuousFake, delay=0.02)
    with running_server(loader, parallel=4, max_concurrency=4) as (url, state):
        results = [None] * 4

        def one(i):
            results[i] = stream_words(url, chat(" ".join(f"w{i}-{k}" for k in range(10)), max_tokens=50))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for i, (words, finish) in enumerate(results):
            assert "".join(words).split()[-2:] == [f"w{i}-9", "assistant:"] and finish == "stop"
        batcher = loader.built["fake-a"].batchers[0]
        assert max(batcher.sizes) == 4  # the four ran in the same steps
        text = httpx.get(f"{url}/metrics").text
        steps = metric(text, "llmtools_batch_size_count")
        assert steps == len(batcher.sizes)
        assert metric(text, "llmtools_batch_size_bucket", '{le="3.0"}') < steps  # some steps held all 4


def test_parallel_bounds_the_slots_and_max_concurrency_the_requests():
    loader = Loader(cls=ContinuousFake, delay=0.01)
    with running_server(loader, parallel=2, max_concurrency=3, max_queue=10) as (url, state):
        bodies = [{"model": "fake-a", "prompt": " ".join(["x"] * 8), "max_tokens": 8} for _ in range(6)]
        out = [None] * 6
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, httpx.post(f"{url}/v1/completions", json=bodies[i], timeout=30)))
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [r.status_code for r in out] == [200] * 6
        assert max(loader.built["fake-a"].batchers[0].sizes) == 2
        assert state.limiter.admitted == 0


def test_list_prompt_runs_as_sequences_of_one_request():
    loader = Loader(cls=ContinuousFake)
    with running_server(loader, parallel=4) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": ["a b", "c d e"], "max_tokens": 10})
        body = r.json()
        assert [c["text"] for c in body["choices"]] == ["fake-a a b", "fake-a c d e"]
        assert body["usage"]["completion_tokens"] == 7


def test_client_disconnect_frees_the_slot_at_the_next_step():
    loader = Loader(cls=ContinuousFake, delay=0.05)
    with running_server(loader, parallel=2) as (url, state):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat(" ".join(["w"] * 400), max_tokens=400, stream=True)) as r:
            lines = r.iter_lines()
            for _ in range(4):
                next(lines)
        batcher = loader.built["fake-a"].batchers[0]
        deadline = time.monotonic() + 5
        while batcher.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.running == 0 and state.limiter.admitted == 0
        steps = len(batcher.sizes)
        assert steps < 60  # it did not run on to 400 words


def test_timeout_stops_a_sequence_with_504():
    loader = Loader(cls=ContinuousFake, delay=0.05)
    with running_server(loader, parallel=2, timeout=0.4) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": " ".join(["w"] * 200), "max_tokens": 200})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        batcher = loader.built["fake-a"].batchers[0]
        deadline = time.monotonic() + 2
        while batcher.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.running == 0 and len(batcher.sizes) < 40  # stopped at the next step, not after 200


def test_blue_green_swap_gives_the_new_version_its_own_batcher_and_drains_the_old():
    loader = Loader(cls=ContinuousFake, delay=0.02)
    with running_server(loader, parallel=2, admin_keys=("adm",), keep=KeepPolicy(count=0)) as (url, state):
        done = {}

        def long_stream():
            done["v1"] = stream_words(url, chat(" ".join(["w"] * 30), max_tokens=30))

        t = threading.Thread(target=long_stream)
        t.start()
        time.sleep(0.15)
        r = httpx.post(f"{url}/admin/models/load", json={"model": "fake-b"}, headers={"Authorization": "Bearer adm"}, timeout=30)
        assert r.status_code == 200
        t.join(30)
        words, finish = done["v1"]
        assert len("".join(words).split()) == 30 and finish == "length"  # the old version finished its stream
        old, new = loader.built["fake-a"].batchers[0], loader.built["fake-b"].batchers[0]
        assert old is not new
        r = httpx.post(f"{url}/v1/completions", json={"model": "fake-a", "prompt": "p q", "max_tokens": 5})
        assert r.json()["choices"][0]["text"] == "fake-b p q"
        deadline = time.monotonic() + 5
        while not (old.closed and loader.built["fake-a"].closed) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert old.closed and loader.built["fake-a"].closed  # batcher stopped, then the model freed


def test_refusal_null_on_the_batching_path():
    with running_server(Loader(cls=ContinuousFake), parallel=2) as (url, _):
        msg = httpx.post(f"{url}/v1/chat/completions", json=chat("hi")).json()["choices"][0]["message"]
        assert msg == {"role": "assistant", "content": "fake-a user: hi assistant:", "refusal": None}


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def smollm2_url():
    pytest.importorskip("llama_cpp")
    from llmtools.models import load_model

    with running_server(lambda ref: load_model("smollm2", backend="llama", threads=1), model_ref="smollm2",
                        parallel=8, max_concurrency=8) as (url, state):
        yield url, state


@pytest.mark.slow
def test_smollm2_same_seed_same_text_alone_and_concurrently_over_http(smollm2_url):
    url, state = smollm2_url
    questions = ["Name a fruit.", "What is 2+2?", "Say hello.", "Name a colour.", "Pick a number.", "Name an animal.",
                 "What is rain?", "Name a city."]
    bodies = [{"model": "smollm2", "messages": [{"role": "user", "content": q}], "max_tokens": 16, "temperature": 0.8,
               "seed": 7 + i} for i, q in enumerate(questions)]

    def ask(body):
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    alone = [ask(b) for b in bodies]
    together: list = [None] * 8
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, ask(bodies[i]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert together == alone
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, "llmtools_batch_size_bucket", '{le="4.0"}') < metric(text, "llmtools_batch_size_count")


@pytest.mark.slow
def test_smollm2_stream_and_disconnect_over_http(smollm2_url):
    url, state = smollm2_url
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 12}
    words, finish = stream_words(url, body)
    full = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()
    assert "".join(words) == full["choices"][0]["message"]["content"] and finish == full["choices"][0]["finish_reason"]
    batcher = state.manager.active.runner.batcher
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "max_tokens": 1000, "stream": True}) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 10
    while batcher.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.running == 0


@pytest.mark.slow
def test_smollm2_sigterm_lets_the_running_sequences_finish(tmp_path):
    """SIGTERM under --parallel: the sequences in the batch run to their end, then exit 0."""
    pytest.importorskip("llama_cpp")
    import signal

    from tests.helpers.server_process import ServerProcess

    log = tmp_path / "req.jsonl"
    srv = ServerProcess(["smollm2", "--threads", "1", "--parallel", "4", "--log", str(log)])
    try:
        url = srv.wait_ready()
        results: dict[int, list[str]] = {}
        started = [threading.Event() for _ in range(3)]

        def stream(i: int) -> None:
            body = {"prompt": f"Count to a hundred, item {i}:", "max_tokens": 40, "stream": True}
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as r:
                lines = []
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                        started[i].set()
            results[i] = lines
            started[i].set()

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for e in started:
            assert e.wait(120)
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(300)
        assert srv.proc.wait(120) == 0, "\n".join(srv.lines)
    finally:
        srv.stop()
    for lines in results.values():
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
    assert [json.loads(x)["status"] for x in log.read_text().splitlines()].count(200) == 3


@pytest.mark.slow
def test_stress_16_clients_x_200_mixed_requests_no_5xx_and_flat_rss():
    """16 clients x 200 requests (completions, streamed chat, list prompts; 1-24 tokens) through
    the batching runner: every answer 200, nothing left admitted, and the process's RSS after
    warm-up does not grow (the real-model run is benchmarks/serve/stress.py)."""
    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

    loader = Loader(cls=ContinuousFake)
    statuses: dict[int, int] = {}
    samples: list[tuple[int, float]] = []
    lock = threading.Lock()
    with running_server(loader, parallel=8, max_concurrency=8, max_queue=64) as (url, state):
        def client(i: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                for n in range(200):
                    words = " ".join(["w"] * (1 + (i * 7 + n) % 24))
                    kind = n % 4
                    if kind == 0:
                        with c.stream("POST", "/v1/chat/completions", json=chat(words, max_tokens=24, stream=True)) as r:
                            ok = r.status_code == 200 and [x for x in r.iter_lines() if x][-1] == "data: [DONE]"
                            status = r.status_code if ok else 599
                    elif kind == 1:
                        status = c.post("/v1/completions", json={"model": "fake-a", "prompt": [words, "a b"], "max_tokens": 24}).status_code
                    else:
                        status = c.post("/v1/completions", json={"model": "fake-a", "prompt": words, "max_tokens": 1 + n % 24}).status_code
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                        done = sum(statuses.values())
                        if done % 200 == 0:
                            samples.append((done, rss_mb()))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert statuses == {200: 3200}
        assert state.limiter.admitted == 0 and loader.built["fake-a"].batchers[0].running == 0
    warm = next(mb for n, mb in samples if n >= 800)
    assert samples[-1][1] <= warm * 1.10 + 20, samples
