"""The continuous batcher (models/llama_batching.py) on the real default model, smollm2 GGUF."""

from __future__ import annotations

import threading
import time

import pytest

from llmtools.errors import LLMToolsError
from llmtools.models import GenerationParams, load_model

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "To boil an egg, first",
    "A language model is",
    "The sky is blue because",
    "My favourite planet is",
    "Here is a haiku about the sea:",
]


@pytest.fixture(scope="module")
def backend():
    model = load_model("smollm2", backend="llama", threads=1)
    yield model
    model.close()


@pytest.fixture
def batcher(backend):
    made = []

    def make(**kw):
        b = backend.batcher(**{"parallel": 8, **kw})
        made.append(b)
        return b

    yield make
    for b in made:
        b.close(drain=False)


def seeded(i: int, **kw) -> GenerationParams:
    return GenerationParams(**{"max_tokens": 24, "temperature": 0.9, "top_p": 0.95, "top_k": 40, "seed": 100 + i, **kw})


def run_all(b, prompts, params) -> list:
    """Submit every prompt at once; wait for all; return outcomes in order."""
    from llmtools.models.llama_batching import SeqRequest

    out: list = [None] * len(prompts)
    left = threading.Semaphore(0)
    for i, (prompt, p) in enumerate(zip(prompts, params)):
        def done(value, i=i):
            out[i] = value
            left.release()

        b.submit(SeqRequest(prompt, p, on_done=done))
    for _ in prompts:
        assert left.acquire(timeout=300)
    return out


def test_greedy_matches_the_one_at_a_time_backend(backend, batcher):
    b = batcher(parallel=4)
    params = GenerationParams(max_tokens=12, temperature=0.0)
    together = run_all(b, PROMPTS[:4], [params] * 4)
    for prompt, got in zip(PROMPTS[:4], together):
        want = backend.generate(prompt, params)
        assert (got.text, got.prompt_tokens, got.completion_tokens, got.finish_reason) == (
            want.text, want.prompt_tokens, want.completion_tokens, want.finish_reason)


def test_same_seed_same_text_alone_and_among_seven_others(batcher):
    """The issue's determinism test: 8 seeded, sampled requests, one at a time and all at once."""
    b = batcher(parallel=8)
    params = [seeded(i) for i in range(8)]
    alone = [run_all(b, [p], [q])[0] for p, q in zip(PROMPTS, params)]
    together = run_all(b, PROMPTS, params)
    assert [c.text for c in together] == [c.text for c in alone]
    assert len({c.text for c in alone}) == 8 and all(c.completion_tokens > 0 for c in alone)
    # and a different seed does draw differently (the seed reaches the sampler)
    other = run_all(b, PROMPTS[:1], [seeded(50)])[0]
    assert other.text != alone[0].text


def test_per_sequence_max_tokens_and_stop(batcher):
    b = batcher(parallel=4)
    outs = run_all(b, ["One, two, three, four, five,"] * 3, [
        GenerationParams(max_tokens=3),
        GenerationParams(max_tokens=20, stop=(",",)),
        GenerationParams(max_tokens=0),
    ])
    assert outs[0].finish_reason == "length" and outs[0].completion_tokens == 3
    assert outs[1].finish_reason == "stop" and "," not in outs[1].text and outs[1].completion_tokens >= 1
    assert (outs[2].text, outs[2].completion_tokens, outs[2].finish_reason) == ("", 0, "length")


def test_more_requests_than_slots_all_finish_and_free_their_kv(backend, batcher):
    b = batcher(parallel=2)
    outs = run_all(b, PROMPTS, [GenerationParams(max_tokens=4 + i) for i in range(8)])
    assert [o.completion_tokens for o in outs] == [4 + i for i in range(8)]
    deadline = time.monotonic() + 10
    while b.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.running == 0 and b.queued == 0
    lc = backend.llama_cpp
    for slot in range(2):  # each slot's stream holds exactly what it keeps for prefix reuse
        assert lc.llama_memory_seq_pos_max(b._mem, slot) == len(b._cached[slot]) - 1 > 0
    u = batcher(parallel=2, unified=True)  # a unified cache frees a leaving sequence's cells
    run_all(u, PROMPTS[:3], [GenerationParams(max_tokens=3)] * 3)
    deadline = time.monotonic() + 10
    while u.running and time.monotonic() < deadline:
        time.sleep(0.01)
    for slot in range(2):
        assert lc.llama_memory_seq_pos_max(u._mem, slot) == -1 and not u._cached[slot]


