"""Integration on the real default model (smollm2 GGUF through llama.cpp): HTTP and batch mode."""

from __future__ import annotations

import json

import httpx
import pytest
from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow


def test_smollm2_http_matches_direct_llama_cpp_and_streams(tmp_path):
    openai = pytest.importorskip("openai")
    llama_cpp = pytest.importorskip("llama_cpp")
    from llmtools.models import gguf_file

    path = gguf_file("smollm2")
    log = tmp_path / "req.jsonl"
    srv = ServerProcess(["smollm2", "--threads", "1", "--log", str(log)])
    try:
        url = srv.wait_ready()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        (model,) = client.models.list().data
        assert model.id == "smollm2"
        entry = httpx.get(f"{url}/v1/models").json()["data"][0]
        assert entry["identity"]["format"] == "gguf" and len(entry["identity"]["sha256"]) == 64

        prompt = "The capital of France is"
        comp = client.completions.create(model="smollm2", prompt=prompt, max_tokens=8, temperature=0)
        llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=1, verbose=False)
        direct = llm.create_completion(prompt, max_tokens=8, temperature=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0)
        llm.close()
        assert comp.choices[0].text == direct["choices"][0]["text"]  # the same greedy tokens as llama.cpp itself
        assert comp.usage.completion_tokens == direct["usage"]["completion_tokens"]

        messages = [{"role": "user", "content": "Name one primary color."}]
        chat = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12)
        assert chat.choices[0].message.content.strip()
        chunks = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12, stream=True,
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

        # the continuous batcher's step timing and token counters (serve --parallel, the default)
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                  for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("llmtools_batch_")}
        assert values['llmtools_batch_step_seconds_total{phase="decode"}'] > 0
        decoded = values['llmtools_batch_tokens_total{kind="decode"}']
        assert 0 < decoded <= comp.usage.completion_tokens + 2 * chat.usage.completion_tokens
        # the streamed chat repeated the first chat's prompt: all but its last token came from the slot's cache
        evaluated = values['llmtools_batch_tokens_total{kind="prompt"}']
        assert chat.usage.prompt_tokens < evaluated <= comp.usage.prompt_tokens + chat.usage.prompt_tokens + 1
    finally:
        assert srv.stop() == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    streamed = [r for r in records if r["stream"]]
    assert len(streamed) == 1 and streamed[0]["ttft_ms"] <= streamed[0]["latency_ms"]
    assert all(r["model"]["name"] == "smollm2" and r["status"] == 200 for r in records)


def test_smollm2_batch_mode(cli):
    inp = (
        json.dumps({"id": "a", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 8}) + "\n"
        + json.dumps({"id": "b", "prompt": "One, two, three,", "max_tokens": 6, "stop": ["\n"]}) + "\n"
    )
    res = cli(["serve", "--batch", "smollm2", "--threads", "1"], input=inp)
    assert res.exit_code == 0, res.stderr
    a, b = res.records()
    assert a["id"] == "a" and a["prediction"].strip() and a["usage"]["completion_tokens"] <= 8
    assert b["id"] == "b" and "\n" not in b["prediction"] and b["_llmtools"]["model"]["format"] == "gguf"


def test_smollm2_batch_mode_decodes_records_together_with_the_same_greedy_text(cli):
    """serve --batch on llama.cpp: a window's records with equal options go through the
    continuous batcher together (generate_batch), and give the text generate() gives alone."""
    from llmtools.models import GenerationParams, load_model

    prompts = ["The capital of France is", "Once upon a time,", "The three primary colors are", "To boil an egg,",
               "A language model is"]
    inp = "".join(json.dumps({"id": i, "prompt": p, "max_tokens": 12}) + "\n" for i, p in enumerate(prompts))
    res = cli(["serve", "--batch", "smollm2", "--threads", "1", "--batch-size", "8"], input=inp)
    assert res.exit_code == 0, res.stderr
    got = res.records()
    model = load_model("smollm2", backend="llama", threads=1)
    try:
        params = GenerationParams(max_tokens=12, temperature=0.0)
        want = [model.generate(p, params) for p in prompts]
        together = model.generate_batch(prompts, params)
        assert model._batch_batcher is not None and model._batch_batcher.steps > 0  # it went through the batcher
        assert model._batch_batcher.parallel == 5
    finally:
        model.close()
    assert [r["prediction"] for r in got] == [w.text for w in want] == [c.text for c in together]
    assert [r["usage"]["completion_tokens"] for r in got] == [w.completion_tokens for w in want]
    assert [r["finish_reason"] for r in got] == [w.finish_reason for w in want]
