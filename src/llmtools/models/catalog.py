"""What `llmtools models` reports: the registry, where each model lives, what is ready, the cache."""

from __future__ import annotations

import importlib.util
import os
from typing import Iterator

from llmtools import provenance
from llmtools.models import convert, registry


def _importable(*modules: str) -> bool:
    """Whether the modules are installed, without importing them (keeps this command fast)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def registry_records(with_hash: bool = False) -> Iterator[dict]:
    """One record per registry model: where it lives and whether each backend can use it now."""
    for entry in registry.REGISTRY.values():
        path = entry.locate()
        converted = convert.cached_hf_dir(path, entry.name) if path else None
        record = {
            "name": entry.name,
            "description": entry.description,
            "format": entry.format,
            "installed": path is not None,
            "path": path,
            "hf_cache": converted,
            "ready": {
                "llama": path is not None and _importable("llama_cpp"),
                "torch": converted is not None and _importable("torch", "transformers"),
            },
            "package": entry.package,
            "install": entry.pip,
            "upstream": entry.upstream,
        }
        if with_hash:
            record["sha256"] = provenance.sha256_file(path) if path else None
        yield record


def describe(ref: str, api_key: str | None = None, trust_pickle: bool = False) -> dict:
    """What a model reference resolves to, the backend it would load with, and its identity."""
    from llmtools.models.loading import natural_backend
    from llmtools.models.identity import identity_of_resolved
    from llmtools.models.refs import resolve

    resolved = resolve(ref, trust_pickle=trust_pickle)
    identity = identity_of_resolved(resolved, api_key=api_key)
    record = {
        "ref": ref,
        "kind": resolved.kind,
        "name": resolved.name,
        "format": resolved.format,
        "path": resolved.url or resolved.path,
        "backend": natural_backend(resolved),
        "identity": identity.to_dict(),
    }
    if resolved.kind == "registry" and resolved.path:
        record["hf_cache"] = convert.cached_hf_dir(resolved.path, resolved.name)
    return record


def cache_records() -> Iterator[dict]:
    """Every converted copy in the cache: what it was made from, and its size on disk."""
    root = convert.models_cache()
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".") or name.endswith((".lock", ".manifest.json", ".tmp")):
            continue
        manifest = provenance.read_manifest(path) or {}
        base = manifest.get("base_model") or {}
        yield {
            "path": path,
            "kind": manifest.get("kind"),
            "source": base.get("path"),
            "source_sha256": manifest.get("source_sha256"),
            "complete": bool(manifest),
            "bytes": _size(path),
        }


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total
