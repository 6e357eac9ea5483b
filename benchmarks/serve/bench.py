"""Load benchmark: `llmtools serve` vs `python -m llama_cpp.server` vs direct llama-cpp-python.

Same GGUF model (smollm2 by default), same prompts, same greedy settings, and the same llama.cpp
threads for all three, both for decoding (--threads) and for prompt batches (--batch-threads,
default: the same as --threads; llama_cpp.server would otherwise use every core for prompts).
For each concurrency level (1, 4, 8) a pool of client threads sends the same fixed set of
/v1/completions requests over keep-alive connections to each server; direct generation runs the
same prompts one after another on a llama_cpp.Llama in this process (a Llama object serves one
request at a time, so that is what a server can at best reach). Systems are measured in rounds,
alternating their order, so a change in background load hits all of them alike.

Reported per system and level: completion tokens/s (total completion tokens / wall time),
requests/s, p50 and p95 request latency, and the ratios against direct and against
llama_cpp.server measured in the same round.

    .venv/bin/python benchmarks/serve/bench.py [--model smollm2] [--requests 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "Explain what a language model is in two sentences.",
    "Write a haiku about the sea.",
    "What are the primary colors?",
    "How do I boil an egg?",
    "Name three planets in the solar system.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet in one sentence.",
    "What is 12 times 12?",
    "Suggest a name for a friendly robot.",
    "How many legs does a spider have?",
    "What does a compiler do?",
    "Describe a cat to someone who has never seen one.",
    "List two benefits of regular exercise.",
    "What is the boiling point of water at sea level?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode}): {' '.join(proc.args)}")
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send every body once, `concurrency` at a time; returns throughput and latency figures."""
    work: queue.Queue = queue.Queue()
    for body in bodies:
        work.put(body)
    latencies: list[float] = []
    tokens = [0]
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=600) as c:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                r = c.post(url + "/v1/completions", json=body)
                dt = time.perf_counter() - t0
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        latencies.append(dt)
                        tokens[0] += r.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return summarize(latencies, tokens[0], wall, statuses)


def summarize(latencies: list[float], tokens: int, wall: float, statuses: dict | None = None) -> dict:
    return {
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "statuses": statuses or {200: len(latencies)},
    }


