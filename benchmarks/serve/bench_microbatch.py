"""Micro-batching on the torch backend: `llmtools serve` with --micro-batch 1 (one request per
forward pass) vs --micro-batch 8 (waiting requests with equal options merged into one
generate_batch call), at concurrency 1, 4 and 8, on smollm2 converted to a safetensors directory.

Both settings run in this process, in alternating order, on the same loaded model.

    .venv/bin/python benchmarks/serve/bench_microbatch.py [--requests 16] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import free_port, run_load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--levels", default="1,4,8")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import uvicorn

    from llmtools.models import hf_dir, load_model
    from llmtools.ops.serve import ServeConfig, ServeState, bind_socket, build_app

    path = hf_dir(args.model)
    backend = load_model(path, backend="torch", threads=args.threads)
    questions = ["What is the capital of France?", "Name a primary color.", "Say hello.", "What is 2+2?"]
    bodies = [{"prompt": backend.apply_chat_template([{"role": "user", "content": questions[i % 4]}]),
               "max_tokens": args.max_tokens} for i in range(args.requests)]

    def serve(micro: int):
        config = ServeConfig(model_ref=path, max_concurrency=8, max_queue=64, micro_batch=micro, quiet=True)
        state = ServeState(config, lambda ref: backend, health_check=lambda b: None)
        state.load(path)
        sock = bind_socket("127.0.0.1", free_port())
        server = uvicorn.Server(uvicorn.Config(build_app(state), lifespan="off", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread

    servers = {m: serve(m) for m in (1, 8)}
    run_load(servers[1][0], bodies[:2], 1)  # warm-up
    print("| concurrency | --micro-batch | tokens/s | p95 latency ms | speed-up |")
    print("|---|---|---|---|---|")
    for c in [int(x) for x in args.levels.split(",")]:
        res = {}
        for m in ((1, 8) if c % 2 else (8, 1)):
            res[m] = run_load(servers[m][0], bodies, c)
            print(f"c={c} micro={m}: {res[m]}", file=sys.stderr)
        for m in (1, 8):
            print(f"| {c} | {m} | {res[m]['tokens_per_s']:.1f} | {res[m]['p95_ms']:.0f} | "
                  f"{res[m]['tokens_per_s'] / res[1]['tokens_per_s']:.2f}x |")
    for _, server, thread in servers.values():
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
