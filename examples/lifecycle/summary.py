#!/usr/bin/env python3
"""Print the demo's summary and check its lineage: served answer -> GGUF -> fine-tuned model -> data.

    python summary.py OUT_DIR

Exits 1 if the lineage does not hold (a hash that does not match), so `make` fails loudly.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import sys


def jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load(path: str):
    with open(path, encoding="utf-8") as fh:
        text = fh.read().strip()
    return json.loads(text.splitlines()[-1]) if text.startswith("{") and "\n" in text else json.loads(text)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def reasons(*paths: str) -> str:
    counter: collections.Counter[str] = collections.Counter()
    for path in paths:
        if os.path.exists(path):
            for rec in jsonl(path):
                counter[rec.get("reason", "?").split(":")[0]] += 1
    return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"


def metric(summary: dict, name: str):
    """Find a corpus metric in score's summary record, wherever it nests it."""
    for key in ("corpus", "metrics", "scores"):
        block = summary.get(key)
        if isinstance(block, dict) and name in block:
            value = block[name]
            return value.get("score", value.get("value")) if isinstance(value, dict) else value
    value = summary.get(name)
    return value.get("score", value.get("value")) if isinstance(value, dict) else value


def main() -> int:
    out = sys.argv[1]
    p = lambda name: os.path.join(out, name)  # noqa: E731
    lines = []
    say = lines.append
    raw = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "raw.jsonl")

    say("== llmtools lifecycle demo: summary")
    say(f"data      raw {count_lines(raw)} lines -> clean {count_lines(p('clean.jsonl'))} -> unique {count_lines(p('unique.jsonl'))}"
        f" -> train {count_lines(p('train.jsonl'))} (with augmented variants), held-out {count_lines(p('heldout.jsonl'))}")
    say(f"removed   normalize: {reasons(p('rejects-normalize.jsonl'), p('rejects-normalize-completion.jsonl'))}")
    say(f"          dedup: {reasons(p('rejects-dedup.jsonl'))}; decontamination: {reasons(p('rejects-contaminated.jsonl'))}")

    log = [r for r in jsonl(p("train-log.jsonl"))]
    evals = [r for r in log if r.get("eval_perplexity") is not None]
    final = log[-1]
    if evals:
        say(f"finetune  {final.get('step')} LoRA steps; held-out perplexity {evals[0]['eval_perplexity']:.2f} -> {evals[-1]['eval_perplexity']:.2f}")

    summary = load(p("score-summary.json"))
    paired = summary.get("comparison") or {}
    for name, label in (("rougeL", "ROUGE-L"), ("bleu", "BLEU")):
        tuned = metric(summary, name)
        delta = (paired.get(name) or {}).get("delta")
        p_value = (paired.get(name) or {}).get("p_value")
        if tuned is not None and delta is not None:
            say(f"score     {label}: base {tuned - delta:.3f} -> fine-tuned {tuned:.3f} (paired bootstrap p={p_value:.3f})")
    ppl = {}
    for name, label in (("ppl-base.json", "base"), ("ppl-tuned.json", "fine-tuned")):
        if os.path.exists(p(name)):
            ppl[label] = metric(load(p(name)), "perplexity")
    if len(ppl) == 2:
        say(f"          perplexity of held-out completions: base {ppl['base']:.1f} -> fine-tuned {ppl['fine-tuned']:.1f}")

    report = load(p("quant-report.json"))
    q = report.get("perplexity") or {}
    bpw = report.get("bits_per_weight") or {}
    types = (report.get("tensor_types") or {}).get("after")
    say(f"quantize  {report.get('type')}: {report['input_bytes'] / 1e6:.0f} MB -> {report['output_bytes'] / 1e6:.1f} MB "
        f"({report.get('compression_ratio', 0):.1f}x), {bpw.get('after', 0):.2f} bits/weight, "
        f"perplexity {q.get('before', 0):.2f} -> {q.get('after', 0):.2f} ({100 * (q.get('relative_change') or 0):+.1f}%)")
    say(f"          tensor types it really got: {types}")

    requests = jsonl(p("requests.jsonl"))
    statuses = collections.Counter(r.get("status") for r in requests)
    say(f"serve     {len(requests)} requests logged, statuses {dict(statuses)}")
    watch = jsonl(p("watch.jsonl"))
    alerts = [r for r in watch if "alert" in json.dumps(r.get("type", ""))]
    say(f"watch     {len(watch)} records, {len(alerts)} alert records")

    # Lineage: the hash in the request log is the GGUF's; its manifest names the fine-tuned model,
    # whose manifest names the training data by hash.
    ok = True
    gguf = p("model.q4_k_m.gguf")
    served = {(r.get("model") or {}).get("sha256") for r in requests}
    gguf_hash = sha256(gguf)
    say("lineage")
    say(f"  served model sha256 {sorted(h for h in served if h)[:1]} == GGUF sha256 {gguf_hash[:16]}...: {gguf_hash in served}")
    ok &= gguf_hash in served
    with open(gguf + ".manifest.json", encoding="utf-8") as fh:
        gguf_manifest = json.load(fh)
    source = gguf_manifest.get("base_model") or {}
    say(f"  GGUF built by `{' '.join(gguf_manifest.get('command_line', []))[:120]}` from {source.get('path')}")
    with open(os.path.join(p("model"), "llmtools-manifest.json"), encoding="utf-8") as fh:
        model_manifest = json.load(fh)
    train_in = (model_manifest.get("inputs") or {}).get("train") or {}
    data_hash = sha256(p("train.jsonl"))
    say(f"  fine-tuned from {(model_manifest.get('base_model') or {}).get('name')} "
        f"sha256 {str((model_manifest.get('base_model') or {}).get('sha256'))[:16]}...")
    say(f"  training data sha256 in manifest {str(train_in.get('sha256'))[:16]}... == sha256(train.jsonl) {data_hash[:16]}...: {train_in.get('sha256') == data_hash}")
    ok &= train_in.get("sha256") == data_hash
    ok &= os.path.realpath(str(source.get("path"))) == os.path.realpath(p("model"))
    say(f"lineage: {'OK' if ok else 'BROKEN'}")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
