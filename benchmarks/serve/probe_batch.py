"""The ceiling of batched decoding, measured on llama-cpp-python's low-level API alone.

For each batch size B: B sequences, each with its own prompt evaluated on its own, then `--steps`
greedy decode steps, one `llama_decode` per step holding one token of every sequence. Reports
aggregate tokens/s (B * steps / decode time) and its multiple of B = 1 over `--runs` runs, and
whether sequence 0's logits at every step are bit-identical to its logits when it ran alone (the
question "does batching change a sequence's output?").

    .venv/bin/python benchmarks/serve/probe_batch.py [--model smollm2] [--threads 2] [--sizes 1,2,4,8,16]
    .venv/bin/python benchmarks/serve/probe_batch.py --layouts   # which slots decode together

`--layouts` times a decode step by *which* KV streams (slots) the sequences hold, in a 16-stream
context: llama.cpp splits a batch into micro-batches of consecutive sequence ids in batch order
(`split_equal(.., sequential)` when each sequence has its own stream), one pass over the weights
each, so 4 sequences in slots 0-3 cost one pass and in slots 0, 2, 5, 7 three.

`--json FILE` writes the raw figures; bench.py imports `probe()` to run it beside the servers.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "To boil an egg, first",
    "A language model is",
    "The sky is blue because",
    "My favourite planet is",
    "Here is a haiku about the sea:",
]


class LowLevel:
    """A model and one context with `n_seq` KV streams, driven through llama_decode directly."""

    def __init__(self, path: str, threads: int, n_seq: int, n_ctx_seq: int = 256, unified: bool = False,
                 flash_attn: bool = False):
        import llama_cpp as lc

        self.lc = lc
        self._silence = lc.llama_log_callback(lambda level, text, data: None)
        lc.llama_log_set(self._silence, ctypes.c_void_p(0))
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(path.encode(), mparams)
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx_seq * n_seq
        cparams.n_batch = cparams.n_ubatch = max(256, n_seq)
        cparams.n_seq_max = n_seq
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = unified
        # off, as in llama_cpp.Llama (and so in llmtools' batcher, which mirrors its backend's context)
        cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        self.mem = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(cparams.n_batch, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        lc = self.lc
        buf = (lc.llama_token * 512)()
        n = lc.llama_tokenize(self.vocab, text.encode(), len(text.encode()), buf, 512, True, True)
        return list(buf[:n])

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, int(logits)
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def logits(self, i: int) -> bytes:
        row = self.lc.llama_get_logits_ith(self.ctx, i)
        return ctypes.string_at(row, 4 * self.n_vocab)

    def argmax(self, i: int) -> int:
        row = self.lc.llama_get_logits_ith(self.ctx, i)
        arr = (ctypes.c_float * self.n_vocab).from_address(ctypes.addressof(row.contents))
        import numpy as np

        return int(np.frombuffer(arr, dtype=np.float32).argmax())

    def run_slots(self, slots: list[int], steps: int = 24) -> float:
        """Milliseconds per decode step with one sequence in each of `slots`, in that batch order."""
        self.lc.llama_memory_clear(self.mem, True)
        last, pos = {}, {}
        for k, s in enumerate(slots):
            ids = self.tokenize(PROMPTS[k % len(PROMPTS)])
            self.decode([(t, p, s, p == len(ids) - 1) for p, t in enumerate(ids)])
            last[s], pos[s] = self.argmax(len(ids) - 1), len(ids)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.decode([(last[s], pos[s], s, True) for s in slots])
            for i, s in enumerate(slots):
                last[s] = self.argmax(i)
                pos[s] += 1
        return (time.perf_counter() - t0) / steps * 1000

    def run(self, b: int, steps: int, keep_logits: bool = False) -> tuple[float, list[bytes]]:
        """Decode time of `steps` steps for `b` sequences, and sequence 0's logits per step."""
        self.lc.llama_memory_clear(self.mem, True)
        last, pos = [], []
        rows: list[bytes] = []
        for s in range(b):
            ids = self.tokenize(PROMPTS[s % len(PROMPTS)])
            self.decode([(t, p, s, p == len(ids) - 1) for p, t in enumerate(ids)])
            last.append(self.argmax(len(ids) - 1))
            pos.append(len(ids))
            if s == 0 and keep_logits:
                rows.append(self.logits(len(ids) - 1))
        t0 = time.perf_counter()
        for _ in range(steps):
            self.decode([(last[s], pos[s], s, True) for s in range(b)])
            if keep_logits:
                rows.append(self.logits(0))
            last = [self.argmax(s) for s in range(b)]
            pos = [p + 1 for p in pos]
        return time.perf_counter() - t0, rows

    def close(self) -> None:
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


