"""Model references: what a `-m MODEL` string points at, the same way in every command.

A reference is, in this order of checks:
  1. an `http(s)://host[:port]/v1` URL              -> kind "http"
  2. an existing directory in Hugging Face format   -> kind "hf"   (safetensors; pickle refused)
     (a directory holding exactly one .gguf file and no config.json -> kind "gguf")
  3. an existing `.gguf` file                        -> kind "gguf"
  4. a registry short name (`llmtools models`)       -> kind "registry" (its GGUF file)
Anything else is a missing model (exit 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from llmtools.errors import MissingDependency, UsageError
from llmtools.models import registry

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class ResolvedRef:
    ref: str  # what the user wrote
    kind: str  # "hf" | "gguf" | "http" | "registry"
    name: str  # display name: registry name, directory/file stem, or the URL's host
    path: str | None = None  # absolute local path (dir or .gguf file); the GGUF for a registry model
    url: str | None = None  # normalised base URL ending in /v1, for http
    entry: registry.RegistryEntry | None = None
    pickle: bool = False  # an HF directory with pickle weights only (allowed by trust_pickle)

    @property
    def format(self) -> str:
        return {"registry": "gguf"}.get(self.kind, self.kind)


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def normalise_url(ref: str) -> str:
    parsed = urlparse(ref)
    if not parsed.netloc:
        raise UsageError(f"not a valid endpoint URL: {ref!r} (expected http(s)://host[:port]/v1)")
    path = parsed.path.rstrip("/")
    if not path:
        path = "/v1"
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def _weights_in(path: str) -> tuple[list[str], list[str], list[str]]:
    names = os.listdir(path)
    safetensors = [n for n in names if n.endswith(".safetensors")]
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES) and n != "training_args.bin"]
    ggufs = [n for n in names if n.endswith(".gguf")]
    return safetensors, pickles, ggufs


def resolve(ref: str | os.PathLike, trust_pickle: bool = False) -> ResolvedRef:
    """What `ref` points at, without loading anything. Raises MissingDependency / UsageError."""
    if ref is None or str(ref).strip() == "":
        raise UsageError("no model given")
    ref = os.fspath(ref)
    if is_url(ref):
        url = normalise_url(ref)
        return ResolvedRef(ref, "http", urlparse(url).netloc, url=url)

    path = os.path.expanduser(ref)
    if os.path.isdir(path):
        return _resolve_dir(ref, os.path.abspath(path), trust_pickle)
    if os.path.isfile(path):
        if not path.endswith(".gguf") and not _has_gguf_magic(path):
            raise UsageError(
                f"{ref}: not a model file (expected a .gguf file, a Hugging Face directory, "
                "an http(s)://host/v1 endpoint or a registry name)"
            )
        if not _has_gguf_magic(path):
            raise UsageError(f"{ref}: not a GGUF file (the magic bytes 'GGUF' are missing)")
        path = os.path.abspath(path)
        return ResolvedRef(ref, "gguf", _stem(path), path=path)

    entry = registry.get(ref)
    if entry is not None:
        return ResolvedRef(ref, "registry", entry.name, path=entry.path(), entry=entry)

    known = ", ".join(registry.names())
    raise MissingDependency(
        f"model '{ref}' not found: it is not a directory, a .gguf file, an http(s):// endpoint "
        f"or a registry name (known: {known}; see `llmtools models`)"
    )


def _resolve_dir(ref: str, path: str, trust_pickle: bool) -> ResolvedRef:
    safetensors, pickles, ggufs = _weights_in(path)
    has_config = os.path.isfile(os.path.join(path, "config.json"))
    if not has_config and len(ggufs) == 1 and not safetensors:
        gguf = os.path.join(path, ggufs[0])
        return ResolvedRef(ref, "gguf", _stem(gguf), path=gguf)
    if not has_config:
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise UsageError(
                f"{ref}: a LoRA adapter directory, not a full model; merge it into its base model "
                "first (llmtools finetune writes merged models by default)"
            )
        raise UsageError(f"{ref}: not a Hugging Face model directory (no config.json)")
    if safetensors:
        return ResolvedRef(ref, "hf", os.path.basename(path.rstrip(os.sep)), path=path)
    if pickles:
        if not trust_pickle:
            raise UsageError(
                f"{ref}: weights are pickle files ({', '.join(sorted(pickles)[:3])}), and loading a "
                "pickle can run arbitrary code from whoever made it. Convert them to safetensors, or "
                "pass --trust-pickle if you trust the source"
            )
        return ResolvedRef(ref, "hf", os.path.basename(path.rstrip(os.sep)), path=path, pickle=True)
    if len(ggufs) == 1:
        gguf = os.path.join(path, ggufs[0])
        return ResolvedRef(ref, "gguf", _stem(gguf), path=gguf)
    raise MissingDependency(f"{ref}: no weights found (no .safetensors or .gguf file in the directory)")


def _stem(path: str) -> str:
    base = os.path.basename(path)
    return base[: -len(".gguf")] if base.endswith(".gguf") else base


def _has_gguf_magic(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False
