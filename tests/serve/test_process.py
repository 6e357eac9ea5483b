"""`llmtools serve` as a real process on the tiny model: SIGTERM drain, SIGHUP blue/green,
the `openai` client, curl, and batch mode piped into `llmtools score`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.server_process import ENV, ServerProcess


@pytest.fixture
def server_factory():
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        proc = ServerProcess(list(args))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0(tiny_model_dir, server_factory, tmp_path):
    log = tmp_path / "requests.jsonl"
    srv = server_factory(tiny_model_dir, "--log", str(log), "--max-tokens-cap", "512", "--max-concurrency", "1")
    url = srv.wait_ready()
    body = {"prompt": "hello world", "max_tokens": 200, "temperature": 1.0, "seed": 1, "stream": True}
    results: dict[int, tuple[int, list[str]]] = {}
    first_chunk = [threading.Event() for _ in range(4)]

    def stream(i: int) -> None:
        lines = []
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "seed": i}, timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    if line.startswith("data: {"):
                        first_chunk[i].set()
            results[i] = (r.status_code, lines)
        first_chunk[i].set()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    assert first_chunk[0].wait(60)  # request 0 is generating
    # Wait until 1-3 are admitted too: on a busy machine their threads may not have connected yet,
    # and a request that arrives after SIGTERM is rightly refused.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
        # admitted = still waiting or running + already answered
        admitted = sum(float(line.split()[-1]) for line in metrics if line.startswith("llmtools_requests_in_flight"))
        admitted += sum(float(line.split()[-1]) for line in metrics if line.startswith('llmtools_requests_total{endpoint="completions"'))
        if admitted >= 4:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the four requests were never all admitted")
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    refused = None
    try:
        refused = httpx.post(f"{url}/v1/completions", json={"prompt": "late"}, timeout=10).status_code
    except httpx.TransportError:
        refused = "connection refused"
    assert refused in (503, "connection refused")
    for t in threads:
        t.join(120)
    assert srv.proc.wait(60) == 0, "\n".join(srv.lines)
    assert sorted(results) == [0, 1, 2, 3]
    for status, lines in results.values():
        assert status == 200
        assert lines[-1] == "data: [DONE]"
        final = json.loads(lines[-2][len("data: "):])
        assert final["choices"][0]["finish_reason"] in ("stop", "length")
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in logged].count(200) == 4
    assert any("draining" in line for line in srv.lines)


@pytest.mark.slow
def test_sighup_rereads_model_file_and_swaps_blue_green(tiny_model_dir, server_factory, tmp_path):
    from tests.helpers.tiny import build_tiny_llama

    green = build_tiny_llama(tmp_path / "green", seed=7)
    pointer = tmp_path / "current-model.txt"
    pointer.write_text(f"# the model to serve\n{tiny_model_dir}\n")
    srv = server_factory("--model-file", str(pointer), "--model-name", "svc")
    url = srv.wait_ready()
    before = httpx.get(f"{url}/v1/models").json()
    assert before["active_version"] == 1 and before["data"][0]["id"] == "svc"
    pointer.write_text(f"{green}\n")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/v1/models").json()["active_version"] != 2:
        assert time.monotonic() < deadline, "\n".join(srv.lines)
        time.sleep(0.2)
    after = httpx.get(f"{url}/v1/models").json()
    assert after["data"][0]["ref"] == str(green)
    assert after["data"][0]["identity"]["sha256"] != before["data"][0]["identity"]["sha256"]
    assert [v["state"] for v in after["versions"]] == ["active", "standby"]
    r = httpx.post(f"{url}/v1/completions", json={"model": "svc", "prompt": "hi", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["system_fingerprint"] == after["versions"][0]["id"]
    assert srv.stop() == 0


@pytest.mark.slow
def test_openai_client_chat_stream_completions_models_embeddings(tiny_model_dir, server_factory):
    openai = pytest.importorskip("openai")
    srv = server_factory(tiny_model_dir, "--api-key", "sk-test")
    url = srv.wait_ready()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
    name = Path(tiny_model_dir).name

    models = client.models.list()
    assert [m.id for m in models.data] == [name]

    chat = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hello"}], max_tokens=6)
    assert chat.object == "chat.completion"
    assert isinstance(chat.choices[0].message.content, str) and chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens <= 6 and chat.usage.prompt_tokens > 0

    chunks = list(client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hello"}],
                                                 max_tokens=6, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content  # greedy: the same text either way
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    comp = client.completions.create(model=name, prompt="the quick brown", max_tokens=5)
    assert comp.object == "text_completion" and comp.usage.completion_tokens <= 5

    emb = client.embeddings.create(model=name, input=["hello world", "goodbye"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 64

    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert srv.stop() == 0


@pytest.mark.slow
@pytest.mark.sysdep("curl")
def test_curl_chat_auth_and_errors(tiny_model_dir, server_factory, tmp_path):
    curl = shutil.which("curl")
    srv = server_factory(tiny_model_dir, "--api-key", "k1", "--max-body", "2k")
    url = srv.wait_ready()

    def run(*args: str) -> tuple[int, dict | str]:
        out = subprocess.run([curl, "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60)
        body, _, code = out.stdout.rpartition("\n")
        try:
            return int(code), json.loads(body)
        except ValueError:
            return int(code), body

    name = Path(tiny_model_dir).name
    data = json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    auth = ["-H", "Authorization: Bearer k1", "-H", "Content-Type: application/json"]
    code, body = run(f"{url}/v1/chat/completions", *auth, "-d", data)
    assert code == 200 and body["object"] == "chat.completion"
    code, body = run(f"{url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", data)
    assert code == 401 and body["error"]["code"] == "invalid_api_key"
    code, body = run(f"{url}/v1/chat/completions", *auth, "-d", "{not json")
    assert code == 400 and body["error"]["code"] == "invalid_json"
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"model": name, "prompt": "x" * 5000}))
    code, body = run(f"{url}/v1/completions", *auth, "--data-binary", f"@{big}")
    assert code == 413 and body["error"]["code"] == "request_too_large"
    code, body = run(f"{url}/v1/completions", *auth, "-d", json.dumps({"model": "other", "prompt": "x"}))
    assert code == 404 and body["error"]["code"] == "model_not_found"
    code, body = run(f"{url}/v1/chat/completions", *auth, "-N", "-d", json.dumps({**json.loads(data), "stream": True}))
    assert code == 200 and body.rstrip().endswith("data: [DONE]")
    code, body = run(f"{url}/health")
    assert code == 200 and body["status"] == "ok"
    code, body = run(f"{url}/metrics", "-H", "Authorization: Bearer k1")
    assert code == 200 and 'llmtools_requests_total{endpoint="chat",status="401"} 1.0' in body


@pytest.mark.slow
def test_batch_mode_piped_into_score(tiny_model_dir, tmp_path):
    records = [
        {"id": i, "prompt": f"hello world {i}", "reference": "hello world", "max_tokens": 4} for i in range(5)
    ] + [{"id": 5, "messages": [{"role": "user", "content": "hi"}], "reference": "hi", "max_tokens": 3}]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    serve = subprocess.Popen([sys.executable, "-m", "llmtools", "serve", "--batch", tiny_model_dir, "--batch-size", "4"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    has_score = Path(__file__).resolve().parents[2].joinpath("src/llmtools/commands/score.py").exists()
    if has_score:
        downstream = [sys.executable, "-m", "llmtools", "score", "--metric", "exact_match,rouge"]
    else:  # score is written by another helper; until it lands, check the records the same way it would read them
        downstream = [sys.executable, "-c", "import sys, json; [print(json.dumps({'ok': isinstance(json.loads(l)['prediction'], str)})) for l in sys.stdin]"]
    score = subprocess.Popen(downstream, stdin=serve.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    serve.stdout.close()
    serve.stdin.write(data)
    serve.stdin.close()
    out, err = score.communicate(timeout=300)
    assert serve.wait(60) == 0, serve.stderr.read().decode()
    assert score.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    if has_score:
        assert [r["id"] for r in lines[:-1]] == list(range(len(records)))
        assert all(set(r["scores"]) >= {"exact_match", "rougeL"} and isinstance(r["prediction"], str) for r in lines[:-1])
        assert lines[-1]["_summary"] is True and lines[-1]["n"] == len(records)
    else:
        assert lines == [{"ok": True}] * len(records)


def test_batch_mode_records_in_order_with_usage_and_identity(cli, tiny_model_dir):
    records = [{"id": i, "prompt": "one two three", "max_tokens": 1 + i % 3, "temperature": 0} for i in range(7)]
    records.append({"id": 7, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2, "meta": {"k": 1}})
    inp = "".join(json.dumps(r) + "\n" for r in records)
    res = cli(["serve", "--batch", tiny_model_dir, "--batch-size", "3"], input=inp)
    assert res.exit_code == 0, res.stderr
    out = res.records()
    assert [r["id"] for r in out] == list(range(8))
    for rec, src in zip(out, records):
        assert {k: rec[k] for k in src} == src  # input fields kept
        assert isinstance(rec["prediction"], str)
        assert rec["usage"]["completion_tokens"] <= src["max_tokens"]
        assert rec["usage"]["total_tokens"] == rec["usage"]["prompt_tokens"] + rec["usage"]["completion_tokens"]
        assert rec["_llmtools"]["model"]["name"] == Path(tiny_model_dir).name and rec["_llmtools"]["latency_ms"] >= 0
        assert rec["finish_reason"] in ("stop", "length")
    # greedy: the same prompt and options give the same text, batched or alone
    single = cli(["serve", "--batch", tiny_model_dir, "--batch-size", "1"], input=json.dumps(records[4]) + "\n").records()
    assert single[0]["prediction"] == out[4]["prediction"]


def test_batch_mode_bad_records_follow_on_error(cli, tiny_model_dir, tmp_path):
    inp = '{"prompt": "ok", "max_tokens": 2}\n{"prompt": 5}\n{"prompt": "x", "temperature": "hot"}\nnot json\n'
    res = cli(["serve", "--batch", tiny_model_dir], input=inp)
    assert res.exit_code == 3 and "<stdin>:2" in res.stderr
    rejects = tmp_path / "rej.jsonl"
    res = cli(["serve", "--batch", tiny_model_dir, "--on-error", "skip", "--rejects", str(rejects), "-q"], input=inp)
    assert res.exit_code == 0
    assert len(res.records()) == 1 and res.records()[0]["usage"]["completion_tokens"] <= 2
    reasons = [json.loads(line)["reason"] for line in rejects.read_text().splitlines()]
    assert len(reasons) == 3 and "temperature" in reasons[1]
    res = cli(["serve", "--batch", tiny_model_dir, "--on-error", "keep", "-q"], input=inp)
    kept = res.records()
    assert len(kept) == 3 and kept[1] == {"prompt": 5} and "prediction" not in kept[2]


def test_usage_errors(cli, tmp_path):
    assert cli(["serve", "--keep-previous", "soon"]).exit_code == 2
    assert cli(["serve", "--max-body", "lots"]).exit_code == 2
    assert cli(["serve", "smollm2", "some.jsonl"]).exit_code == 2
    assert cli(["serve", "smollm2", "--model-file", str(tmp_path / "f")]).exit_code == 2
    res = cli(["serve", "--batch", str(tmp_path / "no-such-model")], input='{"prompt": "x"}\n')
    assert res.exit_code in (2, 4) and "Traceback" not in res.stderr


def test_port_in_use_is_a_usage_error(cli):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = cli(["serve", "smollm2", "--port", str(port)])
    assert res.exit_code == 2 and "cannot listen" in res.stderr
