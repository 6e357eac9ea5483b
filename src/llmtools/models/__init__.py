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
from llmtools.models.loading import (  # noqa: F401
    BACKENDS,
    api_key_from_env,
    gguf_file,
    hf_dir,
    load_model,
    natural_backend,
)
from llmtools.models.refs import ResolvedRef, resolve  # noqa: F401
from llmtools.models.registry import DEFAULT_MODEL, REGISTRY  # noqa: F401
