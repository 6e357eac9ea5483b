"""Admission control and the inference workers behind the HTTP server.

Models are not async and a llama.cpp context is not thread-safe, so each loaded model gets its own
worker thread(s) fed from a queue. The event loop never blocks on inference: a request becomes a
`Job`, the worker runs it, and the result (or each streamed chunk) is handed back to the loop with
`call_soon_threadsafe`.

- `Limiter` bounds how many requests are admitted at all (running + waiting); past that the
  server answers 429 at once instead of building an unbounded backlog.
- `SlotRunner` serialises work per model instance. For a backend that really batches (it
  overrides `generate_batch`), waiting non-streamed requests with the same options are merged into
  one `generate_batch` call (micro-batching); a thread-safe backend (`thread_safe = True`, e.g. an
  HTTP endpoint) gets several worker threads instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable

from llmtools.models.base import Backend, Completion, GenerationParams
from llmtools.ops.serve.protocol import ApiError, params_key


class Limiter:
    """Counts admitted requests; refuses past `max_concurrency + max_queue`."""

    def __init__(self, max_concurrency: int, max_queue: int):
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.capacity = max_concurrency + max_queue
        self._admitted = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._admitted >= self.capacity:
                return False
            self._admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1

    @property
    def admitted(self) -> int:
        return self._admitted


class Job:
    """One unit of inference: prompts or conversations (or texts to embed) and their options.

    `payload` is always a list, so jobs with equal options can be concatenated into one batch.
    Non-streamed jobs resolve `future` with a list (Completions, or vectors for "embed");
    streamed jobs push ("chunk", text) events and end with ("done", Completion) or ("error", exc).
    """

    def __init__(
        self,
        kind: str,
        payload: list,
        params: GenerationParams | None,
        loop: asyncio.AbstractEventLoop,
        stream: bool = False,
        deadline: float | None = None,
    ):
        assert kind in ("generate", "chat", "embed")
        self.kind = kind
        self.payload = payload
        self.params = params
        self.loop = loop
        self.stream = stream
        self.deadline = deadline  # time.monotonic() value
        self.future: asyncio.Future = loop.create_future()
        self.events: asyncio.Queue | None = asyncio.Queue() if stream else None
        self.cancelled = threading.Event()
        self.t_submit = time.monotonic()
        self.t_start: float | None = None
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.on_end: list[Callable[["Job"], None]] = []
        self._ended = False

    # -- called from the worker thread
    def expired(self) -> bool:
        return self.cancelled.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)

    def resolve(self, value: Any) -> None:
        self.loop.call_soon_threadsafe(_set_result, self.future, value)
        if self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, ("done", value[0] if isinstance(value, list) else value))

    def fail(self, exc: BaseException) -> None:
        self.loop.call_soon_threadsafe(_set_exception, self.future, exc)
        if self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, ("error", exc))

    def push(self, text: str) -> None:
        assert self.events is not None
        self.loop.call_soon_threadsafe(self.events.put_nowait, ("chunk", text))

    def end(self) -> None:
        """Release what the job holds (its admission slot); runs exactly once."""
        if self._ended:
            return
        self._ended = True
        self.t_end = time.monotonic()
        for callback in self.on_end:
            callback(self)

    def batch_key(self) -> tuple | None:
        if self.stream or self.kind == "embed" or self.params is None:
            return None
        return (self.kind, params_key(self.params))


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # mark retrieved: a timed-out request no longer awaits it


def timeout_error() -> ApiError:
    return ApiError(504, "the request timed out (--timeout)", "timeout_error", code="timeout")


def backend_batches(backend: Backend) -> bool:
    """True when the backend overrides generate_batch, i.e. batching is more than a loop, and
    has no continuous batcher (llama.cpp batches under --parallel; with --parallel 0 it stays one
    request at a time, as that option says)."""
    return type(backend).generate_batch is not Backend.generate_batch and not callable(getattr(backend, "batcher", None))


class SlotRunner:
    """The worker thread(s) of one loaded model."""

    def __init__(self, backend: Backend, max_batch: int = 8, workers: int | None = None, name: str = "model",
                 on_batch: Callable[[int], None] | None = None):
        self.backend = backend
        self.on_batch = on_batch  # told the number of prompts of each model call
        # An HTTP backend is only an httpx client, safe to share; local models are not.
        thread_safe = bool(getattr(backend, "thread_safe", getattr(backend, "backend_name", "") == "http"))
        self.workers = max(1, workers or 1) if thread_safe else 1
        self.max_batch = max(1, max_batch) if backend_batches(backend) else 1
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self.running = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"llmtools-serve-{name}-{i}", daemon=True) for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closing:
                raise ApiError(503, "this model version is being unloaded", "server_error", code="model_unloading")
            self._pending.append(job)
            self._cv.notify()

    def close(self, on_idle: Callable[[], None] | None = None) -> None:
        """Finish queued work, then stop the workers and call `on_idle` (e.g. backend.close)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()

        def wait_then() -> None:
            for t in self._threads:
                t.join()
            if on_idle is not None:
                on_idle()

        threading.Thread(target=wait_then, daemon=True).start()

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    # -- worker side
    def _take(self) -> list[Job] | None:
        with self._cv:
            while not self._pending and not self._closing:
                self._cv.wait()
            if not self._pending:
                return None
            job = self._pending.popleft()
            group = [job]
            key = job.batch_key()
            if key is not None and self.max_batch > 1:
                size = len(job.payload)
                for other in list(self._pending):
                    if size >= self.max_batch:
                        break
                    if other.batch_key() == key and size + len(other.payload) <= self.max_batch:
                        self._pending.remove(other)
                        group.append(other)
                        size += len(other.payload)
            self.running += len(group)
            return group

    def _work(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            try:
                live = []
                for job in group:
                    if job.expired():
                        job.fail(timeout_error())
                    else:
                        live.append(job)
                if live:
                    self._run(live)
            finally:
                with self._cv:
                    self.running -= len(group)
                for job in group:
                    job.end()

    def _run(self, group: list[Job]) -> None:
        now = time.monotonic()
        for job in group:
            job.t_start = now
        job = group[0]
        if self.on_batch is not None:
            self.on_batch(sum(len(j.payload) for j in group))
        try:
            if job.kind == "embed":
                vectors = self.backend.embed(job.payload)
                tokens = sum(self.backend.count_tokens(t) for t in job.payload)
                job.t_first = time.monotonic()
                job.resolve((vectors, tokens))
            elif len(group) == 1 and len(job.payload) == 1:
                self._run_streaming(job)
            else:
                self._run_batch(group)
        except ApiError as exc:
            for j in group:
                j.fail(exc)
        except Exception as exc:  # a backend failure answers 500 for this request only
            for j in group:
                j.fail(exc)

    def _run_streaming(self, job: Job) -> None:
        """One request through backend.stream, so a timeout or a disconnect stops it early."""
        item = job.payload[0]
        chunks = self.backend.chat_stream(item, job.params) if job.kind == "chat" else self.backend.stream(item, job.params)
        parts: list[str] = []
        last = None
        try:
            for chunk in chunks:
                if job.t_first is None:
                    job.t_first = time.monotonic()
                if chunk.text:
                    parts.append(chunk.text)
                    if job.stream:
                        job.push(chunk.text)
                last = chunk
                if job.expired():
                    job.fail(timeout_error() if not job.cancelled.is_set() else ApiError(499, "client closed the request", "client_closed", code="client_closed"))
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        text = "".join(parts)
        if last is None or last.prompt_tokens is None or last.completion_tokens is None:
            prompt_text = self.backend.apply_chat_template(item) if job.kind == "chat" else item
            pt = self.backend.count_tokens(prompt_text)
            ct = self.backend.count_tokens(text)
            finish = (last.finish_reason if last else None) or "stop"
        else:
            pt, ct, finish = last.prompt_tokens, last.completion_tokens, last.finish_reason or "stop"
        job.resolve([Completion(text, pt, ct, finish)])

    def _run_batch(self, group: list[Job]) -> None:
        items = [item for job in group for item in job.payload]
        params = group[0].params
        if group[0].kind == "chat":
            results = self.backend.chat_batch(items, params)
        else:
            results = self.backend.generate_batch(items, params)
        now = time.monotonic()
        i = 0
        for job in group:
            n = len(job.payload)
            job.t_first = now
            job.resolve(list(results[i : i + n]))
            i += n
