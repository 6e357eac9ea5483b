"""Manifests: what went into an artifact, so a served answer can be traced back to its data.

A model directory carries `llmtools-manifest.json`; a single file (a GGUF, a report) carries a
sidecar `<file>.manifest.json`. Content hashes of large files are cached by (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any, Iterable

MANIFEST_NAME = "llmtools-manifest.json"


def cache_dir() -> str:
    """$LLMTOOLS_CACHE, else $XDG_CACHE_HOME/llmtools, else ~/.cache/llmtools (created)."""
    path = os.environ.get("LLMTOOLS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "llmtools"
    )
    os.makedirs(path, exist_ok=True)
    return path


def _hash_cache_path() -> str:
    return os.path.join(cache_dir(), "hashes.json")


def _load_hash_cache() -> dict:
    try:
        with open(_hash_cache_path(), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _save_hash_cache(cache: dict) -> None:
    tmp = _hash_cache_path() + f".{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(cache, fh)
        os.replace(tmp, _hash_cache_path())
    except OSError:
        pass  # a cache that cannot be written only costs a re-hash next time


def sha256_file(path: str, use_cache: bool = True) -> str:
    """sha256 of a file; cached by absolute path, size and mtime so large files hash once."""
    path = os.path.abspath(path)
    st = os.stat(path)
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _load_hash_cache() if use_cache else {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    value = digest.hexdigest()
    if use_cache:
        cache = {k: v for k, v in _load_hash_cache().items() if not k.startswith(path + "|")}
        cache[key] = value
        _save_hash_cache(cache)
    return value


def sha256_dir(path: str, patterns: Iterable[str] = (".safetensors", ".json", ".model", ".txt", ".jinja")) -> str:
    """One hash over the weight, config and tokenizer files of a model directory (not the manifest)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name == MANIFEST_NAME or not os.path.isfile(full) or not name.endswith(tuple(patterns)):
            continue
        digest.update(name.encode() + b"\0" + sha256_file(full).encode() + b"\n")
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HashingReader:
    """Wrap record streaming to hash the exact bytes of the records seen, and count them."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.count = 0

    def add(self, record: Any) -> None:
        from llmtools.io import dumps

        self._digest.update(dumps(record) + b"\n")
        self.count += 1

    @property
    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def library_versions(names: Iterable[str] = ("llmtools", "torch", "transformers", "peft", "gguf", "llama_cpp_python", "datasketch", "nltk", "sacrebleu", "rouge_score")) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out


def build_manifest(
    kind: str,
    *,
    inputs: dict[str, Any] | None = None,
    base_model: dict | None = None,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    libraries: Iterable[str] | None = None,
) -> dict:
    """A manifest: command line, version, inputs (with hashes), base model, params, libraries."""
    from llmtools import __version__

    manifest = {
        "kind": kind,
        "llmtools_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command_line": [os.path.basename(sys.argv[0])] + sys.argv[1:],
        "inputs": inputs or {},
        "base_model": base_model,
        "params": params or {},
        "metrics": metrics or {},
        "libraries": library_versions(libraries) if libraries is not None else library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if extra:
        manifest.update(extra)
    return manifest


def manifest_path_for(artifact: str) -> str:
    """Where the manifest of `artifact` lives: inside a directory, or as a sidecar file."""
    if os.path.isdir(artifact):
        return os.path.join(artifact, MANIFEST_NAME)
    return artifact + ".manifest.json"


def write_manifest(artifact: str, manifest: dict) -> str:
    """Write the manifest for `artifact` atomically; returns its path."""
    path = manifest_path_for(artifact)
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def read_manifest(artifact: str) -> dict | None:
    path = manifest_path_for(artifact)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
