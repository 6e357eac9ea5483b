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
