"""Model references, the registry and backends behind one interface (see base.py).

Public API (stable; every command uses only this):

    load_model(ref, backend=None, api_key=None, trust_pickle=False, **opts) -> Backend
    resolve(ref, trust_pickle=False) -> ResolvedRef   # what a reference points at, no loading
    hf_dir(ref, trust_pickle=False) -> str            # a safetensors HF dir (converting a GGUF once, cached)
    gguf_file(ref) -> str                             # a .gguf path, for llama.cpp
    identity_of(ref) -> ModelIdentity                 # cheap: cached content hash, manifest

Nothing here imports torch, transformers or llama_cpp at module import time.
"""

from llmtools.models.base import (  # noqa: F401
    Backend,
    Chunk,
    Completion,
    GenerationParams,
    LogLikelihood,
    ModelIdentity,
    NotSupported,
)
