"""finetune throughput, peak memory and final loss: `llmtools finetune` against transformers'
`Trainer` and TRL's `SFTTrainer`, side by side, interleaved, repeated.

Every side trains the same model (smollm2, fp32, sdpa attention) with the same LoRA config
(r 16, alpha 32, dropout 0.05, all-linear), AdamW at 2e-4 with linear decay, batch 4, one epoch,
on the same tokenized examples (same completion-only labels, cut at the same --max-seq-len),
in the same data order (llmtools' epoch-0 permutation; the other sides get the examples in that
order and a sequential sampler), on the same number of torch/OpenMP threads:

- **llmtools**: `llmtools finetune --adapter-only --epochs 1 --save-every 0` through the real CLI
  entry point (tokens/s from its own `runtime_s`: the training loop);
- **trainer**: a plain `transformers.Trainer` with `DataCollatorForSeq2Seq` (dynamic padding);
- **sft**: TRL's `SFTTrainer` with `packing=True` (its best-fit packing, padding-free batches with
  position ids) and completion-only loss (`completion_mask` from the same labels).

Each run is its own subprocess, so peak RSS (getrusage, model load included) is that run's
alone. tokens/s counts real (non-pad) input tokens over the training call. After training,
every side's adapter is scored the same way on the same held-out records (`eval loss`), which
is how "the same loss at the end" is checked: the three sides' train-loss figures are averaged
differently. Runs are interleaved (side order rotates every repeat) and the load average is
recorded before and after each run; the summary gives medians and ranges.

Second part: llmtools on mixed-length records (70% one example, 30% 4-8 examples), one run per
`--mixed-variants` flag set (default: `--padded`, the defaults, `--packing`; the first is the base
of the ratios): epoch time and peak RSS. `--padded --max-pass-tokens 0` is the old padded batch.

    .venv/bin/python benchmarks/finetune/bench.py --quick           # 24 records, 3 repeats
    .venv/bin/python benchmarks/finetune/bench.py                   # 64 records, seq 512 mixed
    .venv/bin/python benchmarks/finetune/bench.py --threads 2 --repeats 5
    .venv/bin/python benchmarks/finetune/bench.py --profile         # where a llmtools step's time goes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "llmtools" / "data" / "finetune" / "orders-train.jsonl"
EVAL = ROOT / "src" / "llmtools" / "data" / "finetune" / "orders-eval.jsonl"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
LR = 2e-4
SIDES = ("llmtools", "trainer", "sft")
LABELS = {"llmtools": "llmtools finetune", "trainer": "transformers Trainer", "sft": "TRL SFTTrainer (packing)"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- worker side


def _setup(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def _examples(tok: object, path: str, max_len: int) -> list:
    from llmtools.ops.finetune import Fields
    from llmtools.ops.finetune.dataset import tokenize_all

    records = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return tokenize_all(records, "prompt-completion", tok, Fields(), "completion", max_len)


def _in_llmtools_order(examples: list, batch: int, seed: int) -> list:
    """The examples in the order llmtools trains them in epoch 0 (same schedule code)."""
    from llmtools.ops.finetune.dataset import Schedule

    return [examples[i] for i in Schedule(len(examples), batch, 1, seed).permutation(0)]


def _eval_loss(model: object, tok: object, args: argparse.Namespace) -> float:
    import torch

    from llmtools.ops.finetune import Dist, evaluate
    from llmtools.ops.finetune.dataset import as_rows

    rows = as_rows(_examples(tok, args.eval_data, args.max_seq_len))
    return evaluate(model, rows, tok.pad_token_id, args.batch_size, torch.device("cpu"), Dist())["eval_loss"]


def _hf_model(seed: int) -> object:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmtools.models import hf_dir

    model = AutoModelForCausalLM.from_pretrained(hf_dir("smollm2"), dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))


def _sequential(trainer_cls: type) -> type:
    """The trainer class with a sequential sampler: the examples arrive already in llmtools' order."""
    import torch

    class InOrder(trainer_cls):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, *a: object, **k: object) -> object:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    return InOrder


