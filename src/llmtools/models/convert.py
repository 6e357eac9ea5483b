"""Format conversions with a cache: GGUF -> HF safetensors (for torch), HF -> GGUF (for llama.cpp).

Converted copies live under `<cache_dir>/models/` (cache_dir() is $LLMTOOLS_CACHE, else
$XDG_CACHE_HOME/llmtools, else ~/.cache/llmtools), in a folder named after the source and the
first 16 hex digits of its sha256, so a changed source gets a new copy and an unchanged one is
converted exactly once. Each copy carries a manifest naming the source path and hash.

Concurrency: a conversion takes an exclusive lock file, writes into a temporary folder beside
the target and renames it into place, so two processes converting at once produce one complete
copy and neither ever sees a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from llmtools import provenance
from llmtools.errors import MissingDependency, RuntimeFailure

COMPLETE_MARKER = provenance.MANIFEST_NAME  # written last: a folder with it is complete


def models_cache() -> str:
    path = os.path.join(provenance.cache_dir(), "models")
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive advisory lock on `path` (blocking), released on exit or process death."""
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "model"


def hf_cache_path(gguf_path: str, name: str, sha: str | None = None) -> str:
    sha = sha or provenance.sha256_file(gguf_path)
    return os.path.join(models_cache(), f"{_safe_name(name)}-{sha[:16]}-hf")


def cached_hf_dir(gguf_path: str, name: str) -> str | None:
    """The converted copy of `gguf_path` if it is already complete, else None (no conversion)."""
    target = hf_cache_path(gguf_path, name)
    return target if os.path.isfile(os.path.join(target, COMPLETE_MARKER)) else None


def gguf_to_hf(gguf_path: str, name: str, dtype: str = "float32") -> str:
    """A safetensors HF copy of a GGUF model, converted once and cached; returns its folder."""
    gguf_path = os.path.abspath(gguf_path)
    sha = provenance.sha256_file(gguf_path)
    target = hf_cache_path(gguf_path, name, sha)
    if os.path.isfile(os.path.join(target, COMPLETE_MARKER)):
        return target
    with file_lock(target + ".lock"):
        if os.path.isfile(os.path.join(target, COMPLETE_MARKER)):
            return target  # another process finished it while we waited
        tmp = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(target))
        try:
            _convert_gguf_to_hf(gguf_path, tmp, dtype)
            manifest = provenance.build_manifest(
                "gguf-to-hf",
                inputs={gguf_path: {"sha256": sha, "bytes": os.path.getsize(gguf_path)}},
                base_model={"name": name, "format": "gguf", "path": gguf_path, "sha256": sha},
                params={"dtype": dtype},
                extra={"parent": f"{name}@{sha[:12]}", "source_sha256": sha, "name": name},
                libraries=("llmtools", "torch", "transformers", "gguf"),
            )
            provenance.write_manifest(tmp, manifest)
            if os.path.isdir(target):  # an incomplete leftover from a killed run
                shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf_to_hf(gguf_path: str, out_dir: str, dtype: str) -> None:
    from llmtools.errors import require

    torch = require("torch", "train", "converting a GGUF model for the torch backend")
    transformers = require("transformers", "train", "converting a GGUF model for the torch backend")
    require("gguf", "gguf", "reading GGUF files")
    from llmtools.models._text import quiet_transformers

    quiet_transformers()
    folder, filename = os.path.split(gguf_path)
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        # Its de-quantizing loop draws a tqdm bar on stderr that no transformers setting silences.
        gguf_utils.tqdm = lambda iterable, **_: iterable
    except (ImportError, AttributeError):
        pass
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, dtype=getattr(torch, dtype)
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RuntimeFailure(f"cannot convert {gguf_path} for the torch backend: {exc}") from exc
    # The weights are already de-quantized to plain tensors; transformers still marks the model as
    # GGUF-quantized and then refuses to save it, so clear those marks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def hf_gguf_cache_path(hf_path: str, name: str, outtype: str, sha: str | None = None) -> str:
    sha = sha or provenance.sha256_dir(hf_path)
    return os.path.join(models_cache(), f"{_safe_name(name)}-{sha[:16]}-{outtype}.gguf")


def hf_to_gguf_cached(hf_path: str, name: str, outtype: str = "f32") -> str:
    """A GGUF copy of an HF directory for llama.cpp, written once via llmtools.models.gguf_writer."""
    hf_path = os.path.abspath(hf_path)
    sha = provenance.sha256_dir(hf_path)
    target = hf_gguf_cache_path(hf_path, name, outtype, sha)
    if os.path.isfile(target):
        return target
    try:
        from llmtools.models.gguf_writer import hf_to_gguf
    except ImportError as exc:
        raise MissingDependency(
            f"{hf_path}: llama.cpp needs a GGUF file and this build cannot convert HF models to GGUF "
            f"({exc}); use the torch backend, or convert it with `llmtools quantize`"
        ) from exc
    with file_lock(target + ".lock"):
        if os.path.isfile(target):
            return target
        fd, tmp = tempfile.mkstemp(prefix=".converting-", suffix=".gguf", dir=os.path.dirname(target))
        os.close(fd)
        try:
            hf_to_gguf(hf_path, tmp, outtype)
            manifest = provenance.build_manifest(
                "hf-to-gguf",
                inputs={hf_path: {"sha256": sha}},
                base_model={"name": name, "format": "hf", "path": hf_path, "sha256": sha},
                params={"outtype": outtype},
                extra={"parent": f"{name}@{sha[:12]}", "source_sha256": sha, "name": name},
                libraries=("llmtools", "gguf", "transformers"),
            )
            provenance.write_manifest(target, manifest)  # sidecar first; the GGUF rename completes it
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target
