"""finetune throughput and peak memory: `llmtools finetune` against a plain transformers Trainer.

Both sides train the same model (smollm2, converted once to safetensors by the model layer) with
the same LoRA config, the same tokenized examples (same completion-only labels), the same batch
size, learning rate and number of optimizer steps (one epoch), on the same threads. Each run is
its own subprocess so peak RSS is that run's alone. tokens/s counts real (non-pad) input tokens,
which are the same for both sides over one epoch.

Second table: `--packing` against no packing on mixed-length records (wall time per epoch).

    .venv/bin/python benchmarks/finetune/bench.py            # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/finetune/bench.py --quick    # smaller, for a smoke test
    BENCH_THREADS=2 .venv/bin/python benchmarks/finetune/bench.py   # torch threads per run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "llmtools" / "data" / "finetune" / "orders-train.jsonl"
LLMTOOLS = [sys.executable, "-m", "llmtools"]
THREADS = os.environ.get("BENCH_THREADS", "1")  # 1: robust on a shared 2-core VM (OpenMP barriers stall under contention)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_trainer(args: argparse.Namespace) -> dict:
    """A plain transformers Trainer + peft loop on the same examples as llmtools builds."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from llmtools.models import hf_dir
    from llmtools.ops.finetune import Fields, tokenize_record

    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(THREADS))
    base = hf_dir("smollm2")
    tok = AutoTokenizer.from_pretrained(base)
    records = [json.loads(x) for x in Path(args.data).read_text().splitlines()]
    examples = [tokenize_record(r, "prompt-completion", tok, Fields(), max_seq_len=args.max_seq_len) for r in records]
    dataset = [{"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)} for e in examples]
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"))
    steps = -(-len(dataset) // args.batch_size)
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"), per_device_train_batch_size=args.batch_size,
        max_steps=steps, learning_rate=2e-4, lr_scheduler_type="linear", logging_steps=10**6, save_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False, seed=args.seed,
        disable_tqdm=True, max_grad_norm=1.0, weight_decay=0.0,
    )
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collator)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    tokens = sum(len(e.input_ids) for e in examples)
    return {"side": "transformers Trainer", "steps": steps, "train_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "train_loss": out.training_loss, "peak_rss_mb": peak_rss_mb()}


def worker_llmtools(args: argparse.Namespace) -> dict:
    """`llmtools finetune` in this process (same entry point as the shell), one epoch."""
    import io as _io

    import orjson

    out_dir = tempfile.mkdtemp(prefix="bench-llmtools-")
    argv = ["finetune", "--base", "smollm2", "-o", os.path.join(out_dir, "m"), "--adapter-only", "--epochs", "1",
            "--batch-size", str(args.batch_size), "--max-seq-len", str(args.max_seq_len), "--save-every", "0",
            "--log-every", "1000000", "--seed", str(args.seed), "-q", args.data]
    if args.packing:
        argv.insert(1, "--packing")
    import torch

    torch.set_num_threads(int(THREADS))
    buf = _io.BytesIO()
    real = sys.stdout
    sys.stdout = _io.TextIOWrapper(buf, write_through=True)
    try:
        from llmtools.cli import main

        try:
            main(argv)
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"llmtools finetune failed with {exc.code}")
    finally:
        sys.stdout = real
    final = [orjson.loads(x) for x in buf.getvalue().splitlines() if x.strip()][-1]
    side = "llmtools finetune" + (" --packing" if args.packing else "")
    return {"side": side, "steps": final["step"], "train_s": final["runtime_s"], "tokens": final["tokens_seen"],
            "tokens_per_s": final["tokens_seen"] / final["runtime_s"], "train_loss": final["train_loss"],
            "rows": final["train_rows"], "peak_rss_mb": peak_rss_mb()}


def run_worker(kind: str, data: str, batch: int, max_len: int, packing: bool = False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=THREADS, TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, __file__, "--worker", kind, "--data", data, "--batch-size", str(batch), "--max-seq-len", str(max_len)]
    if packing:
        cmd.append("--packing")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mixed_lengths(path: str, n: int, seed: int = 0) -> None:
    """Records from 1 to 8 order examples long: a few long ones among many short ones."""
    rng = random.Random(seed)
    src = [json.loads(x) for x in DATA.read_text().splitlines()]
    with open(path, "w") as fh:
        for i in range(n):
            k = 1 if rng.random() < 0.7 else rng.randint(4, 8)
            parts = [src[(i * 8 + j) % len(src)] for j in range(k)]
            prompt = "\n\n".join(p["prompt"] + p["completion"] for p in parts[:-1]) + ("\n\n" if k > 1 else "") + parts[-1]["prompt"]
            fh.write(json.dumps({"prompt": prompt, "completion": parts[-1]["completion"]}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["trainer", "llmtools"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--packing", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if args.worker:
        result = worker_trainer(args) if args.worker == "trainer" else worker_llmtools(args)
        print(json.dumps(result))
        return

    tmp = tempfile.mkdtemp(prefix="bench-ft-")
    n = 24 if args.quick else 64
    same = os.path.join(tmp, "same.jsonl")
    with open(same, "w") as fh:
        fh.writelines(DATA.read_text().splitlines(keepends=True)[:n])
    results = {"machine": f"{os.cpu_count()} CPU cores, {THREADS} torch threads", "vs_trainer": [], "packing": []}
    print(f"| side | steps | tokens | train s | tokens/s | peak RSS MB | train loss |")
    print(f"|---|---|---|---|---|---|---|")
    for _ in range(args.repeats):
        for kind in ("trainer", "llmtools"):  # side by side, alternating
            r = run_worker(kind, same, args.batch_size, 128)
            results["vs_trainer"].append(r)
            print(f"| {r['side']} | {r['steps']} | {r['tokens']} | {r['train_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['train_loss']:.4f} |", flush=True)
    ours = [r for r in results["vs_trainer"] if r["side"].startswith("llmtools")]
    theirs = [r for r in results["vs_trainer"] if not r["side"].startswith("llmtools")]
    ratio = sum(r["tokens_per_s"] for r in ours) / sum(r["tokens_per_s"] for r in theirs)
    mem = sum(r["peak_rss_mb"] for r in ours) / sum(r["peak_rss_mb"] for r in theirs)
    results["speed_ratio"] = ratio
    results["memory_ratio"] = mem
    print(f"\ntokens/s llmtools / Trainer = {ratio:.2f}x; peak RSS llmtools / Trainer = {mem:.2f}x\n")

    mixed = os.path.join(tmp, "mixed.jsonl")
    mixed_lengths(mixed, 24 if args.quick else 64)
    mixed_len = 256 if args.quick else 512
    print("| mixed lengths | rows | steps | tokens | epoch s | tokens/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for packing in (False, True):
        r = run_worker("llmtools", mixed, args.batch_size, mixed_len, packing=packing)
        results["packing"].append(r)
        print(f"| {r['side']} | {r['rows']} | {r['steps']} | {r['tokens']} | {r['train_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} |", flush=True)
    p0, p1 = results["packing"]
    results["packing_speedup"] = p0["train_s"] / p1["train_s"]
    print(f"\nepoch time without / with packing = {results['packing_speedup']:.2f}x")
    Path(__file__).with_name("results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