def _common_args(args: argparse.Namespace, steps: int) -> dict:
    return dict(
        output_dir=tempfile.mkdtemp(prefix="bench-ft-"), per_device_train_batch_size=args.batch_size, max_steps=steps,
        learning_rate=LR, lr_scheduler_type="linear", logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, seed=args.seed, disable_tqdm=True, max_grad_norm=1.0, weight_decay=0.0,
        warmup_steps=0,
    )


def worker_trainer(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from llmtools.models import hf_dir

    _setup(args)
    tok = AutoTokenizer.from_pretrained(hf_dir("smollm2"))
    examples = _in_llmtools_order(_examples(tok, args.data, args.max_seq_len), args.batch_size, args.seed)
    dataset = [{"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)} for e in examples]
    model = _hf_model(args.seed)
    steps = -(-len(dataset) // args.batch_size)
    targs = TrainingArguments(remove_unused_columns=False, **_common_args(args, steps))
    trainer = _sequential(Trainer)(model=model, args=targs, train_dataset=dataset,
                                   data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    t0, c0 = time.perf_counter(), time.process_time()
    out = trainer.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_mb()
    tokens = sum(len(e.input_ids) for e in examples)
    return {"side": "trainer", "rows": len(dataset), "steps": steps, "train_s": wall, "cpu_s": cpu, "tokens": tokens,
            "train_loss": out.training_loss, "peak_rss_mb": rss, "eval_loss": _eval_loss(model, tok, args)}


def worker_sft(args: argparse.Namespace) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from llmtools.models import hf_dir
    from llmtools.ops.finetune.dataset import IGNORE

    _setup(args)
    tok = AutoTokenizer.from_pretrained(hf_dir("smollm2"))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    examples = _in_llmtools_order(_examples(tok, args.data, args.max_seq_len), args.batch_size, args.seed)
    # Already tokenized, so TRL trains on exactly our tokens; completion_mask carries the same labels.
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "completion_mask": [int(x != IGNORE) for x in e.labels]} for e in examples])
    model = _hf_model(args.seed)
    # Rows after TRL's packing: its own count decides the steps of one epoch.
    # SFTConfig turns on gradient checkpointing and bf16 autocast by default; both off here, as on
    # the other two sides (same dtype: fp32).
    config = SFTConfig(max_length=args.max_seq_len, packing=True, completion_only_loss=True, num_train_epochs=1,
                       gradient_checkpointing=False, bf16=False,
                       **{k: v for k, v in _common_args(args, -1).items()})
    trainer = _sequential(SFTTrainer)(model=model, args=config, train_dataset=dataset, processing_class=tok)
    rows = len(trainer.train_dataset)
    t0, c0 = time.perf_counter(), time.process_time()
    out = trainer.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_mb()
    tokens = sum(len(e.input_ids) for e in examples)
    return {"side": "sft", "rows": rows, "steps": out.global_step, "train_s": wall, "cpu_s": cpu, "tokens": tokens,
            "train_loss": out.training_loss, "peak_rss_mb": rss, "eval_loss": _eval_loss(model, tok, args)}


def worker_llmtools(args: argparse.Namespace) -> dict:
    """`llmtools finetune` in this process (same entry point as the shell), one epoch."""
    import io as _io

    import orjson

    _setup(args)
    out_dir = os.path.join(tempfile.mkdtemp(prefix="bench-llmtools-"), "m")
    argv = ["finetune", "--base", "smollm2", "-o", out_dir, "--adapter-only", "--epochs", "1",
            "--batch-size", str(args.batch_size), "--max-seq-len", str(args.max_seq_len), "--save-every", "0",
            "--log-every", "1000000", "--seed", str(args.seed), "--lr", str(LR), "--lora-r", str(LORA["r"]),
            "--lora-alpha", str(LORA["lora_alpha"]), "--lora-dropout", str(LORA["lora_dropout"]), "-q", args.data]
    # Bench-only switches to measure what each fast path pays: "full-logits" puts back the LM head
    # over every token, "plain-adamw" the for-loop AdamW, "peft-lora" peft's own LoRA forward;
    # anything else is a real CLI flag.
    flags = list(args.llmtools_flags)
    if "full-logits" in flags:
        from llmtools.ops.finetune import losses

        losses.head_parts = lambda model: None
        flags.remove("full-logits")
    if "plain-adamw" in flags:
        import torch

        from llmtools.ops.finetune import training

        training._adamw = lambda groups, lr: torch.optim.AdamW(groups, lr=lr, foreach=False)
        flags.remove("plain-adamw")
    if "peft-lora" in flags:
        from llmtools.ops.finetune import training

        training.use_lean_lora = lambda model: 0
        flags.remove("peft-lora")
    argv[1:1] = flags
    # CPU seconds of the same span as runtime_s: the loop's clock reads are mirrored by CPU-time reads
    # (its second read starts the loop; its last one ends it).
    from llmtools.ops.finetune import training

    cpu_reads: list = []

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            cpu_reads.append(time.process_time())
            return time.perf_counter()

    training.time = Clock  # type: ignore[assignment]
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
    rss = peak_rss_mb()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtools.models import hf_dir

    tok = AutoTokenizer.from_pretrained(hf_dir("smollm2"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_dir("smollm2")), out_dir)
    return {"side": "llmtools " + " ".join(args.llmtools_flags) if args.llmtools_flags else "llmtools",
            "rows": final["train_rows"], "steps": final["step"], "train_s": final["runtime_s"], "cpu_s": cpu_reads[-1] - cpu_reads[1],
            "tokens": final["tokens_seen"],
            "train_loss": final["train_loss"], "peak_rss_mb": rss, "eval_loss": _eval_loss(model, tok, args)}


def profile_llmtools(args: argparse.Namespace) -> None:
    """Two training steps of llmtools' own loop under torch.profiler: the top ops by CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from llmtools.models import hf_dir
    from llmtools.ops.finetune import Fields, Settings
    from llmtools.ops.finetune import training as tr
    from llmtools.ops.finetune.dataset import Schedule
    from llmtools.ops.finetune.distributed import Dist

    _setup(args)
    s = Settings(max_seq_len=args.max_seq_len, batch_size=args.batch_size, seed=args.seed)
    records = [json.loads(x) for x in Path(args.data).read_text().splitlines() if x.strip()]
    m = tr._load_models(records, [], "prompt-completion", s, hf_dir("smollm2"), None, Fields(), torch.device("cpu"), Dist(), None)
    sched = Schedule(len(m.prepared.train_rows), s.batch_size, 1, s.seed)
    opt, sch = tr.build_optimizer(m.core, s, sched.steps_per_epoch)
    local = {"window_ce": 0.0, "window_tokens": 0, "window_input": 0, "window_kl": 0.0}
    step = lambda i: tr._optimizer_step(m, s, i, sched, opt, sch, tr._autocast(torch.device("cpu")), torch.device("cpu"), Dist(), 0, local)  # noqa: E731
    step(0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(1)
        step(2)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# --------------------------------------------------------------------------- driver side


def run_worker(kind: str, args: argparse.Namespace, data: str, max_len: int, flags: tuple = ()) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, __file__, "--worker", kind, "--data", data, "--eval-data", args.eval_data, "--batch-size",
           str(args.batch_size), "--max-seq-len", str(max_len), "--threads", str(args.threads), "--seed", str(args.seed)]
    cmd += [f"--llmtools-flag={f}" for f in flags]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r.update(load_before=load_before, load_after=os.getloadavg()[0], process_s=time.perf_counter() - t0,
             tokens_per_s=r["tokens"] / r["train_s"], tokens_per_cpu_s=r["tokens"] / r["cpu_s"])
    return r


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


def _row(r: dict) -> str:
    return (f"| {r['side']} | {r['rows']} | {r['steps']} | {r['tokens']} | {r['train_s']:.1f} | {r['tokens_per_s']:.0f} | "
            f"{r['tokens_per_cpu_s']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['train_loss']:.4f} | {r['eval_loss']:.4f} | {r['load_before']:.1f}-{r['load_after']:.1f} |")


HEADER = ("| side | rows | steps | tokens | train s | tokens/s | tokens/CPU-s | peak RSS MB | train loss | eval loss | load |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def summarise(runs: list, sides: list, base: str) -> dict:
    """Medians and ranges per side, and each side's median ratio against `base`."""
    out = {}
    for side in sides:
        rs = [r for r in runs if r["side"] == side]
        if not rs:
            continue
        out[side] = {k: {"median": statistics.median(r[k] for r in rs), "min": min(r[k] for r in rs), "max": max(r[k] for r in rs)}
                     for k in ("tokens_per_s", "tokens_per_cpu_s", "train_s", "peak_rss_mb", "eval_loss", "train_loss")}
        out[side]["runs"] = len(rs)
    for side in out:
        if side != base and base in out:
            out[side]["speed_vs_" + base] = out[side]["tokens_per_s"]["median"] / out[base]["tokens_per_s"]["median"]
            out[side]["cpu_speed_vs_" + base] = out[side]["tokens_per_cpu_s"]["median"] / out[base]["tokens_per_cpu_s"]["median"]
            out[side]["rss_vs_" + base] = out[side]["peak_rss_mb"]["median"] / out[base]["peak_rss_mb"]["median"]
            out[side]["eval_loss_vs_" + base] = out[side]["eval_loss"]["median"] / out[base]["eval_loss"]["median"]
    return out


def _print_summary(summary: dict) -> None:
    print("\n| side | runs | tokens/s median (range) | tokens/CPU-s median (range) | peak RSS MB median (range) | eval loss median |\n"
          "|---|---|---|---|---|---|")
    for side, s in summary.items():
        t, c, m = s["tokens_per_s"], s["tokens_per_cpu_s"], s["peak_rss_mb"]
        print(f"| {side} | {s['runs']} | {t['median']:.1f} ({t['min']:.1f}-{t['max']:.1f}) | {c['median']:.1f} ({c['min']:.1f}-{c['max']:.1f}) | "
              f"{m['median']:.0f} ({m['min']:.0f}-{m['max']:.0f}) | "
              f"{s['eval_loss']['median']:.4f} |")
    for side, s in summary.items():
        for k, v in s.items():
            if "_vs_" in k:
                print(f"{side}: {k} = {v:.3f}x")
    sys.stdout.flush()


def _three_way(runs: list, sides: list) -> dict:
    summary = summarise(runs, sides, "trainer")
    if "sft" in summary and "llmtools" in summary:
        ours, sft = summary["llmtools"], summary["sft"]
        for key, name in (("tokens_per_s", "speed_vs_sft"), ("tokens_per_cpu_s", "cpu_speed_vs_sft"), ("peak_rss_mb", "rss_vs_sft")):
            ours[name] = ours[key]["median"] / sft[key]["median"]
    return summary


def aggregate(args: argparse.Namespace) -> None:
    """One summary over the runs of several results files (each an invocation of this script)."""
    parts = [json.loads(Path(p).read_text()) for p in args.aggregate]
    runs = [r for p in parts for r in p.get("vs", [])]
    mixed = [r for p in parts for r in p.get("mixed", [])]
    out: dict = {"machine": parts[0]["machine"], "files": args.aggregate, "vs": runs, "mixed": mixed,
                 "started": min(p["started"] for p in parts), "finished": max(p.get("finished", p["started"]) for p in parts)}
    if runs:
        print(HEADER)
        for r in runs:
            print(_row(r))
        sides = [s for s in SIDES if any(r["side"] == s for r in runs)]
        out["summary"] = _three_way(runs, sides)
        _print_summary(out["summary"])
    if mixed:
        print(f"\nmixed lengths\n\n{HEADER}")
        for r in mixed:
            print(_row(r))
        order = ["llmtools " + v if v else "llmtools" for v in args.mixed_variants.split(";")]
        names = [n for n in order if any(r["side"] == n for r in mixed)] + sorted({r["side"] for r in mixed} - set(order))
        out["mixed_summary"] = summarise(mixed, names, names[0])
        _print_summary(out["mixed_summary"])
    Path(args.results).write_text(json.dumps(out, indent=2) + "\n")


ABLATIONS = [(), ("--padded",), ("full-logits",), ("plain-adamw",), ("peft-lora",),
             ("--padded", "full-logits", "plain-adamw", "peft-lora")]


def ablate(args: argparse.Namespace, data: str, results: dict) -> None:
    """llmtools as shipped, then with each fast path taken out, and with all of them out."""
    print(HEADER)
    for rep in range(args.ablate):
        for flags in ABLATIONS[rep % len(ABLATIONS):] + ABLATIONS[: rep % len(ABLATIONS)]:
            r = run_worker("llmtools", args, data, args.max_seq_len, flags)
            results["vs"].append(r)
            print(_row(r), flush=True)
    names = ["llmtools " + " ".join(f) if f else "llmtools" for f in ABLATIONS]
    results["summary"] = summarise(results["vs"], names, "llmtools")
    _print_summary(results["summary"])
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["trainer", "llmtools", "sft", "profile"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--eval-data", default=str(EVAL))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "1")),
                    help="torch and OpenMP threads per run (1 is steadiest on a shared 2-core VM)")
    ap.add_argument("--llmtools-flag", dest="llmtools_flags", action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="24 training records (mixed: 24 at seq 256)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the three-way comparison")
    ap.add_argument("--mixed-repeats", type=int, default=3, help="interleaved repeats of the mixed-length part (0: skip it)")
    ap.add_argument("--mixed-variants", default="--padded;;--packing", metavar="FLAGS;FLAGS...",
                    help="llmtools flag sets of the mixed-length part, ';'-separated (an empty one: the defaults); "
                         "the first is the base of the ratios")
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset of llmtools,trainer,sft")
    ap.add_argument("--profile", action="store_true", help="profile two llmtools training steps and exit")
    ap.add_argument("--ablate", type=int, default=0, metavar="N",
                    help="instead of the comparison: N interleaved repeats of llmtools with each fast path taken out")
    ap.add_argument("--rotate", type=int, default=0, metavar="K",
                    help="start the side rotation at repeat K (split a long comparison into several invocations)")
    ap.add_argument("--aggregate", nargs="+", metavar="JSON",
                    help="summarise the runs of several results files (from split invocations) and exit")
    ap.add_argument("--results", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()
    if args.aggregate:
        aggregate(args)
        return
    if args.worker == "profile" or args.profile:
        profile_llmtools(args)
        return
    if args.worker:
        fn = {"trainer": worker_trainer, "llmtools": worker_llmtools, "sft": worker_sft}[args.worker]
        print(json.dumps(fn(args)))
        return

    tmp = tempfile.mkdtemp(prefix="bench-ft-")
    n = 24 if args.quick else 64
    same = os.path.join(tmp, "same.jsonl")
    with open(same, "w") as fh:
        fh.writelines(DATA.read_text().splitlines(keepends=True)[:n])
    sides = [s for s in args.sides.split(",") if s]
    import torch

    results: dict = {
        "machine": f"{os.cpu_count()} CPU cores, {args.threads} torch/OpenMP threads per run, torch {torch.__version__}",
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "llmtools_flags")},
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "vs": [], "mixed": [],
    }
    print(f"{results['machine']}; {n} records, seq {args.max_seq_len}, batch {args.batch_size}; load {os.getloadavg()}\n")
    if args.ablate:
        ablate(args, same, results)
        return
    print(HEADER)
    for rep in range(args.rotate, args.rotate + args.repeats):
        order = sides[rep % len(sides):] + sides[: rep % len(sides)]  # rotate: no side always runs first
        for side in order:
            r = run_worker(side, args, same, args.max_seq_len)
            results["vs"].append(r)
            print(_row(r), flush=True)
            Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    results["summary"] = _three_way(results["vs"], sides)
    _print_summary(results["summary"])
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")

    if args.mixed_repeats:
        mixed = os.path.join(tmp, "mixed.jsonl")
        mixed_lengths(mixed, n)
        mixed_len = 256 if args.quick else 512
        print(f"\nmixed lengths, seq {mixed_len}\n\n{HEADER}")
        variants = [tuple(v.split()) for v in args.mixed_variants.split(";")]
        for rep in range(args.rotate, args.rotate + args.mixed_repeats):
            for flags in variants[rep % len(variants):] + variants[: rep % len(variants)]:
                r = run_worker("llmtools", args, mixed, mixed_len, flags)
                results["mixed"].append(r)
                print(_row(r), flush=True)
                Path(args.results).write_text(json.dumps(results, indent=2) + "\n")  # a cut-short run keeps what it did
        names = ["llmtools " + " ".join(v) if v else "llmtools" for v in variants]
        results["mixed_summary"] = summarise(results["mixed"], names, names[0])
        _print_summary(results["mixed_summary"])
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