def run_direct(llm, prompts: list[str], max_tokens: int) -> dict:
    latencies, tokens = [], 0
    start = time.perf_counter()
    for prompt in prompts:
        t0 = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0,
                                    repeat_penalty=1.0)
        latencies.append(time.perf_counter() - t0)
        tokens += out["usage"]["completion_tokens"]
    return summarize(latencies, tokens, time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp decoding threads, the same for all three")
    ap.add_argument("--batch-threads", type=int, default=None,
                    help="llama.cpp prompt-processing threads (n_threads_batch), the same for all three (default: "
                         "--threads; llama_cpp.server's own default is every core, which stalls on a loaded machine)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=12, help="requests per system and concurrency level")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--same-prompt", action="store_true",
                    help="send one prompt every time: llama.cpp then reuses its cached prefix, so only decoding is "
                         "timed (prefill on a loaded machine can stall for seconds at random and swamp the comparison)")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    args.batch_threads = args.batch_threads or args.threads
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT / "src"))
    from llmtools.models import gguf_file, load_model

    import llama_cpp

    path = gguf_file(args.model)
    # The same prompt text for everyone: the model's own chat template, rendered once.
    renderer = load_model(path, threads=args.threads, n_ctx=2048)
    prompts = [renderer.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    renderer.close()
    if args.same_prompt:
        prompts = prompts[:1]
    prompts = (prompts * (args.requests // len(prompts) + 1))[: args.requests]
    common = {"max_tokens": args.max_tokens, "temperature": 0.0, "top_p": 1.0, "top_k": 0}
    ours_bodies = [{"prompt": p, **common} for p in prompts]
    # llama_cpp.server's own defaults differ (top_k 40, min_p 0.05, repeat_penalty 1.1): pin them
    # to what llmtools and the direct run use, so every system decodes the same way.
    theirs_bodies = [{"prompt": p, **common, "min_p": 0.0, "repeat_penalty": 1.0} for p in prompts]

    port_ours, port_theirs = free_port(), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours = subprocess.Popen(
        [str(BIN / "llmtools"), "serve", path, "--port", str(port_ours), "--threads", str(args.threads),
         "--batch-threads", str(args.batch_threads), "--n-ctx", "2048", "--max-queue", "64", "-q"],
        env=env, stdout=subprocess.DEVNULL)
    theirs = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", path, "--host", "127.0.0.1", "--port", str(port_theirs),
         "--n_threads", str(args.threads), "--n_threads_batch", str(args.batch_threads), "--n_ctx", "2048",
         "--verbose", "False"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url_ours, url_theirs = f"http://127.0.0.1:{port_ours}", f"http://127.0.0.1:{port_theirs}"
    results: list[dict] = []
    try:
        wait_up(url_ours, ours, "/health")
        wait_up(url_theirs, theirs, "/v1/models")
        llm = llama_cpp.Llama(model_path=path, n_threads=args.threads, n_threads_batch=args.batch_threads, n_ctx=2048,
                              verbose=False)
        # warm-up: page the weights in for everyone
        run_direct(llm, prompts[:2], args.max_tokens)
        run_load(url_ours, ours_bodies[:2], 1)
        run_load(url_theirs, theirs_bodies[:2], 1)
        for rnd in range(args.rounds):
            direct = run_direct(llm, prompts, args.max_tokens)
            results.append({"round": rnd, "system": "direct", "concurrency": 1, **direct})
            print(f"round {rnd} direct: {direct['tokens_per_s']} tok/s p95 {direct['p95_ms']} ms", file=sys.stderr)
            for c in levels:
                order = [("llmtools", url_ours, ours_bodies), ("llama_cpp.server", url_theirs, theirs_bodies)]
                if (rnd + c) % 2:
                    order.reverse()
                for name, url, bodies in order:
                    res = run_load(url, bodies, c)
                    results.append({"round": rnd, "system": name, "concurrency": c, **res})
                    print(f"round {rnd} {name} c={c}: {res['tokens_per_s']} tok/s p95 {res['p95_ms']} ms {res['statuses']}",
                          file=sys.stderr)
        llm.close()
    finally:
        for proc in (ours, theirs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    report(results, levels, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


def report(results: list[dict], levels: list[int], args) -> None:
    def agg(system: str, c: int | None = None) -> dict:
        rows = [r for r in results if r["system"] == system and (c is None or r["concurrency"] == c)]
        tokens = sum(r["tokens"] for r in rows)
        wall = sum(r["wall_s"] for r in rows)
        return {"tps": tokens / wall, "p95": statistics.median(r["p95_ms"] for r in rows),
                "errors": sum(n for r in rows for s, n in r["statuses"].items() if int(s) != 200)}

    direct = agg("direct")
    print(f"\nmodel {args.model}, {args.threads} llama.cpp decoding thread(s), {args.batch_threads} for prompts, "
          f"{args.requests} requests x {args.max_tokens} max tokens "
          f"per system and level, {args.rounds} rounds{', one repeated prompt' if args.same_prompt else ''}; "
          f"tokens/s pooled over rounds, p95 = median of rounds\n")
    print("| concurrency | system | tokens/s | p95 latency ms | non-200 | vs direct | vs llama_cpp.server |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 1 (sequential) | direct llama-cpp-python | {direct['tps']:.1f} | {direct['p95']:.0f} | 0 | 1.00x | |")
    for c in levels:
        theirs = agg("llama_cpp.server", c)
        ours = agg("llmtools", c)
        print(f"| {c} | llama_cpp.server | {theirs['tps']:.1f} | {theirs['p95']:.0f} | {theirs['errors']} | "
              f"{theirs['tps'] / direct['tps']:.2f}x | 1.00x |")
        print(f"| {c} | llmtools serve | {ours['tps']:.1f} | {ours['p95']:.0f} | {ours['errors']} | "
              f"{ours['tps'] / direct['tps']:.2f}x | {ours['tps'] / theirs['tps']:.2f}x |")


if __name__ == "__main__":
    main()
