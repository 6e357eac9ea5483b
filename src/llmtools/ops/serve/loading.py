"""The model loader a server or a batch run uses: `ref -> Backend`, with options fixed once."""

from __future__ import annotations

from typing import Any, Callable


def make_loader(backend: str | None = None, api_key: str | None = None, trust_pickle: bool = False, **opts: Any) -> Callable:
    """A `ref -> Backend` function over llmtools.models.load_model with fixed options."""
    clean = {k: v for k, v in opts.items() if v is not None}

    def load(ref: str):
        from llmtools.models import load_model

        return load_model(ref, backend=backend, api_key=api_key, trust_pickle=trust_pickle, **clean)

    return load
