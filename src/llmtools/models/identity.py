"""Model identity: who a model is (name, format, content hash, parent, manifest).

Content hashes go through provenance.sha256_file / sha256_dir, which cache by path, size and
mtime, so asking for the identity of a large model twice costs one stat, not a re-hash.
"""

from __future__ import annotations

import os

from llmtools import provenance
from llmtools.models.base import ModelIdentity
from llmtools.models.refs import ResolvedRef, resolve


def parent_from_manifest(manifest: dict | None) -> str | None:
    """The base model a manifest names: its `parent`, else `base_model` (name@sha12 when known)."""
    if not manifest:
        return None
    if manifest.get("parent"):
        return str(manifest["parent"])
    base = manifest.get("base_model")
    if isinstance(base, dict):
        name = base.get("name") or base.get("path")
        sha = base.get("sha256")
        if name:
            return f"{name}@{sha[:12]}" if sha else str(name)
    elif isinstance(base, str) and base:
        return base
    return None


def local_identity(name: str, fmt: str, path: str, parent: str | None = None) -> ModelIdentity:
    """Identity of a local HF directory or GGUF file."""
    if os.path.isdir(path):
        sha = provenance.sha256_dir(path)
    else:
        sha = provenance.sha256_file(path)
    manifest = provenance.read_manifest(path)
    return ModelIdentity(
        name=name,
        format=fmt,
        path=path,
        sha256=sha,
        parent=parent or parent_from_manifest(manifest),
        manifest=manifest,
    )


def identity_of_resolved(resolved: ResolvedRef, api_key: str | None = None) -> ModelIdentity:
    if resolved.kind == "http":
        from llmtools.models.http_backend import endpoint_identity

        return endpoint_identity(resolved.url, api_key=api_key)
    parent = None
    if resolved.kind == "registry" and resolved.entry is not None:
        parent = resolved.entry.upstream or None
    return local_identity(resolved.name, resolved.format, resolved.path, parent=parent)


def identity_of(ref: str, trust_pickle: bool = False, api_key: str | None = None) -> ModelIdentity:
    """The identity of a model reference without loading it (an http endpoint is asked /v1/models)."""
    return identity_of_resolved(resolve(ref, trust_pickle=trust_pickle), api_key=api_key)
