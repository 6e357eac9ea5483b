"""The runner of a llama.cpp model under `--parallel N`: continuous batching.

`BatchingRunner` has SlotRunner's interface (submit, queued, running, close, join), so the model
manager and the app treat both alike. Each generation or chat item of a job becomes one sequence
of a `ContinuousBatcher` (llmtools.models.llama_batching), which decodes every running sequence
in one llama_decode per step; each sequence streams its own tokens as they come, and one whose
client went away (or whose --timeout passed) leaves the batch at the next step.

Hand-off: the tokens a step produced for every streaming client go to the event loop in one
`call_soon_threadsafe` at the end of the step (the batcher's `after_step`), not one per token: each
wake-up of the event loop takes a core from llama.cpp's spinning threads, so 16 clients meant 16
wake-ups per step.

Admission: at most `max_running` jobs (--max-concurrency) have sequences in the batcher; the
batcher holds at most `parallel` sequences in KV slots (--parallel) and queues the rest. Embedding
jobs go to a SlotRunner of their own (they use the backend's embedding context, not the batch).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from llmtools.models.base import Backend
from llmtools.models.llama_batching import Cancelled, SeqRequest
from llmtools.ops.serve.protocol import ApiError
from llmtools.ops.serve.runner import Job, SlotRunner, timeout_error


def supports_continuous_batching(backend: Backend) -> bool:
    return callable(getattr(backend, "batcher", None))


def client_closed() -> ApiError:
    return ApiError(499, "client closed the request", "client_closed", code="client_closed")


class BatchingRunner:
    def __init__(
        self,
        backend: Backend,
        parallel: int = 8,
        max_running: int | None = None,
        name: str = "model",
        on_step: Callable[[int, int], None] | None = None,
    ):
        self.backend = backend
        self._outbox: deque[tuple[Job, str]] = deque()  # a step's streamed text, delivered at its end
        self.batcher = backend.batcher(parallel=parallel, on_step=on_step, name=f"llmtools-serve-{name}-batch",
                                       after_step=self._deliver)
        self.max_running = max(1, max_running or parallel)
        self._embed = SlotRunner(backend, max_batch=1, workers=1, name=f"{name}-embed")
        self._pending: deque[Job] = deque()
        self._lock = threading.Condition()
        self._jobs = 0  # jobs with sequences in the batcher
        self._closing = False
        self._closer: threading.Thread | None = None

    def _deliver(self) -> None:
        """Hand the text queued since the last call to the streams: one wake-up per event loop."""
        if not self._outbox:
            return
        by_loop: dict[Any, list] = {}
        while self._outbox:
            job, text = self._outbox.popleft()
            by_loop.setdefault(job.loop, []).append((job.events, ("chunk", text)))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop has closed (the server is gone): nobody to tell
                pass

    @property
    def queued(self) -> int:
        return len(self._pending) + self.batcher.queued + self._embed.queued

    @property
    def running(self) -> int:
        return self._jobs + self._embed.running

    def submit(self, job: Job) -> None:
        if self._closing:
            raise ApiError(503, "this model version is being unloaded", "server_error", code="model_unloading")
        if job.kind == "embed":
            self._embed.submit(job)
            return
        with self._lock:
            self._pending.append(job)
        self._pump()

    def _pump(self) -> None:
        starting = []
        with self._lock:
            while self._pending and self._jobs < self.max_running:
                starting.append(self._pending.popleft())
                self._jobs += 1
        for job in starting:
            self._start(job)

    def _job_over(self, job: Job) -> None:
        with self._lock:
            self._jobs -= 1
            self._lock.notify_all()
        job.end()
        self._pump()

    def _start(self, job: Job) -> None:
        if job.expired():
            job.fail(client_closed() if job.cancelled.is_set() else timeout_error())
            self._job_over(job)
            return
        job.t_start = time.monotonic()
        results: list[Any] = [None] * len(job.payload)
        left = [len(job.payload)]
        failed = threading.Event()
        lock = threading.Lock()

        def gone() -> bool:
            return failed.is_set() or job.expired()

        def on_text(text: str) -> None:
            if job.t_first is None:
                job.t_first = time.monotonic()
            if job.stream:
                self._outbox.append((job, text))

        def on_done(k: int, value: Any) -> None:
            with lock:
                if isinstance(value, BaseException):
                    if not failed.is_set():
                        failed.set()
                        self._deliver()
                        job.fail(self._error(job, value))
                else:
                    results[k] = value
                left[0] -= 1
                last = left[0] == 0
            if not last:
                return
            self._deliver()  # the text before the end
            if not failed.is_set():
                if job.t_first is None:
                    job.t_first = time.monotonic()
                job.resolve(results)
            self._job_over(job)

        for k, item in enumerate(job.payload):
            prompt = (lambda m=item: self.backend.apply_chat_template(m)) if job.kind == "chat" else item
            req = SeqRequest(prompt, job.params, on_text=on_text, on_done=lambda v, k=k: on_done(k, v), cancelled=gone)
            try:
                self.batcher.submit(req)
            except Exception as exc:  # noqa: BLE001 - the batcher is closing: this item fails
                on_done(k, exc)

    @staticmethod
    def _error(job: Job, exc: BaseException) -> BaseException:
        if isinstance(exc, Cancelled):
            if job.cancelled.is_set():
                return client_closed()
            if job.deadline is not None and time.monotonic() > job.deadline:
                return timeout_error()
            return ApiError(503, "the server is shutting down", "server_error", code="shutting_down")
        return exc

    def close(self, on_idle: Callable[[], None] | None = None) -> None:
        """Let admitted jobs finish, then stop the batcher, then call `on_idle` (backend.close)."""
        self._closing = True

        def wait_then() -> None:
            with self._lock:
                while self._pending or self._jobs:
                    self._lock.wait(0.5)
            self.batcher.close(drain=True)
            self._embed.close()
            self._embed.join()
            if on_idle is not None:
                on_idle()

        self._closer = threading.Thread(target=wait_then, name="llmtools-serve-drain", daemon=True)
        self._closer.start()

    def join(self, timeout: float | None = None) -> None:
        if self._closer is not None:
            self._closer.join(timeout)


def _put_all(items: list) -> None:
    for events, event in items:
        events.put_nowait(event)
