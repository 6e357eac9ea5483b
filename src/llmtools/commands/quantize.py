"""`llmtools quantize`: the thin command over llmtools.ops.quantize (help text on `cli`)."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import click

from llmtools import errors, options, tracking
from llmtools.io import get_text, write_jsonl


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


def _texts(job, field: str):
    for record in job.records():
        text = get_text(record, field)
        if text is not None:
            yield text


@click.command(context_settings={"max_content_width": 100})
@options.model_options("MODEL", required=True, api_key=None, trust_pickle=False)
@click.option("--to", "to", default="Q4_K_M", show_default=True, metavar="TYPE", help="Target type (case-insensitive): Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M, Q2_K, IQ4_NL, F16, ... (see above).")
@click.option("--report", "report_path", metavar="FILE", help="Also write the report record to FILE (atomically).")
@click.option("--eval-sample", is_flag=True, help="Evaluate on the bundled English sample even when stdin has data.")
@click.option("--no-eval", is_flag=True, help="Skip the perplexity and speed measurement (conversion only).")
@click.option("--eval-tokens", default=4096, show_default=True, type=click.IntRange(2), metavar="N", help="Score at most this many tokens of the evaluation texts.")
@click.option("--ctx", "n_ctx", default=512, show_default=True, type=click.IntRange(16), metavar="N", help="Context window for scoring; longer texts are scored in windows of this size.")
@click.option("--gen-tokens", default=64, show_default=True, type=click.IntRange(0), metavar="N", help="Tokens generated (greedy) to time generation speed; 0 skips it.")
@click.option("--max-ppl-increase", metavar="RATIO", help="Exit 1 when perplexity rises by more than this (5% or 0.05).")
@click.option("--allow-requantize", is_flag=True, help="Allow quantizing an already-quantized GGUF (quality loss compounds).")
@click.option("--prune-layers", metavar="LIST", help="Drop these transformer blocks (e.g. 28,29 or 20-23) with llama.cpp's layer pruning.")
@click.option("--sparsity", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, metavar="F", help="Zero this fraction of the smallest weights in each attention/MLP matrix (HF sources). Does not shrink a dense GGUF or speed it up; see the report's perplexity.")
@click.option("--pure", is_flag=True, help="Quantize every tensor to TYPE (no llama.cpp mixture such as Q6_K for attn_v in Q4_K_M).")
@click.option("--leave-output-tensor", is_flag=True, help="Keep output.weight unquantized (bigger file, sometimes better quality).")
@click.option("--threads", type=click.IntRange(1), metavar="N", help="CPU threads for llama.cpp quantization and evaluation (default: llama.cpp's).")
@options.io_options(inputs=False, table_output=False, output_help="Output GGUF file, written atomically (default: ./NAME.TYPE.gguf).")
@options.track_options(model_help="Also log the GGUF file as an MLflow artifact.")
def cli(model: options.ModelConfig, to, report_path, eval_sample, no_eval, eval_tokens, n_ctx, gen_tokens, max_ppl_increase, allow_requantize, prune_layers, sparsity, pure, leave_output_tensor, threads, io, track):
    """Convert a model to GGUF and quantize it, with a quality report.

    MODEL is a Hugging Face directory (safetensors; Llama, SmolLM, Mistral), a .gguf file, or a
    registry name. An HF model is converted to GGUF by llmtools (F32, F16, BF16, Q8_0) and, for
    every other type, quantized by llama.cpp (llama_model_quantize). The output GGUF (-o, written
    atomically) carries its source's identity and the quantization parameters in its metadata
    (general.* and llmtools.* keys) and in a sidecar OUT.gguf.manifest.json.

    The report is one JSON record on stdout: sizes, bits per weight, compression ratio, the tensor
    types really written (K-quants fall back where rows are not multiples of 256), perplexity and
    generation tokens/s before and after (both measured by llama.cpp on the same token ids; "before"
    is the source GGUF, or for an HF source the F16 GGUF written from it), and the time taken.

    Texts on stdin (JSONL, --field) are the evaluation set; they are read into memory, and at most
    --eval-tokens tokens are scored. With no stdin (a terminal) or --eval-sample, a bundled sample of
    English paragraphs is used.

    \b
    Examples:
        llmtools quantize runs/v1 --to q4_k_m -o v1.q4.gguf < heldout.jsonl > report.jsonl
        llmtools quantize runs/v1 --to q8_0 -o v1.q8.gguf --eval-sample --max-ppl-increase 0.5%
        llmtools quantize model.f16.gguf --to q5_k_m -o model.q5.gguf --prune-layers 20,21
        llmtools quantize runs/v1 --to f16 -o v1.f16.gguf --no-eval
        llmtools quantize smollm2 --to q4_k_m --allow-requantize -o smol.q4km.gguf --eval-sample

    \b
    Types (--to): F32 F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S Q5_1 Q5_0 Q4_K_M Q4_K_S Q4_1 Q4_0
        Q3_K_L Q3_K_M Q3_K_S Q2_K IQ4_NL IQ4_XS IQ3_M IQ3_S IQ3_XS IQ3_XXS IQ2_M TQ1_0 TQ2_0 and
        any other llama.cpp file type. IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S Q2_K_S need an importance
        matrix and are refused.

    \b
    Tracking: with --track mlflow (or $MLFLOW_TRACKING_URI set) the options and the source model's
        identity are logged as MLflow params, the report's figures as metrics, the report and the
        manifest as artifacts (--track-model: the GGUF too); the run id goes into the manifest.

    \b
    Exit codes: 1 the --max-ppl-increase gate failed (the GGUF is still written) or llama.cpp
        failed; 2 bad option (including requantizing a quantized model without
        --allow-requantize); 3 corrupt model file or bad input line; 4 unsupported architecture,
        missing model or missing llama-cpp-python/gguf.
    """
    from llmtools.ops.quantize import quantize_model

    limit = parse_ratio(max_ppl_increase)
    use_stdin = not (no_eval or eval_sample) and not _stdin_is_tty()
    job = io.job(output=None, inputs=("-",))
    run = tracking.start_run(track, "quantize", warn=job.warn, tags=_lineage(model.ref) if track.enabled else None)
    with run:
        run.log_params({"model": model.ref, "to": to, "output": io.output, "eval_sample": eval_sample, "no_eval": no_eval,
                        "eval_tokens": eval_tokens, "ctx": n_ctx, "gen_tokens": gen_tokens, "max_ppl_increase": limit,
                        "allow_requantize": allow_requantize, "prune_layers": parse_layers(prune_layers), "sparsity": sparsity,
                        "pure": pure, "leave_output_tensor": leave_output_tensor, "threads": threads})
        with job:
            texts = list(_texts(job, io.field)) if use_stdin else None
            if texts is not None and not texts:
                texts = None  # empty stdin: fall back to the bundled sample
                job.warn("no evaluation texts on stdin; using the bundled sample")
            report = quantize_model(
                model.ref, io.output, to, texts, eval_set="stdin" if texts is not None else "bundled sample",
                evaluate=not no_eval, allow_requantize=allow_requantize, prune_layers=parse_layers(prune_layers),
                sparsity=sparsity, max_ppl_increase=limit, threads=threads, n_ctx=n_ctx, max_eval_tokens=eval_tokens,
                gen_tokens=gen_tokens, pure=pure, leave_output_tensor=leave_output_tensor, warn=job.warn,
                manifest_extra={"tracking": run.info()} if run.active else None,
            )
            if run.active:
                report["tracking"] = run.info()
            if report_path:
                write_jsonl(report_path, [report])
            job.write(report)
        _track_report(run, report)
        _finish(job, report)


def _lineage(ref: str) -> dict[str, str]:
    """A tag linking this run to the MLflow run that trained the source model, if it was tracked."""
    import os

    from llmtools.provenance import read_manifest

    manifest = read_manifest(ref) if ref and os.path.exists(ref) else None
    run_id = ((manifest or {}).get("tracking") or {}).get("run_id")
    return {"llmtools.model_run_id": run_id} if run_id else {}


def _track_report(run: Any, report: dict) -> None:
    if not run.active:
        return
    run.log_params({"source": report.get("source") or {}, "written_by": report.get("written_by")})
    figures = {k: report.get(k) for k in ("input_bytes", "output_bytes", "compression_ratio", "bits_per_weight",
                                          "perplexity", "tokens_per_second", "seconds")}
    run.log_metrics(tracking.numeric_metrics(figures))
    run.log_dict(report, "report.json")
    if report.get("manifest"):
        run.log_artifact(report["manifest"])
    if run.log_model:
        run.log_artifact(report["output"])
    gate = report.get("gate")
    if gate:
        run.set_tags({"llmtools.gates": "passed" if gate["passed"] else "failed"})


def _finish(job: Any, report: dict) -> None:
    job.summary(_rows(report), title="done", records=False)
    gate = report.get("gate")
    if gate and not gate["passed"]:
        change = report["perplexity"]["relative_change"] if report.get("perplexity") else None
        shown = f"{change:+.2%}" if change is not None else "unmeasured"
        raise errors.GateFailed(f"perplexity change {shown} exceeds --max-ppl-increase {gate['max_ppl_increase']:.2%} (the GGUF was still written to {report['output']})")


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _rows(report: dict) -> dict[str, Any]:
    rows = {
        "output": report["output"],
        "type": report["type"],
        "size": f"{report['input_bytes'] / 1e6:.1f} MB -> {report['output_bytes'] / 1e6:.1f} MB",
        "bits/weight": report["bits_per_weight"]["after"],
        "tensor types": ", ".join(f"{k} {v}" for k, v in report["tensor_types"]["after"].items()),
    }
    ppl = report.get("perplexity")
    if ppl:
        rows["perplexity"] = f"{ppl['before']:.3f} -> {ppl['after']:.3f} ({ppl['relative_change']:+.2%})"
    speed = report.get("tokens_per_second")
    if speed and speed.get("before"):
        rows["tokens/s"] = f"{speed['before']:.1f} -> {speed['after']:.1f}"
    rows["seconds"] = report["seconds"]["total"]
    return rows