def probe(path: str, threads: int, sizes: list[int], steps: int = 64, runs: int = 1, unified: bool = False) -> dict:
    """{"tps": {B: [tok/s per run]}, "identical": {B: bool}, "max_abs_diff": {B: float}}"""
    import numpy as np

    ll = LowLevel(path, threads, max(sizes), unified=unified)
    try:
        ll.run(1, 4)  # warm-up: page the weights in
        tps: dict[int, list[float]] = {b: [] for b in sizes}
        for _ in range(runs):
            for b in sizes:
                wall, _rows = ll.run(b, steps)
                tps[b].append(b * steps / wall)
        _, alone = ll.run(1, 16, keep_logits=True)
        identical, diff = {}, {}
        for b in sizes:
            _, rows = ll.run(b, 16, keep_logits=True)
            identical[b] = rows == alone
            diff[b] = max(float(np.abs(np.frombuffer(x, np.float32) - np.frombuffer(y, np.float32)).max())
                          for x, y in zip(rows, alone))
    finally:
        ll.close()
    return {"tps": tps, "identical": identical, "max_abs_diff": diff}


LAYOUTS = [
    ("1 sequence", [0]),
    ("4 in slots 0-3", [0, 1, 2, 3]),
    ("4 in slots 0, 2, 5, 7", [0, 2, 5, 7]),
    ("4 in slots 3, 0, 1, 2 (batch order)", [3, 0, 1, 2]),
    ("8 in slots 0-7", list(range(8))),
    ("8 in even slots", list(range(0, 16, 2))),
    ("8 in slots 0-7, one out of order", [5, 0, 1, 2, 3, 4, 6, 7]),
    ("16 in slots 0-15", list(range(16))),
    ("16 in slots 15-0 (batch order)", list(range(15, -1, -1))),
]


def layouts(path: str, threads: int, runs: int = 2) -> None:
    ll = LowLevel(path, threads, 16, n_ctx_seq=1024)
    try:
        ll.run_slots([0], 4)
        print(f"{Path(path).name}, {threads} threads, 16 KV streams of 1024 cells; best of {runs} runs of 24 steps\n")
        print("| sequences | ms per step | tokens/s |")
        print("|---|---:|---:|")
        for name, slots in LAYOUTS:
            ms = min(ll.run_slots(slots) for _ in range(runs))
            print(f"| {name} | {ms:.1f} | {len(slots) * 1000 / ms:.1f} |", flush=True)
    finally:
        ll.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="a .gguf path or a registry name")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--unified", action="store_true", help="one KV cache shared by all sequences (kv_unified)")
    ap.add_argument("--layouts", action="store_true", help="time a decode step by which slots the sequences hold")
    ap.add_argument("--json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from llmtools.models import gguf_file

    path = args.model if args.model.endswith(".gguf") else gguf_file(args.model)
    if args.layouts:
        layouts(path, args.threads)
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    res = probe(path, args.threads, sizes, args.steps, args.runs, args.unified)
    base = statistics.median(res["tps"][sizes[0]])
    print(f"{Path(path).name}, {args.threads} threads, {args.steps} steps, {args.runs} runs, "
          f"kv_unified={args.unified}\n")
    print("| B | tokens/s (median) | x vs B=1 (range over runs) | seq 0 logits bit-identical to alone | max abs diff |")
    print("|---:|---:|---|---|---:|")
    for b in sizes:
        ratios = [t / r0 for t, r0 in zip(res["tps"][b], res["tps"][sizes[0]])]
        print(f"| {b} | {statistics.median(res['tps'][b]):.1f} | {min(ratios):.2f}-{max(ratios):.2f} "
              f"(median {statistics.median(res['tps'][b]) / base:.2f}) | {res['identical'][b]} | {res['max_abs_diff'][b]:.3g} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
