"""Continuous batching for the llama.cpp backend: every active sequence advances in one
`llama_decode` per step.

A `ContinuousBatcher` owns a llama.cpp context of its own on the backend's model (the weights
are shared, not loaded twice) with `parallel` sequence slots, and one thread that runs steps:

- **join**: a request waits for a free slot and joins at the next step. Its prompt is evaluated
  in chunks of at most `chunk` tokens; the chunks of all prompts in one step add up to at most
  `chunk` tokens (at least one chunk is always taken), so a long prompt delays the other
  sequences' next token by at most one chunk's time.
- **decode**: every sequence that has a token to evaluate adds that one token to one batch; one
  `llama_decode` evaluates them all, and each sequence samples from its own logits row.
- **leave**: a sequence that ends (end-of-generation token, a stop sequence, `max_tokens`, a full
  context) or whose caller gave up (`cancelled()` is checked before every step) leaves at once, so
  the slot takes the next request at the next step.
- **slots stay contiguous**: with one KV stream per slot, llama.cpp splits a batch into
  micro-batches of *consecutive* sequence ids, in batch order (`split_equal(.., sequential)`), and
  each micro-batch is a full pass over the weights. Decoding slots {0, 2, 5, 7} costs three passes
  where {0, 1, 2, 3} costs one (38.6 vs 23.3 ms per step for smollm2 at 2 threads,
  `benchmarks/serve/probe_batch.py --layouts`). So a step's batch is in slot order, a joining
  request takes the lowest free slot, and when nobody waits, the sequence in the highest slot
  moves down into a hole that a leaving one made (`llama_memory_seq_cp`, a copy of its stream).
- **prefix reuse**: a slot's KV stream keeps what its last sequence evaluated. A joining request
  keeps the part of its slot's cache that its prompt shares, drops the rest
  (`llama_memory_seq_rm`) and evaluates only the tokens after the shared prefix (at least its last
  prompt token). If another slot's stream, free or running, holds a prefix at least `COPY_MIN`
  tokens longer (the chat template's system prompt, a repeated prompt, a burst of requests on
  empty slots), that stream is copied into the new slot (`llama_memory_seq_cp`: one copy of the
  stream at the next `llama_decode`) and trimmed to the shared prefix. Chat requests share the
  template's system prompt, so most of their prompt is not evaluated again; llama.cpp's own server
  does the same per slot. A failed `llama_decode` empties the slots it touched; with a unified
  cache (`unified=True`, whose cells all slots share) a leaving sequence's cells are freed at once
  instead.

Each sequence has its own sampler chain (top_k, top_p, temperature, seed: the chain
llama-cpp-python's `create_completion` builds, with min_p and repeat_penalty off), its own stop
scanner and its own `max_tokens`. A greedy sequence (temperature 0) takes the argmax of its logits
row in numpy instead of a chain: the same token as llama.cpp's greedy sampler (the first maximum),
without copying the vocabulary into a candidate array per token.

`after_step`, if given, runs on the batcher's thread once a step has handed out its text, so a
caller can deliver all of a step's tokens at once (the server wakes its event loop once per step,
not once per token).

**Threads.** llama.cpp runs a micro-batch of more than one token on `n_threads_batch` and a lone
token on `n_threads`, so every step that decodes two or more sequences uses the prompt threads
(`--batch-threads`, by default all cores). When no thread budget was given, a lone sequence's
steps use them too (the backend's default of half the cores would make one client the slowest
case: 45 vs 72 tok/s on 2 cores); `--threads N` sets both, as everywhere.

**Context.** Each slot is its own KV stream (`kv_unified=False`) of `n_ctx` cells, so every
request gets the full `n_ctx` whatever the others hold; the cache takes `parallel * n_ctx` cells
(for smollm2, ~23 KB per cell: 8 x 2048 cells = ~380 MB, allocated when the batcher starts).

**The same text alone or among others.** A sequence's rows go through the same kernels whoever
shares the step: each prompt chunk is evaluated in a `llama_decode` call of its own, at chunk
boundaries fixed by the prompt alone, and with one KV stream per slot a sequence's attention
only ever reads its own cells, at the same indices. The decode step puts several sequences' rows
in one matrix product; whether llama.cpp's CPU kernels give each row the same bits at any batch
size depends on the weight type. For the default model (Q4_1 weights, Q8_0 output) they do:
`benchmarks/serve/probe_batch.py` finds sequence 0's logits bit-identical at B = 1, 2, 3, 4 and 8,
and the tests check 8 seeded requests alone and together. Flash attention follows the backend's
own context (off in llama_cpp.Llama), so greedy text equals the one-at-a-time path too.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from llmtools.errors import LLMToolsError
from llmtools.models.base import Chunk, Completion, GenerationParams

DEFAULT_CHUNK = 256
COPY_MIN = 8  # a prefix this much longer in another slot is copied rather than evaluated
MOVE_MIN = 4  # a sequence with fewer tokens to go than this is not moved to close a hole


class Cancelled(Exception):
    """The caller gave up on the request (`cancelled()` became true); its slot was freed."""


@dataclass
class SeqRequest:
    """One sequence to generate. The callbacks run on the batcher's thread: keep them short."""

    prompt: str | Callable[[], str]  # a callable is rendered on the batcher's thread (chat templates)
    params: GenerationParams
    on_text: Callable[[str], None] | None = None
    on_done: Callable[[Any], None] | None = None  # a Completion, or the exception that ended it
    cancelled: Callable[[], bool] = lambda: False
    t_submit: float = field(default_factory=time.monotonic)
    t_first: float | None = None  # when the first token was sampled


