"""Where a continuous-batching step spends its time, next to the low-level probe at the same B.

In one process, no HTTP: B greedy requests submitted at once to a `ContinuousBatcher`
(`--parallel` slots, `--n-ctx` cells per slot), then the batcher's own step timing
(`ContinuousBatcher.times`: batch build, llama_decode, sampling, the callbacks that hand text to
the caller, prompt chunks) against `probe_batch.LowLevel`'s decode steps at the same B.

    .venv/bin/python benchmarks/serve/step_profile.py [--model smollm2] [--threads 2] [--sizes 1,4,8,16]
        [--parallel 16] [--n-ctx 1024] [--unified] [--probe-ctx 256]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import QUESTIONS  # noqa: E402


def run_batcher(b, prompts, params) -> tuple[float, int]:
    from llmtools.models.llama_batching import SeqRequest

    left = threading.Semaphore(0)
    out: list = []

    def done(value):
        out.append(value)
        left.release()

    t0 = time.perf_counter()
    for p in prompts:
        b.submit(SeqRequest(p, params, on_text=lambda t: None, on_done=done))
    for _ in prompts:
        left.acquire()
    wall = time.perf_counter() - t0
    for v in out:
        if isinstance(v, BaseException):
            raise v
    return wall, sum(v.completion_tokens for v in out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="1,4,8,16")
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--n-ctx", type=int, default=1024, help="cells per slot")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--probe-ctx", type=int, default=256, help="cells per sequence in the probe's context")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--hogs", type=int, default=0,
                    help="busy-looping processes beside it (what HTTP clients and an event loop cost the cores)")
    ap.add_argument("--unified", action="store_true", help="the batcher's slots share one KV cache")
    args = ap.parse_args()

    from llmtools.models import GenerationParams, gguf_file, load_model

    path = args.model if args.model.endswith(".gguf") else gguf_file(args.model)
    backend = load_model(path, backend="llama", threads=args.threads, n_ctx=args.n_ctx)
    prompts = [backend.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    sizes = [int(x) for x in args.sizes.split(",")]
    params = GenerationParams(max_tokens=args.max_tokens, temperature=0.0)
    batcher = backend.batcher(parallel=args.parallel, n_ctx=args.n_ctx, **({"unified": True} if args.unified else {}))
    import multiprocessing

    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    ll = None
    if not args.no_probe:
        from probe_batch import LowLevel

        ll = LowLevel(path, args.threads, max(sizes), n_ctx_seq=args.probe_ctx)
        ll.run(1, 4)
    print(f"{Path(path).name}, {args.threads} threads, batcher: {args.parallel} slots x {batcher.n_ctx} cells, "
          f"{args.max_tokens} tokens; probe: {args.probe_ctx} cells per sequence")
    print("| B | batcher tok/s (wall) | decode-only tok/s | ms/step decode | build | sample | emit | prefill ms total "
          "| other ms/step | probe tok/s | batcher decode / probe |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    run_batcher(batcher, prompts[:2], params)  # warm-up
    for _ in range(args.rounds):
        for b in sizes:
            from llmtools.models.llama_batching import StepTimes

            batcher.times = StepTimes()
            wall, tokens = run_batcher(batcher, [prompts[i % len(prompts)] for i in range(b)], params)
            t = batcher.times
            n = max(t.decode_steps, 1)
            other = wall - (t.build + t.decode + t.sample + t.emit + t.prefill)
            probe_tps = float("nan")
            if ll is not None:
                pw, _ = ll.run(b, args.max_tokens)
                probe_tps = b * args.max_tokens / pw
            dec_tps = t.decoded / t.decode if t.decode else float("nan")
            print(f"| {b} | {tokens / wall:.1f} | {dec_tps:.1f} | {1000 * t.decode / n:.2f} | {1000 * t.build / n:.3f} | "
                  f"{1000 * t.sample / n:.3f} | {1000 * t.emit / n:.3f} | {1000 * t.prefill:.0f} | {1000 * other / n:.3f} | "
                  f"{probe_tps:.1f} | {dec_tps / probe_tps:.2f} |", flush=True)
    batcher.close()
    if ll is not None:
        ll.close()
    backend.close()
    for h in hogs:
        h.terminate()


def _hog() -> None:
    while True:
        pass


if __name__ == "__main__":
    main()
