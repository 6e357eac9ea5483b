"""The model layer: references, registry, conversion cache, and one test body for every backend."""

from __future__ import annotations

import math
import os

import pytest

from llmtools import provenance
from llmtools.models import GenerationParams, NotSupported, gguf_file, identity_of, load_model

CHAT = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """Conversions and hash caches go to a private folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMTOOLS_CACHE", str(tmp_path_factory.mktemp("llmtools-cache")))
        yield os.environ["LLMTOOLS_CACHE"]


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir):
    return gguf_file(tiny_model_dir)


@pytest.fixture(scope="module")
def torch_model(tiny_model_dir):
    return load_model(tiny_model_dir, threads=1)


@pytest.fixture(scope="module")
def llama_model(tiny_gguf):
    pytest.importorskip("llama_cpp")
    return load_model(tiny_gguf, threads=1)


@pytest.fixture(scope="module")
def http_model(torch_model):
    from tests.helpers.openai_server import serve_backend

    with serve_backend(torch_model, api_key="test-key") as url:
        yield load_model(url, api_key="test-key", timeout=30)


@pytest.fixture(params=["torch", "llama", "http"], scope="module")
def backend(request):
    return request.getfixturevalue(f"{request.param}_model")


def _stop_from(text: str) -> str:
    """A 2-character stop sequence taken from the middle of `text` (letters or digits)."""
    for k in range(2, len(text) - 1):
        if text[k : k + 2].isalnum():
            return text[k : k + 2]
    pytest.fail(f"no usable stop sequence in {text!r}")


# -- one body, every backend


def test_greedy_generation_is_deterministic(backend):
    params = GenerationParams(max_tokens=12)
    first = backend.generate("The quick brown", params)
    second = backend.generate("The quick brown", params)
    assert first == second
    assert first.text
    assert 0 < first.completion_tokens <= 12 and first.prompt_tokens > 0
    assert first.finish_reason in ("stop", "length")


def test_max_tokens_is_respected(backend):
    for n in (1, 5):
        out = backend.generate("hello world", GenerationParams(max_tokens=n))
        assert out.completion_tokens <= n
        if out.finish_reason == "length":
            assert out.completion_tokens == n
    zero = backend.generate("hello world", GenerationParams(max_tokens=0))
    assert zero.text == "" and zero.completion_tokens == 0


def test_seeded_sampling_repeats_and_stop_sequences_cut(backend):
    params = GenerationParams(max_tokens=24, temperature=1.0, seed=7)
    full = backend.generate("Paris is the", params)
    assert backend.generate("Paris is the", params).text == full.text
    others = {backend.generate("Paris is the", GenerationParams(max_tokens=24, temperature=1.0, seed=s)).text for s in (1, 2, 3)}
    assert len(others | {full.text}) > 1, "different seeds should sample differently"
    stop = _stop_from(full.text)
    cut = backend.generate("Paris is the", GenerationParams(max_tokens=24, temperature=1.0, seed=7, stop=[stop]))
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"


def test_stream_reassembles_to_generate(backend):
    for params in (GenerationParams(max_tokens=16), GenerationParams(max_tokens=16, temperature=0.9, seed=3, top_k=20, top_p=0.9)):
        done = backend.generate("one two three", params)
        chunks = list(backend.stream("one two three", params))
        assert "".join(c.text for c in chunks) == done.text
        assert chunks[-1].finish_reason == done.finish_reason
        assert chunks[-1].completion_tokens == done.completion_tokens
        assert all(c.finish_reason is None for c in chunks[:-1])


def test_chat_uses_the_models_template(backend):
    prompt = backend.apply_chat_template(CHAT)
    assert prompt == "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    assert backend.apply_chat_template(CHAT, add_generation_prompt=False).endswith("<|im_end|>\n")
    params = GenerationParams(max_tokens=8)
    assert backend.chat(CHAT, params).text == backend.generate(prompt, params).text
    assert "".join(c.text for c in backend.chat_stream(CHAT, params)) == backend.chat(CHAT, params).text


def test_tokenize_count_detokenize(backend):
    ids = backend.tokenize("hello world")
    assert ids and all(isinstance(i, int) for i in ids)
    assert backend.count_tokens("hello world") == len(ids)
    assert backend.detokenize(ids) == "hello world"
    assert backend.count_tokens("hello world, hello there") > len(ids)


def test_loglikelihood_and_perplexity(backend):
    texts = ["hello world, hello there", "The quick brown fox jumps over the lazy dog."]
    results = backend.loglikelihood(texts)
    for text, r in zip(texts, results):
        assert math.isfinite(r.logprob) and r.logprob < 0
        assert r.n_tokens == backend.count_tokens(text) - 1  # the first token has no context
    alone = backend.loglikelihood(texts[1:])[0]
    assert alone.logprob == pytest.approx(results[1].logprob, rel=1e-4)
    ppl = backend.perplexity(texts)
    total = sum(r.logprob for r in results)
    assert ppl == pytest.approx(math.exp(-total / sum(r.n_tokens for r in results)), rel=1e-6)
    assert 1.0 < ppl < 10 * backend.count_tokens(" ".join(texts)) ** 2  # finite, above the floor
    # a random-weight model finds corpus text about as likely as shuffled text; an untrained
    # model must still give a *different* score to different texts
    assert results[0].logprob != pytest.approx(results[1].logprob)


def test_generate_batch_matches_single(backend):
    prompts = ["hello world", "The quick brown", "one two"]
    params = GenerationParams(max_tokens=6)
    batch = backend.generate_batch(prompts, params)
    assert [c.text for c in batch] == [backend.generate(p, params).text for p in prompts]


def test_embed(backend):
    vectors = backend.embed(["hello world", "the lazy dog", "hello world"])
    assert len(vectors) == 3 and len(vectors[0]) == len(vectors[1]) > 8
    assert sum(v * v for v in vectors[0]) == pytest.approx(1.0, rel=1e-3)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)


def test_identity(backend, tiny_model_dir):
    ident = backend.identity
    assert ident.format == {"torch": "hf", "llama": "gguf", "http": "http"}[backend.backend_name]
    data = ident.to_dict()
    assert set(data) == {"name", "format", "path", "sha256", "parent"}
    if backend.backend_name == "torch":
        assert ident.sha256 == provenance.sha256_dir(tiny_model_dir) and ident.name == "tiny-llama"
    elif backend.backend_name == "llama":
        assert len(ident.sha256) == 64 and ident.path.endswith(".gguf")
        assert ident.parent == f"tiny-llama@{provenance.sha256_dir(tiny_model_dir)[:12]}"
        assert ident.manifest["kind"] == "hf-to-gguf"
    else:
        assert ident.path.startswith("http://127.0.0.1:") and ident.path.endswith("/v1")
        assert ident.name == "tiny-llama"


# -- backend-specific behaviour


@pytest.mark.parametrize("name", ["torch", "llama"])
def test_sliding_window_scores_every_token_of_long_text(name, tiny_model_dir, tiny_gguf):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 6)
    ref = tiny_model_dir if name == "torch" else tiny_gguf
    full = load_model(ref, backend=name, threads=1)
    small = load_model(ref, backend=name, threads=1, n_ctx=16)
    assert small.n_ctx == 16 and small.count_tokens(text) > 3 * 16
    whole, windowed = full.loglikelihood([text])[0], small.loglikelihood([text])[0]
    assert windowed.n_tokens == whole.n_tokens == full.count_tokens(text) - 1
    assert math.isfinite(windowed.logprob)
    # less context changes the numbers, but every token is still scored exactly once
    assert windowed.logprob != whole.logprob
    small.close()


def test_llama_f32_gguf_scores_like_torch(torch_model, llama_model):
    texts = ["The quick brown fox jumps over the lazy dog.", "hello world, hello again and goodbye"]
    for a, b in zip(torch_model.loglikelihood(texts), llama_model.loglikelihood(texts)):
        assert a.n_tokens == b.n_tokens
        assert a.logprob == pytest.approx(b.logprob, rel=1e-3)
    params = GenerationParams(max_tokens=10)
    assert torch_model.generate("Paris is", params).text == llama_model.generate("Paris is", params).text


def test_chat_without_template_falls_back_to_a_transcript(tiny_model_dir, tmp_path, capsys):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    import json

    data = json.loads((plain / "tokenizer_config.json").read_text())
    data.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(data))
    model = load_model(plain, threads=1)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert model.apply_chat_template(messages) == "system: Be brief.\nuser: hi\nassistant:"
    model.apply_chat_template(messages)
    err = capsys.readouterr().err
    assert err.count("has no chat template") == 1


def test_http_retries_on_429_and_5xx_then_succeeds(http_model):
    from tests.helpers.openai_server import serve_backend

    server = serve_backend.last
    server.faults[:] = [503, 429, 502]
    http_model.http.backoff = 0.01
    before = len(server.requests)
    out = http_model.generate("hello world", GenerationParams(max_tokens=3))
    assert out.completion_tokens <= 3 and not server.faults
    assert len(server.requests) - before == 4
    server.faults[:] = [503, 503, 503, 503]
    with pytest.raises(Exception) as info:
        http_model.generate("hello world", GenerationParams(max_tokens=3))
    assert "failed after 4 attempts" in str(info.value) and "HTTP 503" in str(info.value)
    server.faults.clear()


def test_http_stream_retries_before_the_first_event(http_model):
    from tests.helpers.openai_server import serve_backend

    serve_backend.last.faults[:] = [500]
    http_model.http.backoff = 0.01
    params = GenerationParams(max_tokens=5)
    assert "".join(c.text for c in http_model.stream("hello", params)) == http_model.generate("hello", params).text


def test_http_batch_runs_concurrently_and_keeps_order(http_model):
    from tests.helpers.openai_server import serve_backend

    server = serve_backend.last
    server.max_in_flight = 0
    prompts = [f"hello {w}" for w in ("one", "two", "three", "four", "five", "six")]
    params = GenerationParams(max_tokens=4)
    batch = http_model.generate_batch(prompts, params)
    assert 1 < server.max_in_flight <= http_model.concurrency
    assert [c.text for c in batch] == [http_model.generate(p, params).text for p in prompts]


def test_http_missing_endpoints_are_not_supported(http_model):
    from tests.helpers.openai_server import serve_backend

    server = serve_backend.last
    server.disabled.update({"/tokenize", "/v1/embeddings", "/apply-template", "echo"})
    try:
        calls = (
            lambda: http_model.tokenize("hi"),
            lambda: http_model.embed(["hi"]),
            lambda: http_model.apply_chat_template(CHAT),
            lambda: http_model.loglikelihood(["hello world"]),
        )
        for call in calls:
            with pytest.raises(NotSupported) as info:
                call()
            assert info.value.exit_code == 4
        assert http_model.chat(CHAT, GenerationParams(max_tokens=3)).completion_tokens <= 3  # chat still works
    finally:
        server.disabled.clear()


def test_http_bad_key_and_unreachable_endpoint(torch_model):
    from tests.helpers.openai_server import serve_backend

    with serve_backend(torch_model, api_key="right") as url:
        with pytest.raises(Exception) as info:
            load_model(url, api_key="wrong")
        assert "401" in str(info.value) and "--api-key" in str(info.value)
        ident = identity_of(url, api_key="right")
        assert ident.format == "http" and ident.sha256 == torch_model.identity.sha256
    with pytest.raises(Exception) as info:
        load_model(url, retries=1, backoff=0.01, timeout=2)  # the server is gone
    assert "failed after 2 attempts" in str(info.value)


def test_api_key_comes_from_the_environment(torch_model, monkeypatch):
    from tests.helpers.openai_server import serve_backend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("LLMTOOLS_API_KEY", "from-env")
    with serve_backend(torch_model, api_key="from-env") as url:
        assert load_model(url).model == "tiny-llama"


# -- llama.cpp threads: decoding (n_threads) and prompt batches (n_threads_batch)


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv("LLMTOOLS_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


def test_llama_threads_default_to_half_the_cores_decoding_and_all_for_prompts(no_thread_env):
    from llmtools.models import llama_backend

    no_thread_env.setattr(llama_backend, "available_cpus", lambda: 8)
    assert llama_backend.llama_threads() == (4, 8)  # what llama_cpp.server picks
    no_thread_env.setattr(llama_backend, "available_cpus", lambda: 1)
    assert llama_backend.llama_threads() == (1, 1)
    no_thread_env.setattr(llama_backend, "available_cpus", lambda: 2)
    assert llama_backend.llama_threads(batch_threads=1) == (1, 1)


def test_llama_threads_a_given_budget_covers_both_unless_batch_threads_says_otherwise(no_thread_env):
    from llmtools.models import llama_backend

    no_thread_env.setattr(llama_backend, "available_cpus", lambda: 8)
    assert llama_backend.llama_threads(threads=1) == (1, 1)
    assert llama_backend.llama_threads(threads=1, batch_threads=8) == (1, 8)
    no_thread_env.setenv("OMP_NUM_THREADS", "2")
    assert llama_backend.llama_threads() == (2, 2)
    assert llama_backend.llama_threads(batch_threads=4) == (2, 4)
    no_thread_env.setenv("LLMTOOLS_THREADS", "3")  # ours wins over the generic OpenMP knob
    assert llama_backend.llama_threads() == (3, 3)
    assert llama_backend.llama_threads(threads=1) == (1, 1)  # and the explicit option over both
    no_thread_env.setenv("LLMTOOLS_THREADS", "junk")
    assert llama_backend.llama_threads() == (2, 2)


def test_llama_backend_passes_both_thread_counts_to_llama_cpp(tiny_gguf, no_thread_env):
    pytest.importorskip("llama_cpp")
    from llmtools.models.llama_backend import available_cpus

    model = load_model(tiny_gguf, threads=1, batch_threads=2)
    try:
        assert (model.llm.n_threads, model.llm.n_threads_batch) == (1, 2)
        assert model.llm.context_params.n_threads_batch == 2
    finally:
        model.close()
    model = load_model(tiny_gguf)
    try:
        cpus = available_cpus()
        assert (model.llm.n_threads, model.llm.n_threads_batch) == (max(cpus // 2, 1), cpus)
    finally:
        model.close()


def test_serve_batch_threads_option_reaches_the_loader(cli, monkeypatch):
    from llmtools.ops import serve as ops

    seen = {}

    def fake_make_loader(**opts):
        seen.update(opts)

        def load(ref):
            raise SystemExit(0)

        return load

    monkeypatch.setattr(ops, "make_loader", fake_make_loader)
    cli(["serve", "--batch", "smollm2", "--threads", "1", "--batch-threads", "2"], input="")
    assert seen["threads"] == 1 and seen["batch_threads"] == 2


def test_gguf_context_length_reads_the_header_without_the_gguf_package(tiny_gguf, tmp_path):
    import subprocess
    import sys

    from gguf import GGUFReader

    from llmtools.models.llama_backend import gguf_context_length

    reader = GGUFReader(tiny_gguf)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    field = reader.fields[f"{arch}.context_length"]
    assert gguf_context_length(tiny_gguf) == int(field.parts[field.data[0]][0])
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 5)  # truncated
    assert gguf_context_length(str(bad)) is None
    assert gguf_context_length(str(tmp_path / "missing.gguf")) is None
    # importing gguf drags in sentencepiece and its own OpenMP runtime; loading a model must not
    code = (
        "import sys; from llmtools.models import load_model; load_model(sys.argv[1], threads=1); "
        "print(sorted(m for m in ('gguf', 'sentencepiece') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, tiny_gguf], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