def test_a_slot_reuses_a_shared_prefix_and_gives_the_same_text(backend, batcher):
    """Two chat requests share the template's system prompt: the second evaluates only what
    differs, and its seeded text is the same as from a batcher that held nothing."""
    first, second = (backend.apply_chat_template([{"role": "user", "content": q}])
                     for q in ("Name a colour.", "Write a line about the moon."))
    params = seeded(3)
    want = batcher(parallel=2).generate(second, params)
    b = batcher(parallel=2)
    b.generate(first, GenerationParams(max_tokens=4))
    assert b.reused == 0
    got = b.generate(second, params)
    n_first = len(backend.tokenize(first, add_special=True))
    assert 10 < b.reused < n_first
    assert (got.text, got.prompt_tokens, got.completion_tokens) == (want.text, want.prompt_tokens, want.completion_tokens)
    # the same prompt again: everything but its last token comes from the cache
    before = b.reused
    again = b.generate(second, params)
    assert b.reused - before == got.prompt_tokens - 1 and again.text == want.text


def test_stream_yields_tokens_as_they_come_and_ends_with_counts(batcher):
    b = batcher(parallel=2)
    chunks = list(b.stream(PROMPTS[0], GenerationParams(max_tokens=8)))
    *texts, last = chunks
    assert len(texts) >= 2 and all(c.text for c in texts)
    assert (last.finish_reason, last.completion_tokens) == ("length", 8) and last.prompt_tokens > 0
    assert "".join(c.text for c in texts) == b.generate(PROMPTS[0], GenerationParams(max_tokens=8)).text


def test_cancel_frees_the_slot_within_one_step(batcher):
    steps = []
    b = batcher(parallel=2, on_step=lambda n, t: steps.append(n))
    stream = b.stream(PROMPTS[1], GenerationParams(max_tokens=500))
    for _ in range(3):
        next(stream)
    assert b.running == 1
    stream.close()  # what the server does when the client disconnects
    at_cancel = len(steps)
    deadline = time.monotonic() + 10
    while b.running and time.monotonic() < deadline:
        time.sleep(0.001)
    assert b.running == 0
    assert len(steps) - at_cancel <= 1  # it left before a second step ran
    assert b.generate(PROMPTS[0], GenerationParams(max_tokens=2)).completion_tokens == 2


def test_prompt_that_fills_the_context_fails_alone(backend, batcher):
    b = batcher(parallel=2, n_ctx=64)
    long_prompt = " ".join(["word"] * 600)  # llama.cpp gives a slot at least 256 cells
    outs = run_all(b, [long_prompt, PROMPTS[0]], [GenerationParams(max_tokens=4)] * 2)
    assert isinstance(outs[0], LLMToolsError) and "context" in str(outs[0])
    assert outs[1].completion_tokens == 4


