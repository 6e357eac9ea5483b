"""The cost of `finetune --track mlflow`: training tokens/s with and without tracking, side by side.

Both sides run the same `llmtools finetune` (smollm2, LoRA, the bundled order-extraction task,
`--log-every 1`, so every optimizer step sends a metric batch: the worst case) as subprocesses,
interleaved off/on/on/off so that load drifts hit both sides alike. The tracked side logs to a
real `mlflow server` (SQLite backend, local artifact folder) started here on 127.0.0.1.
tokens/s = the final record's tokens_seen / runtime_s (the training loop only: model loading and
the artifact upload after training are outside it).

Second table: start-up of `llmtools finetune --help` with MLFLOW_TRACKING_URI set and unset
(tracking must not be imported by --help), median of N runs each, interleaved.

    .venv/bin/python benchmarks/finetune/tracking_overhead.py --quick    # ~5 minutes on 2 busy cores
    .venv/bin/python benchmarks/finetune/tracking_overhead.py            # 3 pairs, 16 steps each
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "llmtools" / "data" / "finetune" / "orders-train.jsonl"
THREADS = os.environ.get("BENCH_THREADS", "1")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(OMP_NUM_THREADS=THREADS, TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT / "src"), **extra)
    return env


def start_mlflow(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow server did not start")


def finetune(work: Path, tracked: bool, url: str, args: argparse.Namespace, n: int) -> dict:
    out = work / f"run-{n}-{'on' if tracked else 'off'}"
    cmd = [sys.executable, "-m", "llmtools", "finetune", "--base", "smollm2", "-o", str(out), "--adapter-only",
           "--max-steps", str(args.steps), "--log-every", "1", "--save-every", "0", "--batch-size", "4", str(args.data)]
    env = _env(MLFLOW_TRACKING_URI=url) if tracked else _env()
    if tracked:
        cmd += ["--track", "mlflow:tracking-overhead"]
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    final = json.loads(proc.stdout.decode().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {"tracked": tracked, "tokens": final["tokens_seen"], "runtime_s": final["runtime_s"],
            "tokens_per_s": final["tokens_seen"] / final["runtime_s"], "run_id": (final.get("tracking") or {}).get("run_id")}


def startup(url: str, n: int) -> dict:
    times: dict[str, list[float]] = {"unset": [], "set": []}
    for _ in range(n):
        for key in ("unset", "set"):
            env = _env(MLFLOW_TRACKING_URI=url) if key == "set" else _env()
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "llmtools", "finetune", "--help"], capture_output=True, env=env, check=True)
            times[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 pairs of 8 steps")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(Path(__file__).with_name("tracking_results.json")))
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.steps = 2, 8
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="llmtools-track-bench-"))
    server, url = start_mlflow(work / "mlflow")
    try:
        runs = []
        for i in range(args.pairs):  # off on on off, off on on off, ...
            order = (False, True) if i % 2 == 0 else (True, False)
            for tracked in order:
                runs.append(finetune(work, tracked, url, args, len(runs)))
                print(json.dumps(runs[-1]), file=sys.stderr)
        start = startup(url, 10)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    off = [r["tokens_per_s"] for r in runs if not r["tracked"]]
    on = [r["tokens_per_s"] for r in runs if r["tracked"]]
    result = {
        "load_at_start": load_at_start, "load_at_end": os.getloadavg(), "steps": args.steps, "pairs": args.pairs, "threads": THREADS, "runs": runs,
        "tokens_per_s_off": statistics.mean(off), "tokens_per_s_on": statistics.mean(on),
        "ratio_on_off": statistics.mean(on) / statistics.mean(off), "help_startup_s": start,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
