"""Convert a model to GGUF, quantize it with llama.cpp, and measure what that cost.

    quantize_model(source, out_path, to="Q4_K_M", texts=[...]) -> report dict

It runs five stages, one function each: plan (check the request against the source, before any
work), convert (an HF source to the reference GGUF, and the output when llmtools writes it),
quantize (llama.cpp writes the output), evaluate (perplexity and speed before and after), report
(the report record; the manifest is written beside the output).

The flow:
  HF directory (safetensors, llama family)
      -> reference GGUF (F16, or BF16 for bfloat16 weights) written by models.gguf_writer
      -> output: F32/F16/BF16/Q8_0 written by gguf_writer directly, any other type by
         llama.cpp's llama_model_quantize from the reference
  GGUF file or registry model
      -> output by llama_model_quantize (an already-quantized source needs allow_requantize)

Perplexity and tokens/s "before" are measured on the reference (the F16 GGUF for an HF source, the
source file for a GGUF) and "after" on the output, by llama.cpp, on the same token ids.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from llmtools import __version__, errors, provenance
from llmtools.ops.quantize import ftypes

SAMPLE_PATH = Path(__file__).resolve().parents[2] / "data" / "quantize" / "eval_sample.jsonl"


def bundled_texts() -> list[str]:
    """The bundled evaluation sample: plain English paragraphs, used when no texts are given."""
    with open(SAMPLE_PATH, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def default_output(name: str, to: str) -> str:
    return f"{name}.{to}.gguf"


def _source_bytes(kind: str, path: str) -> int:
    if kind == "hf":
        return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))
    return os.path.getsize(path)


def _check_gguf_file(path: str) -> None:
    """A .gguf path that exists but is not a GGUF is corrupt input (exit 3), not a usage error."""
    if os.path.isfile(path) and path.endswith(".gguf"):
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                from llmtools.models.gguf_writer import CorruptModel

                raise CorruptModel(f"{path}: not a GGUF file (the magic bytes 'GGUF' are missing)")


def _hf_reference_type(hf_dir: str) -> str:
    from llmtools.models.gguf_writer import read_config

    config = read_config(hf_dir)
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "")
    return "bf16" if "bfloat16" in dtype else "f16"


def _provenance_kv(identity: Any, to: str, prune: list[int], sparsity: float, source_type: str | None) -> dict[str, Any]:
    """GGUF metadata for the output: general.* (GGUF's own provenance keys) and llmtools.*."""
    kv: dict[str, Any] = {
        "general.quantized_by": f"llmtools {__version__}",
        "general.base_model.count": 1,
        "general.base_model.0.name": identity.name,
        "llmtools.version": __version__,
        "llmtools.source.name": identity.name,
        "llmtools.source.format": identity.format,
        "llmtools.source.sha256": identity.sha256 or "",
        "llmtools.source.path": os.path.basename(identity.path or ""),
        "llmtools.quantize.type": to,
        "llmtools.quantize.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if identity.parent:
        kv["llmtools.source.parent"] = identity.parent
    if source_type:
        kv["llmtools.quantize.source_type"] = source_type
    if prune:
        kv["llmtools.quantize.prune_layers"] = ",".join(map(str, prune))
    if sparsity:
        kv["llmtools.quantize.sparsity"] = float(sparsity)
    return kv


@dataclass
class Plan:
    """What `plan` decided: the source, the output, and how it is made."""

    source: str
    out_path: str
    to: str
    resolved: Any  # models.ResolvedRef
    identity: Any  # models.ModelIdentity
    source_info: dict[str, Any] | None  # inspect_gguf of a GGUF source; None for an HF one
    prune: list[int]
    sparsity: float
    ftype: int | None  # llama.cpp's file type, or None when llmtools writes the output itself
    kv: dict[str, Any]  # GGUF metadata for the output
    allow_requantize: bool = False
    threads: int | None = None
    pure: bool = False
    leave_output_tensor: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def is_hf(self) -> bool:
        return self.resolved.kind == "hf"


@dataclass
class Files:
    """The files the stages write in the work folder (or the source itself)."""

    reference: str  # measured "before": the source GGUF, or the GGUF written from the HF weights
    reference_label: str
    quant_source: str  # what llama.cpp quantizes
    output: str  # the output, until it is renamed into place
    sparsity: dict[str, Any] | None = None  # the pruner's summary


def quantize_model(
    source: str,
    out_path: str | None = None,
    to: str = "Q4_K_M",
    texts: Iterable[str] | None = None,
    *,
    eval_set: str = "stdin",
    evaluate: bool = True,
    allow_requantize: bool = False,
    prune_layers: Sequence[int] = (),
    sparsity: float = 0.0,
    max_ppl_increase: float | None = None,
    threads: int | None = None,
    n_ctx: int = 512,
    max_eval_tokens: int = 4096,
    gen_tokens: int = 64,
    pure: bool = False,
    leave_output_tensor: bool = False,
    trust_pickle: bool = False,
    warn: Callable[[str], None] = lambda msg: None,
    manifest_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert/quantize `source` into `out_path`; returns the report record (see module docstring).
    `manifest_extra` goes into the output's manifest as it is (e.g. the tracking run)."""
    started = time.perf_counter()
    if max_ppl_increase is not None and not evaluate:
        raise errors.UsageError("--max-ppl-increase needs the evaluation; drop --no-eval")
    p = plan(source, out_path, to, prune_layers=prune_layers, sparsity=sparsity, allow_requantize=allow_requantize,
             threads=threads, pure=pure, leave_output_tensor=leave_output_tensor, trust_pickle=trust_pickle, warn=warn)
    with tempfile.TemporaryDirectory(prefix=".llmtools-quantize-", dir=os.path.dirname(os.path.abspath(p.out_path))) as work:
        files = convert(p, work, need_reference=evaluate or p.ftype is not None, warn=warn)
        quantize(p, files)
        measured = None
        if evaluate:
            measured = _evaluate(p, files, texts, eval_set, n_ctx=n_ctx, max_tokens=max_eval_tokens,
                                 gen_tokens=gen_tokens, warn=warn)
        rep = report(p, files, measured, max_ppl_increase, started)
        os.replace(files.output, p.out_path)  # same folder as `work`: an atomic rename
    rep["manifest"] = _write_manifest(p, rep, n_ctx=n_ctx, max_eval_tokens=max_eval_tokens, extra=manifest_extra)
    return rep


def plan(source: str, out_path: str | None, to: str, *, prune_layers: Sequence[int] = (), sparsity: float = 0.0,
         allow_requantize: bool = False, threads: int | None = None, pure: bool = False,
         leave_output_tensor: bool = False, trust_pickle: bool = False,
         warn: Callable[[str], None] = lambda msg: None) -> Plan:
    """Check the request against the source, before any work: the type, the source kind, layers
    to prune, requantizing; then name the output and its metadata."""
    from llmtools import models

    to = ftypes.check_type(to)
    prune = sorted({int(i) for i in prune_layers})
    if sparsity and not 0.0 < sparsity < 1.0:
        raise errors.UsageError("--sparsity must be between 0 and 1 (e.g. 0.5 for 50%)")
    _check_gguf_file(os.path.expanduser(source))
    resolved = models.resolve(source, trust_pickle=trust_pickle)
    if resolved.kind == "http":
        raise errors.UsageError(f"{source}: an http endpoint has no weights to quantize; give a directory, .gguf file or registry name")
    if resolved.kind == "hf" and resolved.pickle:
        raise errors.UsageError(f"{source}: pickle weights; save the model as safetensors first (GGUF conversion reads safetensors only)")
    is_hf = resolved.kind == "hf"
    if sparsity and not is_hf:
        raise errors.UsageError("--sparsity needs a Hugging Face (safetensors) source: GGUF weights are already quantized or packed")
    source_info = _check_layers(source, resolved, is_hf, prune)
    identity = models.identity_of(resolved.path if resolved.kind != "registry" else source, trust_pickle=trust_pickle)
    # llmtools writes F32/F16/BF16/Q8_0 itself; layer pruning and the llama.cpp-only knobs go through llama.cpp
    ours = is_hf and to in ftypes.WRITTEN_BY_US and not (prune or pure or leave_output_tensor)
    ftype = None if ours else ftypes.ftype_of(to)
    if source_info is not None and source_info["quantized"]:
        types = ", ".join(f"{k}x{v}" for k, v in source_info["tensor_types"].items())
        if not allow_requantize:
            raise errors.UsageError(
                f"{source} is already quantized ({types}); quantizing it again compounds the quality loss. "
                "Quantize from the F16/F32 or Hugging Face original, or pass --allow-requantize"
            )
        warn(f"requantizing an already-quantized model ({types}): quality loss compounds")
    out_path = out_path or default_output(resolved.name, to)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    kv = _provenance_kv(identity, to, prune, sparsity, source_info and _type_label(source_info))
    return Plan(source, out_path, to, resolved, identity, source_info, prune, sparsity, ftype, kv,
                allow_requantize=allow_requantize, threads=threads, pure=pure, leave_output_tensor=leave_output_tensor)


def _check_layers(source: str, resolved: Any, is_hf: bool, prune: list[int]) -> dict[str, Any] | None:
    """Refuse an unsupported architecture or layers the model lacks; a GGUF source's inspect_gguf."""
    from llmtools.models.gguf_writer import check_architecture, read_config
    from llmtools.ops.quantize.tensors import inspect_gguf

    source_info = None
    if is_hf:
        config = read_config(resolved.path)
        check_architecture(config, source)  # refuse early, before any hashing
        n_blocks = config.get("num_hidden_layers")
    else:
        source_info = inspect_gguf(resolved.path)
        n_blocks = source_info.get("block_count")
    if prune and n_blocks is not None:
        bad = [i for i in prune if i >= int(n_blocks)]
        if bad:
            raise errors.UsageError(f"--prune-layers {bad}: outside the model's layers 0..{int(n_blocks) - 1}")
        if len(prune) >= int(n_blocks):
            raise errors.UsageError("--prune-layers would remove every layer")
    return source_info


def convert(p: Plan, work: str, need_reference: bool = True, warn: Callable[[str], None] = lambda msg: None) -> Files:
    """An HF source: write the reference GGUF (F16, or BF16 for bfloat16 weights) when something
    needs it, and the output too when llmtools writes it (F32/F16/BF16/Q8_0, or a sparse copy
    for llama.cpp to quantize). A GGUF source is its own reference."""
    if not p.is_hf:
        return Files(p.resolved.path, "the source GGUF", p.resolved.path, os.path.join(work, "out.gguf"))
    from llmtools.models.gguf_writer import hf_to_gguf
    from llmtools.ops.quantize.tensors import MagnitudePruner

    hf = p.resolved.path
    ref_type = _hf_reference_type(hf)
    files = Files(os.path.join(work, f"reference.{ref_type}.gguf"), f"{ref_type.upper()} GGUF written from the Hugging Face weights",
                  "", os.path.join(work, "out.gguf"))
    files.quant_source = files.reference
    t = time.perf_counter()
    if need_reference:
        hf_to_gguf(hf, files.reference, ref_type, metadata=p.kv, warn=warn)
    pruner = MagnitudePruner(p.sparsity) if p.sparsity else None
    if p.ftype is None and pruner is None and p.to.lower() == ref_type and need_reference:
        files.output = files.reference  # the reference already is the output: convert once
    elif p.ftype is None:
        # F32/F16/BF16/Q8_0 straight from the HF weights, written by llmtools
        hf_to_gguf(hf, files.output, p.to.lower(), metadata=p.kv, transform=pruner, warn=warn)
    elif pruner is not None:
        files.quant_source = os.path.join(work, f"sparse.{ref_type}.gguf")
        hf_to_gguf(hf, files.quant_source, ref_type, metadata=p.kv, transform=pruner, warn=warn)
    p.seconds["convert"] = time.perf_counter() - t
    if pruner is not None:
        files.sparsity = pruner.summary()
    return files


def quantize(p: Plan, files: Files) -> None:
    """Write the output with llama.cpp's llama_model_quantize, when llmtools did not write it."""
    if p.ftype is None:
        return
    from llmtools.ops.quantize.llamacpp import llama_quantize

    t = time.perf_counter()
    llama_quantize(
        files.quant_source,
        files.output,
        p.ftype,
        allow_requantize=p.allow_requantize,
        prune_layers=p.prune,
        kv=p.kv,
        threads=p.threads,
        pure=p.pure,
        leave_output_tensor=p.leave_output_tensor,
    )
    p.seconds["quantize"] = time.perf_counter() - t


def evaluate(p: Plan, files: Files, texts: Iterable[str] | None, eval_set: str = "stdin", *, n_ctx: int = 512,
             max_tokens: int = 4096, gen_tokens: int = 64, warn: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Perplexity and tokens/s of the reference ("before") and the output ("after"), measured by
    llama.cpp on the same token ids: {"perplexity": {...}, "tokens_per_second": {...}}."""
    text_list = [t for t in (texts if texts is not None else bundled_texts()) if t and t.strip()]
    if not text_list:
        raise errors.BadInputError("no evaluation texts (stdin had no non-empty text); use --eval-sample or --no-eval")
    from llmtools.ops.quantize.measure import budget_texts, measure

    t = time.perf_counter()
    chosen = budget_texts(files.reference, text_list, max_tokens, n_ctx, p.threads)
    if not chosen:
        raise errors.BadInputError("the evaluation texts are too short to score (each needs 2+ tokens)")
    m_before = measure(files.reference, chosen, n_ctx=n_ctx, threads=p.threads, gen_tokens=gen_tokens)
    same_file = os.path.abspath(files.output) == os.path.abspath(files.reference)
    m_after = m_before if same_file else measure(files.output, chosen, n_ctx=n_ctx, threads=p.threads, gen_tokens=gen_tokens)
    if m_before["per_text_tokens"] != m_after["per_text_tokens"]:
        warn("the output model tokenizes the evaluation texts differently from the reference; "
             "the perplexities are not over the same tokens")
    p.seconds["evaluate"] = time.perf_counter() - t
    p0, p1 = m_before["perplexity"], m_after["perplexity"]
    s0, s1 = m_before["tokens_per_second"], m_after["tokens_per_second"]
    return {
        "perplexity": {
            "before": p0,
            "after": p1,
            "relative_change": (p1 / p0 - 1.0) if p0 and p1 else None,
            "absolute_change": (p1 - p0) if p0 and p1 else None,
            "scored_tokens": m_before["scored_tokens"],
            "texts": len(chosen),
            "same_tokens": m_before["per_text_tokens"] == m_after["per_text_tokens"],
            "eval_set": eval_set if texts is not None else "bundled sample",
            "n_ctx": n_ctx,
            "backend": "llama.cpp (llmtools.models llama backend)",
            "before_measured_on": files.reference_label,
        },
        "tokens_per_second": {
            "before": s0,
            "after": s1,
            "speedup": (s1 / s0) if s0 and s1 else None,
            "generated_tokens": gen_tokens,
            "threads": p.threads or "llama.cpp default",
            "prompt_before": m_before["prompt_tokens_per_second"],
            "prompt_after": m_after["prompt_tokens_per_second"],
        },
    }


_evaluate = evaluate  # quantize_model's own parameter is named `evaluate`


def report(p: Plan, files: Files, measured: dict[str, Any] | None, max_ppl_increase: float | None,
           started: float) -> dict[str, Any]:
    """The report record: sizes, bits per weight and tensor types read back from the files, the
    measurements, the --max-ppl-increase gate, and the time each stage took."""
    from llmtools.ops.quantize.tensors import inspect_gguf

    before = p.source_info if p.source_info is not None else (inspect_gguf(files.reference) if os.path.exists(files.reference) else None)
    after = inspect_gguf(files.output)
    perplexity = measured and measured["perplexity"]
    input_bytes = _source_bytes("hf" if p.is_hf else "gguf", p.resolved.path)
    rep: dict[str, Any] = {
        "source": p.identity.to_dict(),
        "output": p.out_path,
        "type": p.to,
        "written_by": "llmtools (gguf)" if p.ftype is None else "llama.cpp (llama_model_quantize)",
        "input_bytes": input_bytes,
        "output_bytes": after["file_bytes"],
        "compression_ratio": input_bytes / after["file_bytes"] if after["file_bytes"] else None,
        "bits_per_weight": {"before": before and before["bits_per_weight"], "after": after["bits_per_weight"]},
        "params": {"before": before and before["params"], "after": after["params"]},
        "tensor_types": {"before": before and before["tensor_types"], "after": after["tensor_types"]},
        "reference": {
            "what": files.reference_label,
            "bytes": before and before["file_bytes"],
            "type": before and _type_label(before),
        },
        "requantized": bool(p.source_info and p.source_info["quantized"]),
        "perplexity": perplexity,
        "tokens_per_second": measured and measured["tokens_per_second"],
    }
    if p.prune:
        rep["prune_layers"] = {
            "layers": p.prune,
            "blocks_before": before and before.get("block_count"),
            "blocks_after": after.get("block_count"),
            "method": "llama.cpp llama_model_quantize prune_layers",
        }
    if files.sparsity is not None:
        rep["sparsity"] = files.sparsity
    if max_ppl_increase is not None:
        change = perplexity and perplexity["relative_change"]
        rep["gate"] = {
            "max_ppl_increase": max_ppl_increase,
            "passed": change is not None and change <= max_ppl_increase,
        }
    p.seconds["total"] = time.perf_counter() - started
    rep["seconds"] = {k: round(v, 3) for k, v in p.seconds.items()}
    return rep


def _write_manifest(p: Plan, rep: dict[str, Any], *, n_ctx: int, max_eval_tokens: int,
                    extra: dict[str, Any] | None = None) -> str:
    manifest = provenance.build_manifest(
        "gguf",
        inputs={"eval_set": rep["perplexity"]["eval_set"] if rep.get("perplexity") else None},
        base_model=p.identity.to_dict(),
        params={
            "type": p.to,
            "prune_layers": p.prune,
            "sparsity": p.sparsity,
            "allow_requantize": p.allow_requantize,
            "pure": p.pure,
            "leave_output_tensor": p.leave_output_tensor,
            "n_ctx": n_ctx,
            "max_eval_tokens": max_eval_tokens,
        },
        metrics={k: rep[k] for k in ("perplexity", "tokens_per_second", "bits_per_weight", "tensor_types") if rep.get(k)},
        extra={"parent": p.identity.short, "gguf_metadata": p.kv, **(extra or {})},
    )
    return provenance.write_manifest(p.out_path, manifest)


def _type_label(info: dict[str, Any]) -> str | None:
    """A file's llama ftype name (general.file_type), else its most common 2-D tensor type."""
    ft = info.get("file_type")
    if isinstance(ft, int):
        try:
            name = ftypes.name_of_ftype(ft)
        except errors.MissingDependency:
            name = None
        if name:
            return name
    types = info.get("weights_by_type") or {}
    return next(iter(types), None)
