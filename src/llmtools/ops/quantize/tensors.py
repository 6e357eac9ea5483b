"""Reading GGUF files back (tensor types, sizes, bits per weight) and magnitude pruning.

The report states the tensor types a file really holds, read back with gguf.GGUFReader: llama.cpp
falls back to other types where a row is not a whole number of blocks (K-quants need rows that are
multiples of 256; SmolLM2's 576-wide rows get Q5_0/Q8_0 instead of Q4_K/Q6_K), so the type asked
for and the types obtained can differ.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Callable

from llmtools import errors
from llmtools.models.gguf_writer import CorruptModel

FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})


def inspect_gguf(path: str) -> dict[str, Any]:
    """Architecture, file type, tensor type counts, parameter count, sizes and bits per weight."""
    gguf = errors.require("gguf", "gguf", "reading GGUF files")
    try:
        reader = gguf.GGUFReader(path, "r")
    except FileNotFoundError:
        raise errors.MissingDependency(f"{path}: no such file") from None
    except Exception as exc:  # GGUFReader raises ValueError/struct errors/IndexError on bad files
        raise CorruptModel(f"{path}: not a readable GGUF file ({exc.__class__.__name__}: {exc})") from None

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception:
            return None

    arch = field("general.architecture")
    types: Counter[str] = Counter()
    weights_by_type: Counter[str] = Counter()
    n_params = 0
    n_bytes = 0
    for t in reader.tensors:
        name = t.tensor_type.name
        types[name] += 1
        weights_by_type[name] += int(t.n_elements)
        n_params += int(t.n_elements)
        n_bytes += int(t.n_bytes)
    quantizable = [t for t in reader.tensors if len(t.shape) >= 2]
    info = {
        "path": path,
        "architecture": arch,
        "name": field("general.name"),
        "file_type": field("general.file_type"),
        "block_count": field(f"{arch}.block_count") if arch else None,
        "tensor_types": dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))),
        "weights_by_type": dict(sorted(weights_by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "tensors": len(reader.tensors),
        "params": n_params,
        "tensor_bytes": n_bytes,
        "file_bytes": os.path.getsize(path),
        "bits_per_weight": (8.0 * n_bytes / n_params) if n_params else None,
        "quantized": any(t.tensor_type.name not in FLOAT_TYPES for t in quantizable),
        "llmtools": {k: field(k) for k in reader.fields if k.startswith("llmtools.")},
    }
    del reader
    return info


# --------------------------------------------------------------------------- magnitude pruning

# The linear layers of a llama block: what unstructured magnitude pruning is applied to.
# Embeddings, the output head and norms are left alone (pruning them hurts far more per weight).
PRUNABLE = re.compile(r"^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


class MagnitudePruner:
    """A `transform` for gguf_writer.hf_to_gguf: zero the smallest-|w| fraction of each linear weight."""

    def __init__(self, sparsity: float):
        if not 0.0 <= sparsity < 1.0:
            raise errors.UsageError("--sparsity must be in [0, 1)")
        self.sparsity = sparsity
        self.zeroed = 0
        self.total = 0
        self.tensors = 0

    def __call__(self, name: str, data):
        import numpy as np

        if not PRUNABLE.match(name) or self.sparsity <= 0:
            return data
        flat = np.array(data, dtype=np.float32, copy=True).reshape(-1)
        k = int(self.sparsity * flat.size)
        if k > 0:
            smallest = np.argpartition(np.abs(flat), k - 1)[:k]
            flat[smallest] = 0.0
        self.zeroed += int(np.count_nonzero(flat == 0.0))
        self.total += flat.size
        self.tensors += 1
        return flat.reshape(data.shape)

    def summary(self) -> dict[str, Any]:
        return {
            "requested": self.sparsity,
            "achieved": (self.zeroed / self.total) if self.total else 0.0,
            "pruned_tensors": self.tensors,
            "pruned_weights": self.total,
            "scope": "unstructured, per tensor, attention and MLP projections (embeddings, head, norms kept)",
        }


def transform_chain(*fns: Callable[[str, Any], Any] | None) -> Callable[[str, Any], Any] | None:
    fns = tuple(f for f in fns if f is not None)
    if not fns:
        return None

    def run(name: str, data):
        for f in fns:
            data = f(name, data)
        return data

    return run