class StepTimes:
    """Where the batcher's thread spends its time, summed over steps (seconds); `steps` counts
    the steps that evaluated something. Cheap enough to keep on: a few perf_counter calls a step."""

    __slots__ = ("steps", "decode_steps", "decoded", "prefilled", "build", "decode", "prefill", "sample", "emit",
                 "idle")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0 if name in ("steps", "decode_steps", "decoded", "prefilled") else 0.0)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


class _Seq:
    """A request that holds a slot: its prompt, sampler, position and text so far."""

    def __init__(self, req: SeqRequest, slot: int, ids: list[int], chain: Any, stops):
        from llmtools.models._text import StopScanner

        self.req = req
        self.slot = slot
        self.ids = ids
        self.n_prompt = len(ids)
        self.n_evaluated = 0  # prompt tokens whose KV is in the cache
        self.pos = 0  # the position of the next token to evaluate
        self.chain = chain
        self.last: int | None = None  # the sampled token to evaluate next (decoding phase)
        self.n_generated = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.scanner = StopScanner(stops)
        self.parts: list[str] = []

    @property
    def prefilling(self) -> bool:
        return self.n_evaluated < self.n_prompt


class ContinuousBatcher:
    """Continuous batching over one llama.cpp model (see the module docstring).

    `submit(SeqRequest)` queues a sequence and returns at once; `generate` and `stream` wrap it
    for a caller that waits. `close()` lets queued and running sequences finish, then frees the
    context (`close(drain=False)` cancels them instead).
    """

    def __init__(
        self,
        backend: Any,
        parallel: int = 8,
        n_ctx: int | None = None,
        chunk: int = DEFAULT_CHUNK,
        on_step: Callable[[int, int], None] | None = None,
        name: str = "llmtools-batch",
        unified: bool = False,
        after_step: Callable[[], None] | None = None,
    ):
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        self.llama_cpp = lc = backend.llama_cpp
        self.backend = backend
        self.parallel = int(parallel)
        self.chunk = max(1, int(chunk))
        self.on_step = on_step
        self.after_step = after_step
        self._model = backend.llm._model.model
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self.n_ctx = int(n_ctx or backend.n_ctx)
        params = lc.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.parallel
        params.n_batch = params.n_ubatch = max(self.chunk, self.parallel)
        params.n_seq_max = self.parallel
        params.n_threads_batch = int(backend._kwargs["n_threads_batch"])
        # llama.cpp computes every micro-batch of more than one token on n_threads_batch
        # (llama_context::graph_compute), so a step of 2+ sequences already runs on the prompt
        # threads; n_threads is only the lone sequence's. With no thread budget given, that one
        # gets them too rather than half the cores (72 vs 45 tok/s for one client on 2 cores)
        params.n_threads = (int(backend._kwargs["n_threads"]) if getattr(backend, "threads_given", True)
                            else params.n_threads_batch)
        params.kv_unified = bool(unified)  # default: one KV stream per slot, see "Context" above
        # the kernels of the backend's own context (flash attention off in llama_cpp.Llama), so a
        # greedy request gives the same tokens here as on the one-at-a-time path
        params.flash_attn_type = backend.llm.context_params.flash_attn_type
        params.type_k = backend.llm.context_params.type_k
        params.type_v = backend.llm.context_params.type_v
        params.no_perf = True
        from llmtools.models.llama_backend import _quiet_stderr_fd

        with _quiet_stderr_fd():
            ctx = lc.llama_init_from_model(self._model, params)
        if not ctx:
            raise LLMToolsError(f"llama.cpp could not create a context of {self.parallel} x {self.n_ctx} tokens")
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self.n_ctx = int(lc.llama_n_ctx_seq(ctx))  # what each slot really got
        # llama.cpp caps n_batch at the context size: a chunk must fit in one llama_decode
        n_batch = int(lc.llama_n_batch(ctx))
        self.chunk = min(self.chunk, n_batch)
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self._free = list(range(self.parallel))
        self.unified = bool(unified)
        # per slot, the tokens whose KV its stream holds at positions 0.. (kept after a sequence
        # leaves, so the next request on that slot skips the prefix it shares: the chat
        # template's system prompt, a repeated prompt); always empty with a unified cache
        self._cached: list[list[int]] = [[] for _ in range(self.parallel)]
        self.reused = 0  # prompt tokens not evaluated again thanks to that
        self.copied = 0  # prefixes copied from another slot's stream
        self.moved = 0  # running sequences moved to a lower slot (to keep the slots contiguous)
        self._active: list[_Seq] = []
        self._waiting: deque[SeqRequest] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._drain = True
        self.steps = 0
        self.times = StepTimes()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- the caller's side
    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._active)

    def submit(self, req: SeqRequest) -> None:
        with self._cv:
            if self._closing:
                raise LLMToolsError("the batcher is closing")
            self._waiting.append(req)
            self._cv.notify()

    def generate(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        done = threading.Event()
        box: list[Any] = []

        def finish(value: Any) -> None:
            box.append(value)
            done.set()

        self.submit(SeqRequest(prompt, params or GenerationParams(), on_done=finish))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Chunk]:
        """Chunks as the sequence produces them; closing the iterator cancels the sequence."""
        import queue

        events: queue.SimpleQueue = queue.SimpleQueue()
        gone = threading.Event()
        self.submit(SeqRequest(prompt, params or GenerationParams(), on_text=lambda t: events.put(("text", t)),
                               on_done=lambda v: events.put(("done", v)), cancelled=gone.is_set))
        try:
            while True:
                tag, value = events.get()
                if tag == "text":
                    yield Chunk(value)
                elif isinstance(value, BaseException):
                    raise value
                else:
                    yield Chunk("", value.finish_reason, value.prompt_tokens, value.completion_tokens)
                    return
        finally:
            gone.set()

    def close(self, drain: bool = True, wait: bool = True, timeout: float | None = None) -> None:
        with self._cv:
            self._closing = True
            self._drain = self._drain and drain
            self._cv.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the batcher's thread
    def _loop(self) -> None:
        try:
            while True:
                with self._cv:
                    if not self._waiting and not self._active and not self._closing:
                        t_idle = time.perf_counter()
                        while not self._waiting and not self._active and not self._closing:
                            self._cv.wait()
                        self.times.idle += time.perf_counter() - t_idle
                    if not self._drain:
                        dropped, self._waiting = list(self._waiting), deque()
                    else:
                        dropped = []
                    if self._closing and not self._waiting and not self._active:
                        return
                    joining = []
                    while self._waiting and self._free:
                        joining.append((self._waiting.popleft(), self._free.pop(0)))
                for req in dropped:
                    _call(req.on_done, Cancelled("the server is shutting down"))
                for req, slot in joining:
                    self._join(req, slot)
                if not self.unified and not joining:
                    self._compact()
                if not self._drain:
                    for seq in list(self._active):
                        self._leave(seq, Cancelled("the server is shutting down"))
                    continue
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001 - fail what ran, keep serving the rest
                    for seq in list(self._active):
                        self._leave(seq, exc, keep=False)
                if self.after_step is not None:
                    _call(lambda _: self.after_step(), None)
        finally:
            self._release()

    def _join(self, req: SeqRequest, slot: int) -> None:
        try:
            params = req.params
            prompt = req.prompt() if callable(req.prompt) else req.prompt
            ids = list(self.backend.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
            if params.max_tokens == 0 or not ids:
                _call(req.on_done, Completion("", len(ids), 0, "length"))
                self._give_back(slot)
                return
            if len(ids) >= self.n_ctx:
                raise LLMToolsError(
                    f"prompt has {len(ids)} tokens, which fills the context of {self.n_ctx}; "
                    "shorten it or load the model with a larger n_ctx"
                )
            chain = self._sampler(params)
        except Exception as exc:  # noqa: BLE001 - the request fails, the batcher goes on
            self._give_back(slot)
            _call(req.on_done, exc)
            return
        # the lowest free slot, whatever its cache holds: a step's micro-batches are runs of
        # consecutive slots (see "slots stay contiguous"); a better prefix elsewhere is copied in
        reuse = _shared(self._cached[slot], ids)
        if not self.unified:
            # another stream (a free slot's cache, a running sequence) holds a longer prefix:
            # copy it into this slot, then drop what is not shared. llama.cpp copies a whole
            # stream (one memcpy at the next llama_decode), far cheaper than evaluating the prefix
            src, n = max(((k, _shared(self._cached[k], ids)) for k in range(self.parallel) if k != slot),
                         key=lambda x: x[1], default=(slot, 0))
            if n >= reuse + COPY_MIN:
                self.llama_cpp.llama_memory_seq_cp(self._mem, src, slot, -1, -1)
                self._cached[slot] = list(self._cached[src])
                reuse = n
                self.copied += 1
        seq = _Seq(req, slot, ids, chain, params.stop)
        cached = self._cached[slot]
        self.llama_cpp.llama_memory_seq_rm(self._mem, slot, reuse, -1)
        del cached[reuse:]
        seq.n_evaluated = seq.pos = reuse
        self.reused += reuse
        self._active.append(seq)

    def _compact(self) -> None:
        """Move the sequence in the highest slot down into the lowest free one while the running
        slots are not one run (nobody is waiting to fill the hole), so that the next steps are
        one micro-batch. A lone sequence in slot 3 stays there: it is one run already."""
        lc = self.llama_cpp
        while True:
            with self._cv:
                if self._waiting or not self._free or not self._active:
                    return
                slots = sorted(s.slot for s in self._active)
                if slots[-1] - slots[0] + 1 == len(slots):
                    return  # one run of consecutive slots already: a move would buy nothing
                seq = max(self._active, key=lambda s: s.slot)
                low = self._free[0]
                if low > seq.slot or seq.req.params.max_tokens - seq.n_generated < MOVE_MIN:
                    return
                self._free.remove(low)
                self._free.append(seq.slot)
                self._free.sort()
            lc.llama_memory_seq_cp(self._mem, seq.slot, low, -1, -1)
            # the old stream keeps its tokens (a cache for the next request, as after a leave)
            self._cached[low] = list(self._cached[seq.slot])
            seq.slot = low
            self.moved += 1

    def _sampler(self, params: GenerationParams) -> Any:
        lc = self.llama_cpp
        temperature = max(float(params.temperature), 0.0)
        if temperature == 0.0:
            return None  # greedy: the argmax of the logits row (_pick)
        seed = params.seed if params.seed is not None else self.backend.default_seed
        seed = lc.LLAMA_DEFAULT_SEED if seed is None else int(seed) & 0xFFFFFFFF
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        # llama-cpp-python's create_completion chain, in its order; typical_p 1 and min_p 0 are
        # no-ops there too, kept so that a seed draws the same tokens as on the one-at-a-time path
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(int(params.top_k or 0)))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_typical(1.0, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(float(params.top_p), 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(0.0, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _step(self) -> None:
        for seq in [s for s in self._active if s.req.cancelled()]:
            self._leave(seq, Cancelled("the client went away"))
        # slot order: llama.cpp puts consecutive slots in one micro-batch (see the docstring)
        decoding = sorted((s for s in self._active if not s.prefilling), key=lambda s: s.slot)
        prefilling = [s for s in self._active if s.prefilling]
        n_tokens = 0
        if decoding:
            n_tokens += self._decode_step(decoding)
        budget = self.chunk
        n_prefill = 0
        for seq in prefilling:
            size = self._next_chunk(seq)
            if size > budget and n_prefill:
                break
            self._prefill(seq, size)
            budget -= size
            n_tokens += size
            n_prefill += 1
        self.steps += 1
        if decoding or n_prefill:
            self.times.steps += 1
        if self.on_step is not None and (decoding or n_prefill):
            self.on_step(len(decoding) + n_prefill, n_tokens)

    def _next_chunk(self, seq: _Seq) -> int:
        # chunk boundaries depend on the prompt alone, not on what else runs this step
        return min(self.chunk - seq.n_evaluated % self.chunk, seq.n_prompt - seq.n_evaluated)

    def _fill(self, i: int, token: int, pos: int, slot: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = slot
        b.logits[i] = 1 if logits else 0

    def _decode(self, n: int, seqs: list[_Seq]) -> bool:
        self._batch.n_tokens = n
        rc = self.llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            err = LLMToolsError(f"llama.cpp: llama_decode failed (code {rc}) for a batch of {n} tokens")
            for seq in seqs:
                self._leave(seq, err, keep=False)
            return False
        return True

    def _decode_step(self, seqs: list[_Seq]) -> int:
        t = self.times
        t0 = time.perf_counter()
        for i, seq in enumerate(seqs):
            self._fill(i, seq.last, seq.pos, seq.slot, True)
        t1 = time.perf_counter()
        ok = self._decode(len(seqs), seqs)
        t2 = time.perf_counter()
        t.build += t1 - t0
        t.decode += t2 - t1
        if not ok:
            return 0
        t.decode_steps += 1
        t.decoded += len(seqs)
        for i, seq in enumerate(seqs):
            self._cached[seq.slot].append(seq.last)
            seq.pos += 1
            t3 = time.perf_counter()
            token = self._pick(seq, i)
            t.sample += time.perf_counter() - t3
            self._take(seq, token)
        return len(seqs)

    def _prefill(self, seq: _Seq, size: int) -> None:
        start = seq.n_evaluated
        last = start + size == seq.n_prompt
        t0 = time.perf_counter()
        for i in range(size):
            self._fill(i, seq.ids[start + i], start + i, seq.slot, last and i == size - 1)
        ok = self._decode(size, [seq])
        self.times.prefill += time.perf_counter() - t0
        if not ok:
            return
        self.times.prefilled += size
        self._cached[seq.slot].extend(seq.ids[start:start + size])
        seq.n_evaluated += size
        seq.pos = seq.n_evaluated
        if last:
            self._take(seq, self._pick(seq, size - 1))

    def _pick(self, seq: _Seq, i: int) -> int:
        """The next token of `seq` from the logits of batch row `i`."""
        if seq.chain is not None:
            return self.llama_cpp.llama_sampler_sample(seq.chain, self._ctx, i)
        import numpy as np

        row = self.llama_cpp.llama_get_logits_ith(self._ctx, i)
        return int(np.ctypeslib.as_array(row, shape=(self._n_vocab,)).argmax())

    def _take(self, seq: _Seq, token: int) -> None:
        """A sampled token: end the sequence, or emit its text and queue it for evaluation."""
        lc = self.llama_cpp
        if seq.req.t_first is None:
            seq.req.t_first = time.monotonic()
        if lc.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop")
            return
        seq.n_generated += 1
        n = lc.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        piece = seq.decoder.decode(self._piece.raw[: max(n, 0)])
        self._emit(seq, seq.scanner.feed(piece))
        if seq.scanner.stopped:
            self._finish(seq, "stop")
        elif seq.n_generated >= seq.req.params.max_tokens or seq.pos >= self.n_ctx:
            self._finish(seq, "length")
        else:
            seq.last = token

    def _emit(self, seq: _Seq, text: str) -> None:
        if text:
            seq.parts.append(text)
            t0 = time.perf_counter()
            _call(seq.req.on_text, text)
            self.times.emit += time.perf_counter() - t0

    def _finish(self, seq: _Seq, reason: str) -> None:
        if not seq.scanner.stopped:
            self._emit(seq, seq.scanner.feed(seq.decoder.decode(b"", final=True)))
            self._emit(seq, seq.scanner.flush())
            if seq.scanner.stopped:
                reason = "stop"
        self._leave(seq, Completion("".join(seq.parts), seq.n_prompt, seq.n_generated, reason))

    def _leave(self, seq: _Seq, outcome: Any, keep: bool = True) -> None:
        lc = self.llama_cpp
        if seq in self._active:
            self._active.remove(seq)
        if self.unified or not keep:
            # a unified cache shares its cells: free them; after a failed llama_decode what the
            # stream holds is not known
            lc.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
            self._cached[seq.slot].clear()
        if seq.chain is not None:
            lc.llama_sampler_free(seq.chain)
            seq.chain = None
        self._give_back(seq.slot)
        _call(seq.req.on_done, outcome)

    def _give_back(self, slot: int) -> None:
        with self._cv:
            self._free.append(slot)
            self._free.sort()

    def _release(self) -> None:
        lc = self.llama_cpp
        failure = LLMToolsError("the batcher stopped")
        for seq in list(self._active):
            self._leave(seq, failure)
        with self._cv:
            dropped, self._waiting = list(self._waiting), deque()
            self._closing = True
        for req in dropped:
            _call(req.on_done, failure)
        if self._ctx is not None:
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            self._ctx = None


def _shared(cached: list[int], ids: list[int]) -> int:
    """How many leading tokens of `ids` a stream holding `cached` can keep: the common prefix,
    less the last prompt token at least (it is evaluated again for its logits)."""
    n = 0
    for a, b in zip(cached, ids):
        if a != b:
            break
        n += 1
    return min(n, len(ids) - 1)


def _call(callback: Callable[[Any], None] | None, value: Any) -> None:
    if callback is None:
        return
    try:
        callback(value)
    except Exception as exc:  # noqa: BLE001 - a caller's callback must not stop every sequence
        os.write(2, f"llmtools: batcher callback failed: {exc!r}\n".encode())
