"""Loading a model reference: the backend it needs, the files each backend reads, the API key.

    load_model(ref, backend=None, api_key=None, trust_pickle=False, **opts) -> Backend
    hf_dir(ref) -> str      a safetensors HF directory (a GGUF is converted once, cached)
    gguf_file(ref) -> str   a .gguf path, for llama.cpp

The backends are imported only when a model of theirs is loaded.
"""

from __future__ import annotations

import os

from llmtools.errors import UsageError
from llmtools.models.refs import ResolvedRef, resolve

# Where an http(s) endpoint's API key is looked up when none is given, in this order.
API_KEY_ENV = ("LLMTOOLS_API_KEY", "OPENAI_API_KEY")

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
BACKEND_CHOICES = ("auto", *BACKENDS)  # as the --backend option offers them


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

        return HttpBackend(resolved.url, api_key=api_key or api_key_from_env(), **opts)
    if resolved.kind == "http":
        raise UsageError(f"{resolved.ref} is an http endpoint; it can only use the http backend, not {name}")
    if name == "torch":
        from llmtools.models.torch_backend import load_torch

        return load_torch(resolved, trust_pickle=trust_pickle, **opts)
    from llmtools.models.llama_backend import load_llama

    return load_llama(resolved, trust_pickle=trust_pickle, **opts)


def api_key_from_env(names: tuple[str, ...] = API_KEY_ENV) -> str | None:
    """The first of these environment variables that is set and not empty."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None
