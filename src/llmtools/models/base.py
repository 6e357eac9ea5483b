"""The one interface every model backend implements (transformers/torch, llama.cpp, HTTP).

Commands never talk to transformers, llama_cpp or an HTTP API directly for inference: they call
`llmtools.models.load_model(ref)` and use this interface. Nothing here imports a heavy library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

from llmtools.errors import ExitCode, LLMToolsError


class NotSupported(LLMToolsError):
    """The backend cannot do this (for example `embed` on a model without embeddings)."""

    exit_code = ExitCode.MISSING


@dataclass
class ModelIdentity:
    """Who a loaded model is. serve, score and watch put `to_dict()` in their records."""

    name: str  # registry name, directory/file name, or the endpoint's model id
    format: str  # "hf" | "gguf" | "http"
    path: str | None = None  # local path or URL
    sha256: str | None = None  # content hash of the weights (cached; None for http)
    parent: str | None = None  # base model this was derived from, when a manifest says so
    manifest: dict | None = None  # the provenance manifest shipped beside the model, if any

    def to_dict(self, with_manifest: bool = False) -> dict:
        data = asdict(self)
        if not with_manifest:
            data.pop("manifest")
        return data

    @property
    def short(self) -> str:
        """`name@sha12` — compact enough for every log record."""
        return f"{self.name}@{self.sha256[:12]}" if self.sha256 else self.name


@dataclass
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means off
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass
class Chunk:
    """One piece of a streamed generation. The last chunk has finish_reason and token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class LogLikelihood:
    logprob: float  # sum of natural-log probabilities of the scored tokens
    n_tokens: int  # how many tokens were scored (the first token has no context and is not)


Message = dict  # {"role": "user" | "assistant" | "system", "content": str}


class Backend:
    """Base class: backends override the abstract methods; the rest is shared."""

    identity: ModelIdentity
    backend_name: str = "base"
    supports_embeddings: bool = False

    # -- generation
    def generate(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        raise NotImplementedError

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams | None = None) -> list[Completion]:
        """Generate for several prompts. Backends batch or run concurrently where they can."""
        return [self.generate(p, params) for p in prompts]

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Chunk]:
        """Yield text as it is generated. Default: one chunk holding the whole completion."""
        done = self.generate(prompt, params)
        yield Chunk(done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens)

    # -- chat: rendered with the model's own chat template
    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError

    def chat(self, messages: Sequence[Message], params: GenerationParams | None = None) -> Completion:
        return self.generate(self.apply_chat_template(messages), params)

    def chat_batch(self, conversations: Sequence[Sequence[Message]], params: GenerationParams | None = None) -> list[Completion]:
        return self.generate_batch([self.apply_chat_template(m) for m in conversations], params)

    def chat_stream(self, messages: Sequence[Message], params: GenerationParams | None = None) -> Iterator[Chunk]:
        return self.stream(self.apply_chat_template(messages), params)

    # -- tokens
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    # -- scoring
    def loglikelihood(self, texts: Sequence[str]) -> list[LogLikelihood]:
        raise NotImplementedError

    def perplexity(self, texts: Sequence[str]) -> float:
        """Token-weighted perplexity over all texts: exp(-sum logprob / sum tokens)."""
        results = self.loglikelihood(texts)
        total = sum(r.logprob for r in results)
        n = sum(r.n_tokens for r in results)
        if n == 0:
            raise ValueError("no tokens to score")
        return math.exp(-total / n)

    # -- embeddings
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotSupported(f"{self.backend_name} backend for {self.identity.name} cannot embed")

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
