"""Convert a model to GGUF, quantize it with llama.cpp, and measure what that cost.

    quantize_model(source, out_path, to="Q4_K_M", texts=[...]) -> report dict

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
from typing import Any, Callable, Iterable, Sequence

from llmtools import __version__, errors, provenance
from llmtools.ops import quantize_types

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "quantize" / "eval_sample.jsonl"


def bundled_texts() -> list[str]:
    """The bundled evaluation sample: plain English paragraphs, used when no texts are given."""
    with open(SAMPLE_PATH, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def parse_ratio(value: str | float | None) -> float | None:
    """'5%' -> 0.05, '0.05' -> 0.05, None -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        raise errors.UsageError(f"not a ratio: {value!r} (write 5% or 0.05)") from None


def parse_layers(value: str | Sequence[int] | None) -> list[int]:
    """'28,29' or '20-23' or [3] -> sorted unique layer indices."""
    if not value:
        return []
    if not isinstance(value, str):
        return sorted({int(v) for v in value})
    out: set[int] = set()
    for part in value.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.update(range(int(lo), int(hi) + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise errors.UsageError(f"--prune-layers: not a layer list: {value!r} (write 28,29 or 20-23)") from None
    if any(i < 0 for i in out):
        raise errors.UsageError("--prune-layers: layer indices start at 0")
    return sorted(out)


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


def quantize_model(
    source: str,
    out_path: str | None = None,
    to: str = "Q4_K_M",
    texts: Iterable[str] | None = None,
    *,
    eval_set: str = "stdin",
    evaluate: bool = True,
    allow_requantize: bool = False,
    prune_layers: str | Sequence[int] | None = None,
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
) -> dict[str, Any]:
    """Convert/quantize `source` into `out_path`; returns the report record (see module docstring)."""
    from llmtools import models

    started = time.perf_counter()
    to = quantize_types.check_type(to)
    if max_ppl_increase is not None and not evaluate:
        raise errors.UsageError("--max-ppl-increase needs the evaluation; drop --no-eval")
    prune = parse_layers(prune_layers)
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

    from llmtools.models.gguf_writer import check_architecture, read_config
    from llmtools.ops.quantize_gguf import MagnitudePruner, inspect_gguf

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
    identity = models.identity_of(resolved.path if resolved.kind != "registry" else source, trust_pickle=trust_pickle)
    # llmtools writes F32/F16/BF16/Q8_0 itself; layer pruning and the llama.cpp-only knobs go through llama.cpp
    ours = is_hf and to in quantize_types.WRITTEN_BY_US and not (prune or pure or leave_output_tensor)
    ftype = None if ours else quantize_types.ftype_of(to)

    if source_info is not None and source_info["quantized"]:
        types = ", ".join(f"{k}x{v}" for k, v in source_info["tensor_types"].items())
        if not allow_requantize:
            raise errors.UsageError(
                f"{source} is already quantized ({types}); quantizing it again compounds the quality loss. "
                "Quantize from the F16/F32 or Hugging Face original, or pass --allow-requantize"
            )
        warn(f"requantizing an already-quantized model ({types}): quality loss compounds")

    out_path = out_path or default_output(resolved.name, to)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    kv = _provenance_kv(identity, to, prune, sparsity, source_info and _type_label(source_info))
    seconds: dict[str, float] = {}
    report: dict[str, Any] = {}
    sparsity_summary = None

    with tempfile.TemporaryDirectory(prefix=".llmtools-quantize-", dir=out_dir) as work:
        tmp_out = os.path.join(work, "out.gguf")
        if is_hf:
            from llmtools.models.gguf_writer import hf_to_gguf

            ref_type = _hf_reference_type(resolved.path)
            ref_path = os.path.join(work, f"reference.{ref_type}.gguf")
            t = time.perf_counter()
            need_reference = evaluate or ftype is not None
            if need_reference:
                hf_to_gguf(resolved.path, ref_path, ref_type, metadata=kv, warn=warn)
            quant_src = ref_path
            pruner = MagnitudePruner(sparsity) if sparsity else None
            if ftype is None and pruner is None and to.lower() == ref_type and need_reference:
                tmp_out = ref_path  # the reference already is the output: convert once
            elif ftype is None:
                # F32/F16/BF16/Q8_0 straight from the HF weights, written by llmtools
                hf_to_gguf(resolved.path, tmp_out, to.lower(), metadata=kv, transform=pruner, warn=warn)
            elif pruner is not None:
                quant_src = os.path.join(work, f"sparse.{ref_type}.gguf")
                hf_to_gguf(resolved.path, quant_src, ref_type, metadata=kv, transform=pruner, warn=warn)
            seconds["convert"] = time.perf_counter() - t
            if pruner is not None:
                sparsity_summary = pruner.summary()
            reference_label = f"{ref_type.upper()} GGUF written from the Hugging Face weights"
        else:
            ref_path = quant_src = resolved.path
            reference_label = "the source GGUF"
        if ftype is not None:
            from llmtools.ops.quantize_llama import llama_quantize

            t = time.perf_counter()
            llama_quantize(
                quant_src,
                tmp_out,
                ftype,
                allow_requantize=allow_requantize,
                prune_layers=prune,
                kv=kv,
                threads=threads,
                pure=pure,
                leave_output_tensor=leave_output_tensor,
            )
            seconds["quantize"] = time.perf_counter() - t
        written_by = "llmtools (gguf)" if ftype is None else "llama.cpp (llama_model_quantize)"
        before = source_info if source_info is not None else (inspect_gguf(ref_path) if os.path.exists(ref_path) else None)
        after = inspect_gguf(tmp_out)

        perplexity = speed = None
        if evaluate:
            text_list = [t for t in (texts if texts is not None else bundled_texts()) if t and t.strip()]
            if not text_list:
                raise errors.BadInputError("no evaluation texts (stdin had no non-empty text); use --eval-sample or --no-eval")
            from llmtools.ops.quantize_eval import budget_texts, measure

            t = time.perf_counter()
            chosen = budget_texts(ref_path, text_list, max_eval_tokens, n_ctx, threads)
            if not chosen:
                raise errors.BadInputError("the evaluation texts are too short to score (each needs 2+ tokens)")
            m_before = measure(ref_path, chosen, n_ctx=n_ctx, threads=threads, gen_tokens=gen_tokens)
            same_file = os.path.abspath(tmp_out) == os.path.abspath(ref_path)
            m_after = m_before if same_file else measure(tmp_out, chosen, n_ctx=n_ctx, threads=threads, gen_tokens=gen_tokens)
            if m_before["per_text_tokens"] != m_after["per_text_tokens"]:
                warn("the output model tokenizes the evaluation texts differently from the reference; "
                     "the perplexities are not over the same tokens")
            seconds["evaluate"] = time.perf_counter() - t
            p0, p1 = m_before["perplexity"], m_after["perplexity"]
            perplexity = {
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
                "before_measured_on": reference_label,
            }
            s0, s1 = m_before["tokens_per_second"], m_after["tokens_per_second"]
            speed = {
                "before": s0,
                "after": s1,
                "speedup": (s1 / s0) if s0 and s1 else None,
                "generated_tokens": gen_tokens,
                "threads": threads or "llama.cpp default",
                "prompt_before": m_before["prompt_tokens_per_second"],
                "prompt_after": m_after["prompt_tokens_per_second"],
            }

        input_bytes = _source_bytes(resolved.kind if is_hf else "gguf", resolved.path)
        report = {
            "source": identity.to_dict(),
            "output": out_path,
            "type": to,
            "written_by": written_by,
            "input_bytes": input_bytes,
            "output_bytes": after["file_bytes"],
            "compression_ratio": input_bytes / after["file_bytes"] if after["file_bytes"] else None,
            "bits_per_weight": {"before": before and before["bits_per_weight"], "after": after["bits_per_weight"]},
            "params": {"before": before and before["params"], "after": after["params"]},
            "tensor_types": {"before": before and before["tensor_types"], "after": after["tensor_types"]},
            "reference": {
                "what": reference_label,
                "bytes": before and before["file_bytes"],
                "type": before and _type_label(before),
            },
            "requantized": bool(source_info and source_info["quantized"]),
            "perplexity": perplexity,
            "tokens_per_second": speed,
        }
        if prune:
            report["prune_layers"] = {
                "layers": prune,
                "blocks_before": before and before.get("block_count"),
                "blocks_after": after.get("block_count"),
                "method": "llama.cpp llama_model_quantize prune_layers",
            }
        if sparsity_summary is not None:
            report["sparsity"] = sparsity_summary
        if max_ppl_increase is not None:
            change = perplexity and perplexity["relative_change"]
            report["gate"] = {
                "max_ppl_increase": max_ppl_increase,
                "passed": change is not None and change <= max_ppl_increase,
            }
        seconds["total"] = time.perf_counter() - started
        report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}

        os.replace(tmp_out, out_path)  # same folder as `work`: an atomic rename
    manifest = provenance.build_manifest(
        "gguf",
        inputs={"eval_set": report["perplexity"]["eval_set"] if report.get("perplexity") else None},
        base_model=identity.to_dict(),
        params={
            "type": to,
            "prune_layers": prune,
            "sparsity": sparsity,
            "allow_requantize": allow_requantize,
            "pure": pure,
            "leave_output_tensor": leave_output_tensor,
            "n_ctx": n_ctx,
            "max_eval_tokens": max_eval_tokens,
        },
        metrics={k: report[k] for k in ("perplexity", "tokens_per_second", "bits_per_weight", "tensor_types") if report.get(k)},
        extra={"parent": identity.short, "gguf_metadata": kv},
    )
    report["manifest"] = provenance.write_manifest(out_path, manifest)
    return report


def _type_label(info: dict[str, Any]) -> str | None:
    """A file's llama ftype name (general.file_type), else its most common 2-D tensor type."""
    ft = info.get("file_type")
    if isinstance(ft, int):
        try:
            name = quantize_types.name_of_ftype(ft)
        except errors.MissingDependency:
            name = None
        if name:
            return name
    types = info.get("weights_by_type") or {}
    return next(iter(types), None)
