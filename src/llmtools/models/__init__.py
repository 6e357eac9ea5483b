"""Model references, the registry and backends behind one interface (see base.py).

Public API (stable; every command uses only this):

    load_model(ref, backend=None, api_key=None, trust_pickle=False, **opts) -> Backend
    resolve(ref, trust_pickle=False) -> ResolvedRef   # what a reference points at, no loading
    hf_dir(ref, trust_pickle=False) -> str            # a safetensors HF dir (converting a GGUF once, cached)
    gguf_file(ref) -> str                             # a .gguf path, for llama.cpp
    identity_of(ref) -> ModelIdentity                 # cheap: cached content hash, manifest

Nothing here imports torch, transformers or llama_cpp at module import time.

`load_model` options (each backend ignores the ones that do not apply to it):

    n_ctx=None       context length (llama.cpp: default 2048 or the model's, whichever is smaller;
                     torch: the model's max_position_embeddings; caps sliding-window scoring)
    threads=None     CPU threads (torch.set_num_threads / llama.cpp n_threads, and n_threads_batch
                     unless batch_threads is given; unset, $LLMTOOLS_THREADS / $OMP_NUM_THREADS, else
                     llama.cpp decodes on half the cores and processes prompts on all of them)
    batch_threads=None  llama.cpp: threads for prompt processing (n_threads_batch) on their own
    device=None      torch device: "cpu", "cuda", "cuda:1", "mps" (default: cuda if available, else cpu)
    dtype=None       torch dtype name: "float32", "bfloat16", "float16" (default: float32 on cpu)
    n_gpu_layers=0   llama.cpp layers offloaded to a GPU (-1 = all)
    seed=None        default sampling seed when GenerationParams.seed is None
    model=None       http: the model id to ask for (default: the first one /v1/models lists)
    timeout=120.0    http: seconds per request; retries=3; concurrency=4 (generate_batch threads)
    batch_size=8     torch: texts per forward pass in generate_batch / loglikelihood / embed
"""

from __future__ import annotations

import os

from llmtools.errors import UsageError
from llmtools.models.base import (  # noqa: F401
    Backend,
    Chunk,
    Completion,
    GenerationParams,
    LogLikelihood,
    Message,
    ModelIdentity,
    NotSupported,
)
from llmtools.models.identity import identity_of  # noqa: F401
from llmtools.models.refs import ResolvedRef, resolve  # noqa: F401
from llmtools.models.registry import DEFAULT_MODEL, REGISTRY  # noqa: F401

BACKEND_ALIASES = {
    "torch": "torch",
    "transformers": "torch",
    "hf": "torch",
    "llama": "llama",
    "llama.cpp": "llama",
    "llamacpp": "llama",
    "llama_cpp": "llama",
    "gguf": "llama",
    "http": "http",
    "openai": "http",
}
BACKENDS = ("torch", "llama", "http")


def _as_resolved(ref: "str | os.PathLike | ResolvedRef", trust_pickle: bool) -> ResolvedRef:
    return ref if isinstance(ref, ResolvedRef) else resolve(ref, trust_pickle=trust_pickle)


def hf_dir(ref: "str | os.PathLike | ResolvedRef", trust_pickle: bool = False) -> str:
    """A Hugging Face directory for `ref`: the directory itself, or a cached safetensors copy of a
    GGUF / registry model (converted once; later calls return the cached copy)."""
    resolved = _as_resolved(ref, trust_pickle)
    if resolved.kind == "hf":
        return resolved.path
    if resolved.kind in ("gguf", "registry"):
        from llmtools.models.convert import gguf_to_hf

        return gguf_to_hf(resolved.path, resolved.name)
    raise UsageError(f"{resolved.ref}: an http endpoint has no local weights; give a directory, .gguf file or registry name")


def gguf_file(ref: "str | os.PathLike | ResolvedRef", trust_pickle: bool = False, outtype: str = "f32") -> str:
    """A .gguf path for `ref`: the file itself, the registry model's file, or a cached GGUF copy of
    an HF directory (written once with llmtools.models.gguf_writer at `outtype`)."""
    resolved = _as_resolved(ref, trust_pickle)
    if resolved.kind in ("gguf", "registry"):
        return resolved.path
    if resolved.kind == "hf":
        from llmtools.models.convert import hf_to_gguf_cached

        return hf_to_gguf_cached(resolved.path, resolved.name, outtype)
    raise UsageError(f"{resolved.ref}: an http endpoint has no local GGUF file")


def natural_backend(resolved: ResolvedRef) -> str:
    return {"hf": "torch", "gguf": "llama", "registry": "llama", "http": "http"}[resolved.kind]


def load_model(
    ref: "str | os.PathLike | ResolvedRef",
    backend: str | None = None,
    api_key: str | None = None,
    trust_pickle: bool = False,
    **opts,
) -> Backend:
    """Load a model reference with `backend` ("torch", "llama", "http"; None = the natural one:
    HF dir -> torch, .gguf or registry name -> llama, URL -> http). See the module docstring for
    `opts`. Missing libraries exit 4 with the pip command; a missing model exits 4 too."""
    resolved = _as_resolved(ref, trust_pickle)
    if backend is None or backend == "auto":
        name = natural_backend(resolved)
    else:
        name = BACKEND_ALIASES.get(backend.lower())
        if name is None:
            raise UsageError(f"unknown backend {backend!r} (choose from: {', '.join(BACKENDS)})")
    if name == "http":
        if resolved.kind != "http":
            raise UsageError(f"the http backend needs an http(s)://host/v1 endpoint, not {resolved.ref!r}")
        from llmtools.models.http_backend import HttpBackend

        return HttpBackend(resolved.url, api_key=api_key or _env_api_key(), **opts)
    if resolved.kind == "http":
        raise UsageError(f"{resolved.ref} is an http endpoint; it can only use the http backend, not {name}")
    if name == "torch":
        from llmtools.models.torch_backend import load_torch

        return load_torch(resolved, trust_pickle=trust_pickle, **opts)
    from llmtools.models.llama_backend import load_llama

    return load_llama(resolved, trust_pickle=trust_pickle, **opts)


def _env_api_key() -> str | None:
    return os.environ.get("LLMTOOLS_API_KEY") or os.environ.get("OPENAI_API_KEY")
