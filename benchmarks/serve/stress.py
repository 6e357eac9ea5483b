"""Stress: 16 concurrent clients x 200 requests each against `llmtools serve` (smollm2 GGUF).

A mix of non-streamed completions, streamed chat (with include_usage) and /v1/models, over
keep-alive connections, all to 127.0.0.1. Requests are short (a few tokens) so 3,200 of them
fit in a few minutes on a 2-core machine; the point is the server's behaviour under a full
queue, not generation speed. Exits 1 if any response is a 5xx or a transport error.

    .venv/bin/python benchmarks/serve/stress.py [--clients 16] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BIN, free_port, percentile, wait_up  # noqa: E402

PROMPTS = ["Hi", "Say yes.", "Count: 1 2 3", "Red, green and", "The sky is", "Hello there",
           # a long one (~400 tokens), so prompt lengths are mixed too
           " ".join(["The quick brown fox jumps over the lazy dog while the cat watches from the fence."] * 22)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tiny", action="store_true",
                    help="serve the 2-layer test model (tests/helpers/tiny.py, torch backend) instead of --model: "
                         "the same server path with near-free generation, to stress the server itself")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--max-tokens", default="1,4,16",
                    help="max_tokens per request, cycled over (mixed lengths); one number for all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=16, help="serve --parallel (llama.cpp continuous batching slots)")
    args = ap.parse_args()
    lengths = [int(x) for x in str(args.max_tokens).split(",")]
    stop = threading.Event()  # SIGTERM: clients stop after their current request, the report still prints
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    if args.tiny:
        import tempfile

        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from helpers.tiny import build_tiny_llama

        args.model = build_tiny_llama(Path(tempfile.mkdtemp(prefix="llmtools-stress-")) / "tiny")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmtools-serve-stress-{port}.jsonl"
    server = subprocess.Popen(
        [str(BIN / "llmtools"), "serve", args.model, "--port", str(port), "--threads", str(args.threads), "--log", str(log),
         "--parallel", str(args.parallel), "-q"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    statuses: Counter = Counter()
    errors: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            for n in range(args.requests):
                if stop.is_set():
                    return
                prompt = PROMPTS[(i + n) % len(PROMPTS)]
                max_tokens = lengths[(i * 7 + n) % len(lengths)]
                kind = n % 10
                t0 = time.perf_counter()
                try:
                    if kind < 7:
                        r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens})
                        ok = r.status_code != 200 or r.json()["usage"]["completion_tokens"] <= max_tokens
                    elif kind < 9:
                        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                                "stream": True, "stream_options": {"include_usage": True}}
                        with c.stream("POST", "/v1/chat/completions", json=body) as r:
                            lines = [line for line in r.iter_lines() if line]
                        ok = r.status_code != 200 or lines[-1] == "data: [DONE]"
                    else:
                        r = c.get("/v1/models")
                        ok = r.status_code != 200 or r.json()["data"][0]["active"] is True
                except httpx.TransportError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    statuses[r.status_code] += 1
                    latencies.append(dt)
                    if not ok:
                        errors["bad body"] += 1

    rss: list[tuple[int, float]] = []  # (requests answered so far, server RSS MB)

    def sample_rss() -> None:
        while server.poll() is None and not done.is_set():
            with lock:
                answered = sum(statuses.values())
            try:
                rss.append((answered, rss_mb(server.pid)))
            except OSError:
                return
            done.wait(1.0)

    done = threading.Event()
    try:
        wait_up(url, server, "/health")
        threading.Thread(target=sample_rss, daemon=True).start()
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        metrics = httpx.get(f"{url}/metrics").text
        done.set()
    finally:
        server.terminate()
        code = server.wait(60)
    logged = Counter(json.loads(line)["status"] for line in log.read_text().splitlines())
    log.unlink()
    total = sum(statuses.values())
    # RSS after warm-up: the first sample past 10% of the requests; "flat" = the end within 10% (+20 MB)
    warm = next((mb for n, mb in rss if n >= total // 10), None)
    end_rss = rss[-1][1] if rss else None
    rss_flat = warm is not None and end_rss is not None and end_rss <= warm * 1.10 + 20
    five = sum(n for s, n in statuses.items() if s >= 500)
    result = {
        "clients": args.clients,
        "requests": args.clients * args.requests,
        "stopped_early": stop.is_set(),
        "answered": total,
        "statuses": dict(statuses),
        "5xx": five,
        "transport_errors": dict(errors),
        "wall_s": round(wall, 1),
        "requests_per_s": round(total / wall, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "logged_statuses": dict(logged),
        "server_exit": code,
        "rss_mb_after_warmup": round(warm, 1) if warm else None,
        "rss_mb_end": round(end_rss, 1) if end_rss else None,
        "rss_mb_max": round(max(mb for _, mb in rss), 1) if rss else None,
        "rss_flat": rss_flat,
        "batch_size_lines": [line for line in metrics.splitlines() if line.startswith("llmtools_batch_size_")
                             and ("_count" in line or "_sum" in line)],
        "metrics_requests_lines": [line for line in metrics.splitlines() if line.startswith("llmtools_requests_total")],
    }
    print(json.dumps(result, indent=1))
    sys.exit(1 if five or errors or total != args.clients * args.requests or code != 0 or not rss_flat else 0)


if __name__ == "__main__":
    main()