def test_a_long_prompt_is_evaluated_in_chunks_between_decode_steps(backend, batcher):
    """Fairness: a 2,000-token prompt arriving while 4 short requests stream holds none of their
    next tokens much longer than one prompt chunk takes (measured here, on this machine)."""
    from llmtools.models.llama_batching import SeqRequest

    chunk = 256
    b = batcher(parallel=5, n_ctx=2048, chunk=chunk)
    long_prompt = " ".join(f"item{i}" for i in range(515))
    n_long = len(backend.tokenize(long_prompt, add_special=True))
    assert 1900 <= n_long < 2048
    # one chunk's time, measured alone: a prompt of at most one chunk, one token generated (prompts
    # that share no prefix with each other or the long one, so no slot's cache shortens them)
    def one_chunk(word: str) -> str:
        text = backend.detokenize(backend.tokenize(" ".join(f"{word}{i}" for i in range(200)))[: chunk - 16])
        assert len(backend.tokenize(text, add_special=True)) <= chunk
        return text

    b.generate(one_chunk("warm"), GenerationParams(max_tokens=1))  # warm-up
    t0 = time.monotonic()
    b.generate(one_chunk("timed"), GenerationParams(max_tokens=1))
    chunk_s = time.monotonic() - t0
    assert b.reused <= 2  # (a BOS token at most)

    stamps: list[list[float]] = [[] for _ in range(4)]
    done = threading.Semaphore(0)
    long_done = threading.Event()
    for i in range(4):  # they stream until the long prompt is through, then leave (cancelled)
        b.submit(SeqRequest(PROMPTS[i], GenerationParams(max_tokens=1000), cancelled=long_done.is_set,
                            on_text=lambda t, i=i: stamps[i].append(time.monotonic()), on_done=lambda v: done.release()))
    while min(len(s) for s in stamps) < 3:
        time.sleep(0.005)
    t_long = time.monotonic()
    b.submit(SeqRequest(long_prompt, GenerationParams(max_tokens=1), on_done=lambda v: long_done.set()))
    assert long_done.wait(900)
    t_long_end = time.monotonic()
    for _ in range(4):
        assert done.acquire(timeout=60)
    gaps = [b2 - a for s in stamps for a, b2 in zip(s, s[1:]) if b2 > t_long and a < t_long_end]
    n_chunks = -(-n_long // chunk)
    # every short stream went on between the chunks (not one gap holding the whole prompt) ...
    assert min(sum(1 for t in s if t_long < t < t_long_end) for s in stamps) >= n_chunks - 2, (n_chunks, stamps)
    # ... and no next token waited much longer than one chunk (plus a decode step): generous, x3,
    # for a loaded shared machine; the whole prompt is n_chunks (8) chunks
    assert max(gaps) < 3 * chunk_s + 0.5, (max(gaps), chunk_s, t_long_end - t_long)


def test_a_prefix_is_copied_from_a_running_sequence_into_an_empty_slot(backend, batcher):
    """16 chat requests arriving on empty slots: the second takes the shared system prompt from
    the first one's stream instead of evaluating it, and draws the same text."""
    first, second = (backend.apply_chat_template([{"role": "user", "content": q}])
                     for q in ("Tell me a long story about a dragon.", "Write a line about the moon."))
    params = seeded(5)
    want = batcher(parallel=2).generate(second, params)
    b = batcher(parallel=2)
    running = b.stream(first, GenerationParams(max_tokens=200, temperature=0.0))
    next(running)  # the first request holds slot 0 and is decoding
    got = b.generate(second, params)
    running.close()
    assert b.copied == 1 and b.reused > 10
    assert (got.text, got.prompt_tokens, got.completion_tokens) == (want.text, want.prompt_tokens, want.completion_tokens)


def test_a_leaving_sequence_leaves_no_hole_and_the_moved_one_gives_the_same_text(backend, batcher):
    """Slots stay contiguous (llama.cpp batches only consecutive slots in one pass): when the
    sequence in slot 1 leaves and nobody waits, the one in slot 2 moves down to slot 1, and its
    greedy text is the same as alone."""
    from llmtools.models.llama_batching import SeqRequest

    params = GenerationParams(max_tokens=40, temperature=0.0)
    want = batcher(parallel=1).generate(PROMPTS[2], params)
    b = batcher(parallel=4)
    first = b.stream(PROMPTS[0], GenerationParams(max_tokens=500, temperature=0.0))
    next(first)
    second = b.stream(PROMPTS[1], GenerationParams(max_tokens=500, temperature=0.0))
    next(second)
    got: list = []
    started = threading.Event()
    finished = threading.Event()
    b.submit(SeqRequest(PROMPTS[2], params, on_text=lambda t: started.set(),
                        on_done=lambda v: (got.append(v), finished.set())))
    assert started.wait(60)
    assert sorted(s.slot for s in b._active) == [0, 1, 2]
    second.close()  # slot 1 empties; the third sequence moves into it
    deadline = time.monotonic() + 30
    while b.moved == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert b.moved == 1
    assert finished.wait(120)
    first.close()
    assert (got[0].text, got[0].completion_tokens) == (want.text, want.completion_tokens)


def test_a_joining_request_takes_the_lowest_slot_and_copies_a_cached_prefix(backend, batcher):
    """The request after a burst takes slot 0 (contiguity), and the prompt that a higher free
    slot still holds is copied from there rather than evaluated again."""
    b = batcher(parallel=3)
    prompts = [backend.apply_chat_template([{"role": "user", "content": q}])
               for q in ("Name a colour.", "Name a fruit.", "Write a line about the moon.")]
    params = GenerationParams(max_tokens=6, temperature=0.0)
    outs = run_all(b, prompts, [params] * 3)  # they join in one step, in order: slots 0, 1, 2
    ids = backend.tokenize(prompts[2], add_special=True)
    assert b._cached[2][: len(ids)] == ids
    copied, reused = b.copied, b.reused
    seen: list = []
    from llmtools.models.llama_batching import SeqRequest

    done = threading.Event()
    b.submit(SeqRequest(prompts[2], params, on_text=lambda t: seen.append([s.slot for s in b._active]),
                        on_done=lambda v: (seen.append(v), done.set())))
    assert done.wait(60)
    assert seen[0] == [0] and seen[-1].text == outs[2].text
    assert b.copied == copied + 1 and b.reused - reused == len(ids) - 1  # all but the last prompt token


def test_with_no_thread_budget_a_lone_sequence_decodes_on_the_prompt_threads(backend, batcher, monkeypatch):
    """llama.cpp runs any step of 2+ tokens on n_threads_batch; with no --threads the batcher's
    lone-sequence steps use those threads too, and a given budget still holds for both."""
    lc = backend.llama_cpp
    b = batcher(parallel=2)  # the fixture's backend: threads=1 given
    assert (lc.llama_n_threads(b._ctx), lc.llama_n_threads_batch(b._ctx)) == (1, 1)
    monkeypatch.delenv("LLMTOOLS_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    free = load_model("smollm2", backend="llama", batch_threads=2)
    try:
        assert not free.threads_given and free._kwargs["n_threads_batch"] == 2
        fb = free.batcher(parallel=2)
        try:
            assert (lc.llama_n_threads(fb._ctx), lc.llama_n_threads_batch(fb._ctx)) == (2, 2)
        finally:
            fb.close()
    finally:
        free.close()


def test_a_lone_sequence_is_not_moved(batcher):
    """One run of slots is already one micro-batch: no copy for nothing."""
    b = batcher(parallel=3)
    first = b.stream(PROMPTS[0], GenerationParams(max_tokens=500, temperature=0.0))
    next(first)
    second = b.stream(PROMPTS[1], GenerationParams(max_tokens=500, temperature=0.0))
    next(second)
    first.close()  # slot 0 empties; the sequence in slot 1 is alone, one run
    deadline = time.monotonic() + 10
    while b.running != 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    for _ in range(3):
        next(second)
    assert b.moved == 0 and [s.slot for s in b._active] == [1]
    second.close()


def test_generate_batch_gives_generates_seeded_samples(backend):
    """LlamaBackend.generate_batch (serve --batch, augment, judges) runs through a batcher, and a
    seeded sampled request draws the same text there as from generate() alone."""
    params = [seeded(i, max_tokens=16) for i in range(3)]
    for p in params:
        alone = [backend.generate(prompt, p).text for prompt in PROMPTS[:4]]
        assert [c.text for c in backend.generate_batch(PROMPTS[:4], p)] == alone
    assert backend._batch_batcher is not None and backend._batch_batcher.parallel == 4
