"""The llama.cpp backend (llama-cpp-python) for GGUF files.

One `Llama` instance generates one request at a time. `generate_batch` (`serve --batch`, the
Spark engine's partitions, anything that hands over several prompts at once) runs them together
through a continuous batcher of its own (models/llama_batching.py, the scheduler of `serve
--parallel`), created on first use with up to `BATCH_PARALLEL` slots. Scoring needs the logits of every position (`logits_all=True`)
and embeddings need `embedding=True`, so each gets its own instance, created on first use; all
of them memory-map the same file, so the weights are not loaded twice. Calls are serialised with
a lock because a llama.cpp context is not thread-safe.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from llmtools.errors import LLMToolsError, require
from llmtools.models._text import StopScanner, fallback_chat_prompt, render_chat_template, sliding_windows
from llmtools.models.base import Backend, Chunk, Completion, GenerationParams, LogLikelihood, ModelIdentity
from llmtools.models.identity import local_identity
from llmtools.models.loading import gguf_file
from llmtools.models.refs import ResolvedRef

DEFAULT_N_CTX = 2048
BATCH_PARALLEL = 8  # generate_batch: sequences decoded together (each slot holds n_ctx cells)


def load_llama(resolved: ResolvedRef, trust_pickle: bool = False, **opts: Any) -> "LlamaBackend":
    path = gguf_file(resolved, trust_pickle=trust_pickle)
    parent = resolved.entry.upstream if resolved.entry is not None else None
    identity = local_identity(resolved.name, "gguf", path, parent=parent)
    return LlamaBackend(path, identity, **opts)


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration (fd 1, where records go, is left alone)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_header_values(fh: Any, wanted: Callable[[str], bool]) -> Iterator[tuple[str, Any]]:
    """(key, value) for the header keys `wanted` accepts, read straight from a GGUF v2/v3 file.

    The `gguf` package would do, but importing it pulls in sentencepiece, which brings its own
    copy of the OpenMP runtime into the process beside llama.cpp's (and ~0.1 s of imports).
    """
    import struct

    def read(fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = fh.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def read_str() -> str:
        return fh.read(read("<Q")).decode("utf-8", errors="replace")

    def skip(vtype: int) -> None:
        if vtype in _GGUF_SCALARS:
            fh.seek(struct.calcsize(_GGUF_SCALARS[vtype]), 1)
        elif vtype == 8:
            fh.seek(read("<Q"), 1)
        elif vtype == 9:
            item, count = read("<I"), read("<Q")
            if item in _GGUF_SCALARS:
                fh.seek(struct.calcsize(_GGUF_SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    skip(item)
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")

    if fh.read(4) != b"GGUF" or read("<I") < 2:
        return
    read("<Q")  # tensor count
    for _ in range(read("<Q")):
        key, vtype = read_str(), read("<I")
        if wanted(key) and (vtype in _GGUF_SCALARS or vtype == 8):
            yield key, read_str() if vtype == 8 else read(_GGUF_SCALARS[vtype])
        else:
            skip(vtype)


def gguf_context_length(path: str) -> int | None:
    """The training context length a GGUF file declares (`<arch>.context_length`), if any."""
    try:
        arch, lengths = None, {}
        with open(path, "rb") as fh:
            for key, value in _gguf_header_values(fh, lambda k: k == "general.architecture" or k.endswith(".context_length")):
                if key == "general.architecture":
                    arch = value
                else:
                    lengths[key] = value
                if arch and f"{arch}.context_length" in lengths:
                    break
        value = lengths.get(f"{arch}.context_length") if arch else None
        return int(value) if value else None
    except Exception:  # noqa: BLE001 - an unreadable header only costs the default n_ctx
        return None


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask, so a container's or taskset's limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int | None:
    for name in ("LLMTOOLS_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(name, "").strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
    return None


def llama_threads(threads: int | None = None, batch_threads: int | None = None) -> tuple[int, int]:
    """(n_threads, n_threads_batch): the threads that decode tokens and that process prompt batches.

    - `threads` given (or $LLMTOOLS_THREADS / $OMP_NUM_THREADS set) is the CPU budget for both,
      as llama.cpp's own `-t` is: two processes each spinning every core slow each other down
      many times over, so a pipeline stage pinned to one thread stays on one.
    - Nothing said: half the cores decode (decoding is memory-bound) and every core processes
      prompt batches (compute-bound), the defaults of llama-cpp-python and llama_cpp.server.
    - `batch_threads` sets the prompt-batch threads on its own, over either of the above.
    """
    threads = int(threads) if threads else _env_threads()
    cpus = available_cpus()
    n_threads = threads or max(cpus // 2, 1)
    n_batch = int(batch_threads) if batch_threads else (threads or cpus)
    return n_threads, n_batch


class LlamaBackend(Backend):
    backend_name = "llama"
    supports_embeddings = True

    def __init__(
        self,
        path: str,
        identity: ModelIdentity,
        n_ctx: int | None = None,
        threads: int | None = None,
        n_gpu_layers: int = 0,
        seed: int | None = None,
        n_batch: int = 512,
        batch_threads: int | None = None,
        **_other_backends_opts: Any,
    ):
        self.llama_cpp = require("llama_cpp", "gguf", "the llama.cpp backend")
        self.path = path
        self.identity = identity
        self.default_seed = seed
        self._lock = threading.RLock()
        n_threads, n_threads_batch = llama_threads(threads, batch_threads)
        # whether a thread budget was given (--threads, $LLMTOOLS_THREADS, $OMP_NUM_THREADS): the
        # continuous batcher decodes on n_threads_batch when it was not (see llama_batching)
        self.threads_given = bool(threads or _env_threads())
        self._kwargs = dict(
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            n_gpu_layers=int(n_gpu_layers),
            n_batch=int(n_batch),
            verbose=False,
        )
        train_ctx = gguf_context_length(path)
        if not n_ctx:
            n_ctx = min(DEFAULT_N_CTX, train_ctx) if train_ctx else DEFAULT_N_CTX
        self.llm = self._open(n_ctx=int(n_ctx), seed=seed if seed is not None else 0xFFFFFFFF)
        # the window scoring uses (llama.cpp may round the context it allocates up)
        self.n_ctx = min(int(n_ctx), self.llm.n_ctx(), train_ctx or self.llm.n_ctx())
        self._scorer = None
        self._embedder = None
        self._batch_batcher: Any = None  # generate_batch's ContinuousBatcher, made on first use
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template")

    def _open(self, **kw: Any) -> Any:
        # verbose=False still lets llama.cpp's C code print notes (context overflow, pooling) to
        # fd 2; silence them at load, where nothing of ours is being written.
        try:
            with _quiet_stderr_fd():
                return self.llama_cpp.Llama(model_path=self.path, **self._kwargs, **kw)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMToolsError(f"llama.cpp cannot load {self.path}: {exc}") from exc

    # -- tokens
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def _prompt_ids(self, text: str) -> list[int]:
        # What create_completion feeds the model: BOS when the vocabulary asks for it, specials parsed.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    # -- chat
    def _token_text(self, token_id: int) -> str:
        if token_id is None or token_id < 0:
            return ""
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        if self.chat_template:
            return render_chat_template(
                self.chat_template,
                messages,
                add_generation_prompt,
                bos_token=self._token_text(self.llm.token_bos()),
                eos_token=self._token_text(self.llm.token_eos()),
            )
        return fallback_chat_prompt(messages, add_generation_prompt, self.identity.name)

    # -- generation
    def _completion_kwargs(self, params: GenerationParams) -> dict:
        seed = params.seed if params.seed is not None else self.default_seed
        return dict(
            max_tokens=params.max_tokens,
            temperature=max(params.temperature, 0.0),
            top_p=params.top_p,
            top_k=params.top_k or 0,  # llama.cpp: top_k <= 0 means the whole vocabulary
            min_p=0.0,  # llama-cpp-python defaults to 0.05; our params have no min_p, so off
            repeat_penalty=1.0,
            stop=list(params.stop) or None,
            seed=seed,
        )

    def _check_room(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt >= self.llm.n_ctx() and max_tokens > 0:
            raise LLMToolsError(
                f"prompt has {n_prompt} tokens, which fills the context of {self.llm.n_ctx()}; "
                "shorten it or load the model with a larger n_ctx"
            )

    def _forget_prefix(self) -> None:
        """Evaluate the next prompt from scratch, not from the previous call's cached prefix.

        llama-cpp-python reuses the longest prefix the context already holds and evaluates only
        the rest, down to the last prompt token alone. A lone token goes through other CPU
        kernels than a batch, so the last position's logits differ in the last bits, and a
        seeded sample or a near-tied greedy choice could then depend on what ran before (seen
        on an AVX2 build: the same prompt and seed gave different text on its second call).
        Prompt processing is cheap next to decoding, so every call starts clean instead."""
        self.llm.reset()

    def generate(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        params = params or GenerationParams()
        with self._lock:
            n_prompt = len(self._prompt_ids(prompt))
            if params.max_tokens == 0:  # llama.cpp reads max_tokens=0 as "until the context is full"
                return Completion("", n_prompt, 0, "length")
            self._check_room(n_prompt, params.max_tokens)
            self._forget_prefix()
            try:
                out = self.llm.create_completion(prompt, **self._completion_kwargs(params))
            except ValueError as exc:
                raise LLMToolsError(f"llama.cpp: {exc}") from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            choice["text"],
            int(usage.get("prompt_tokens", n_prompt)),
            int(usage.get("completion_tokens", 0)),
            choice.get("finish_reason") or "stop",
        )

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Chunk]:
        params = params or GenerationParams()
        with self._lock:
            n_prompt = len(self._prompt_ids(prompt))
            if params.max_tokens == 0:
                yield Chunk("", "length", n_prompt, 0)
                return
            self._check_room(n_prompt, params.max_tokens)
            # Stop sequences are cut here rather than by llama.cpp, so the end of the stream
            # tells an end-of-sequence token (not evaluated) from a stop or length cut.
            kwargs = {**self._completion_kwargs(params), "stop": None}
            scanner = StopScanner(params.stop)
            finish = "length"
            self._forget_prefix()
            parts = self.llm.create_completion(prompt, stream=True, **kwargs)
            try:
                for part in parts:
                    choice = part["choices"][0]
                    piece = scanner.feed(choice.get("text") or "")
                    if piece:
                        yield Chunk(piece)
                    if scanner.stopped:
                        finish = "stop"
                        break
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            except ValueError as exc:
                raise LLMToolsError(f"llama.cpp: {exc}") from exc
            finally:
                parts.close()
            tail = scanner.flush()
            if tail:
                yield Chunk(tail)
            # The context holds the prompt and every sampled token except the last one, which
            # is never evaluated; an end-of-sequence token is sampled but not counted.
            generated = self.llm.n_tokens - n_prompt + (0 if finish == "stop" and not scanner.stopped else 1)
        yield Chunk("", finish, n_prompt, max(generated, 0))

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams | None = None) -> list[Completion]:
        """Generate for several prompts together: one llama_decode per step for all of them,
        through a continuous batcher (the same scheduler as `serve --parallel`). A sequence's
        tokens do not depend on what shares its steps, so greedy text equals `generate`'s, and a
        seeded sample is the same in any batch; the first failure (a prompt that fills the
        context) is raised once all have finished."""
        params = params or GenerationParams()
        if len(prompts) <= 1:
            return [self.generate(p, params) for p in prompts]
        from llmtools.models.llama_batching import SeqRequest

        with self._lock:
            if self._batch_batcher is None:
                self._batch_batcher = self.batcher(parallel=min(len(prompts), BATCH_PARALLEL),
                                                   name="llmtools-generate-batch")
            batcher = self._batch_batcher
        out: list[Any] = [None] * len(prompts)
        left = threading.Semaphore(0)
        for i, prompt in enumerate(prompts):
            def done(value: Any, i: int = i) -> None:
                out[i] = value
                left.release()

            batcher.submit(SeqRequest(prompt, params, on_done=done))
        for _ in prompts:
            left.acquire()
        for value in out:
            if isinstance(value, BaseException):
                raise value
        return out

    # -- continuous batching (serve --parallel)
    def batcher(self, parallel: int = 8, **kw: Any) -> Any:
        """A ContinuousBatcher over this model: `parallel` sequences decoded together (its own
        context; the weights are shared). Close it before closing this backend."""
        from llmtools.models.llama_batching import ContinuousBatcher

        return ContinuousBatcher(self, parallel=parallel, **kw)

    # -- scoring
    def _scoring_model(self) -> Any:
        if self._scorer is None:
            self._scorer = self._open(n_ctx=self.n_ctx, logits_all=True, seed=0)
        return self._scorer

    def loglikelihood(self, texts: Sequence[str]) -> list[LogLikelihood]:
        import numpy as np

        results = []
        with self._lock:
            scorer = self._scoring_model()
            for text in texts:
                ids = self._prompt_ids(text)
                total, count = 0.0, 0
                for start, end, first in sliding_windows(len(ids), self.n_ctx):
                    window = ids[start:end]
                    scorer.reset()
                    scorer.eval(window)
                    # float32 like the logits themselves; only the rows that predict scored tokens
                    rows = np.asarray(scorer.scores[first - start - 1 : len(window) - 1], dtype=np.float32)
                    top = rows.max(axis=1, keepdims=True)
                    logz = top[:, 0].astype(np.float64) + np.log(np.exp(rows - top).sum(axis=1, dtype=np.float64))
                    targets = np.asarray(window[first - start :])
                    total += float((rows[np.arange(len(targets)), targets].astype(np.float64) - logz).sum())
                    count += len(targets)
                results.append(LogLikelihood(total if math.isfinite(total) else float("-inf"), count))
        return results

    # -- embeddings
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._open(
                    n_ctx=self.n_ctx,
                    embedding=True,
                    pooling_type=self.llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    seed=0,
                )
            return [list(map(float, self._embedder.embed(t, normalize=True))) for t in texts]

    def close(self) -> None:
        if getattr(self, "_batch_batcher", None) is not None:
            self._batch_batcher.close(drain=False)  # its context goes before the model it uses
            self._batch_batcher = None
        for attr in ("llm", "_scorer", "_embedder"):
            model = getattr(self, attr, None)
            if model is not None and hasattr(model, "close"):
                model.close()
            setattr(self, attr, None)
