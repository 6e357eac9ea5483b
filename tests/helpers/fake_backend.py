"""Test support for the serve tests: a deterministic fake Backend and an in-process server.

The fake echoes its model name and the prompt's words, one word per token, with a controllable
delay per token, and records how it was called (to check serialisation and micro-batching).
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

from llmtools.models.base import Backend, Chunk, Completion, GenerationParams, ModelIdentity


class FakeBackend(Backend):
    backend_name = "fake"
    supports_embeddings = True

    def __init__(self, name: str = "fake-a", delay: float = 0.0, embeddings: bool = True, fail_health: bool = False):
        self.identity = ModelIdentity(
            name=name,
            format="fake",
            path=f"/models/{name}",
            sha256=hashlib.sha256(name.encode()).hexdigest(),
            manifest={"kind": "fake", "data": f"{name}-data.jsonl"},
        )
        self.delay = delay
        self.supports_embeddings = embeddings
        self.fail_health = fail_health
        self.active = 0
        self.max_active = 0
        self.calls: list[tuple[str, int]] = []
        self.cancelled_streams = 0
        self.closed = False
        self._guard = threading.Lock()

    # -- concurrency probe: max_active > 1 means two threads used the model at once
    def _enter(self, what: str, n: int) -> None:
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append((what, n))

    def _leave(self) -> None:
        with self._guard:
            self.active -= 1

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return [int(hashlib.md5(w.encode()).hexdigest()[:6], 16) for w in text.split()]

    def detokenize(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return text + ("\nassistant:" if add_generation_prompt else "")

    def _words(self, prompt: str) -> list[str]:
        return [self.identity.name] + prompt.split()

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Chunk]:
        params = params or GenerationParams()
        if self.fail_health and prompt == "Hello":
            raise RuntimeError("broken weights")
        if "EXPLODE" in prompt:
            raise RuntimeError("backend blew up")
        if len(prompt.split()) > 500:
            from llmtools.errors import LLMToolsError

            raise LLMToolsError(f"prompt has {len(prompt.split())} tokens, which fills the context of 500; shorten it")
        self._enter("stream", 1)
        words = self._words(prompt)
        out = 0
        finished = False
        try:
            for i, word in enumerate(words[: params.max_tokens]):
                if self.delay:
                    time.sleep(self.delay)
                if any(s in word for s in params.stop):
                    break
                out += 1
                yield Chunk(word if i == 0 else " " + word)
            finished = True
        finally:
            self._leave()
            if not finished:
                self.cancelled_streams += 1
        finish = "length" if len(words) > params.max_tokens and out == params.max_tokens else "stop"
        yield Chunk("", finish, len(prompt.split()), out)

    def generate(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        parts, last = [], None
        for chunk in self.stream(prompt, params):
            parts.append(chunk.text)
            last = chunk
        return Completion("".join(parts), last.prompt_tokens, last.completion_tokens, last.finish_reason)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self._enter("embed", len(texts))
        try:
            return [[len(t) / 10.0, 0.5, -1.25, float(len(t.split()))] for t in texts]
        finally:
            self._leave()

    def close(self) -> None:
        self.closed = True


class BatchingFake(FakeBackend):
    """Overrides generate_batch, so the server micro-batches for it."""

    def generate_batch(self, prompts, params=None):
        params = params or GenerationParams()
        self._enter("batch", len(prompts))
        try:
            if self.delay:
                time.sleep(self.delay * 3)
            return [self.echo(p, params) for p in prompts]
        finally:
            self._leave()

    def echo(self, prompt: str, params: GenerationParams) -> Completion:
        words = self._words(prompt)
        taken = []
        for word in words[: params.max_tokens]:
            if any(s in word for s in params.stop):
                break
            taken.append(word)
        finish = "length" if len(words) > params.max_tokens and len(taken) == params.max_tokens else "stop"
        return Completion(" ".join(taken), len(prompt.split()), len(taken), finish)


class Loader:
    """ref -> a FakeBackend; remembers what it built. `gate` (an Event) holds a load until set."""

    def __init__(self, **kw):
        self.kw = kw
        self.built: dict[str, FakeBackend] = {}
        self.gate: threading.Event | None = None
        self.per_ref: dict[str, dict] = {}

    def __call__(self, ref: str) -> FakeBackend:
        if self.gate is not None:
            self.gate.wait(30)
        if ref.startswith("missing"):
            raise FileNotFoundError(f"{ref}: no such model")
        kw = {**self.kw, **self.per_ref.get(ref, {})}
        cls = kw.pop("cls", FakeBackend)
        backend = cls(name=ref, **kw)
        self.built[ref] = backend
        return backend


@contextmanager
def running_server(loader, wait_loaded: bool = True, **cfg):
    """An in-process uvicorn server on a free 127.0.0.1 port; yields (base_url, state)."""
    import uvicorn

    from llmtools.ops.serve import ServeConfig, ServeState, bind_socket, build_app

    cfg.setdefault("model_ref", "fake-a")
    cfg.setdefault("quiet", True)
    config = ServeConfig(host="127.0.0.1", port=0, **cfg)
    state = ServeState(config, loader)
    load_thread = threading.Thread(target=lambda: state.load(config.model_ref), daemon=True)
    load_thread.start()
    if wait_loaded:
        load_thread.join(30)
        assert state.manager.active is not None
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    from llmtools.ops.serve.server import IDLE_TIMEOUT, http_protocol

    server = uvicorn.Server(uvicorn.Config(build_app(state), http=http_protocol(), lifespan="off", log_level="warning",
                                           access_log=False, timeout_keep_alive=IDLE_TIMEOUT))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(20)
        load_thread.join(5)
        state.close()


class FakeBatcher:
    """ContinuousBatcher's interface over FakeBackend's echo: every active sequence gets one word
    per step (a step takes `delay`), up to `parallel` at once; records each step's batch size."""

    def __init__(self, backend: FakeBackend, parallel: int = 8, on_step=None, name: str = "fake-batch", delay: float = 0.0,
                 after_step=None):
        self.backend = backend
        self.after_step = after_step
        self.parallel = parallel
        self.on_step = on_step
        self.delay = delay or backend.delay
        self.sizes: list[int] = []
        self._waiting: list = []
        self._active: list = []
        self._cv = threading.Condition()
        self._closing = False
        self.closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._active)

    def submit(self, req) -> None:
        from llmtools.errors import LLMToolsError

        with self._cv:
            if self._closing:
                raise LLMToolsError("the batcher is closing")
            self._waiting.append(req)
            self._cv.notify()

    def close(self, drain: bool = True, wait: bool = True, timeout=None) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if wait:
            self._thread.join(timeout)

    def _loop(self) -> None:
        from llmtools.models.llama_batching import Cancelled

        while True:
            with self._cv:
                while not self._waiting and not self._active and not self._closing:
                    self._cv.wait()
                if self._closing and not self._waiting and not self._active:
                    self.closed = True
                    return
                while self._waiting and len(self._active) < self.parallel:
                    req = self._waiting.pop(0)
                    prompt = req.prompt() if callable(req.prompt) else req.prompt
                    words = self.backend._words(prompt)[: req.params.max_tokens]
                    self._active.append([req, words, 0, len(prompt.split())])
            if self.delay:
                time.sleep(self.delay)
            self.sizes.append(len(self._active))
            if self.on_step:
                self.on_step(len(self._active), len(self._active))
            for entry in list(self._active):
                req, words, i, n_prompt = entry
                if req.cancelled():
                    self._active.remove(entry)
                    req.on_done(Cancelled("gone"))
                    continue
                if i < len(words):
                    if req.on_text is not None:
                        req.on_text(words[i] if i == 0 else " " + words[i])
                    entry[2] += 1
                if entry[2] >= len(words):
                    self._active.remove(entry)
                    finish = "length" if len(words) == req.params.max_tokens else "stop"
                    req.on_done(Completion(" ".join(words), n_prompt, len(words), finish))
            if self.after_step:
                self.after_step()


class ContinuousFake(FakeBackend):
    """A FakeBackend that the server drives through continuous batching (`batcher()`)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batchers: list[FakeBatcher] = []

    def batcher(self, parallel: int = 8, on_step=None, name: str = "fake-batch", after_step=None, **_kw) -> FakeBatcher:
        b = FakeBatcher(self, parallel=parallel, on_step=on_step, name=name, after_step=after_step)
        self.batchers.append(b)
        return b
