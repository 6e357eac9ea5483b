"""Load benchmark: `llmtools serve` (continuous batching, and the old one-at-a-time path) vs
`python -m llama_cpp.server` vs direct llama-cpp-python, plus the low-level batching probe.

Same GGUF model (smollm2 by default), same prompts, same greedy settings, the same context per
request and the same llama.cpp threads for every system, both for decoding (--threads) and for
prompt batches (--batch-threads, default: the same as --threads). For each concurrency level
(1, 4, 8, 16) a pool of client threads sends the same fixed set of streamed /v1/completions
requests over keep-alive connections to each server:

- `llmtools --parallel`: `llmtools serve --parallel N` (N = the highest level), continuous batching;
- `llmtools sequential`: `llmtools serve --parallel 0`, one request at a time on one context;
- `llama_cpp.server`: llama-cpp-python's own server (one request at a time);
- direct: the prompts one after another on a llama_cpp.Llama in this process.

Systems are measured in rounds, alternating their order, so a change in background load hits all
of them alike. After the servers stop, `probe_batch.probe` measures the ceiling: B sequences
decoded by one llama_decode per step, on the low-level API alone.

Reported per system and level: completion tokens/s (total completion tokens / wall time), p50
and p95 request latency, time to first token, and ratios against direct, against the system's
own 1-client figure, against llama_cpp.server and against the probe at B = clients.

    .venv/bin/python benchmarks/serve/bench.py [--model smollm2] [--requests 32] [--levels 1,4,8,16]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
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


def run_load(url: str, bodies: list[dict], concurrency: int, stream: bool = False) -> dict:
    """Send every body once, `concurrency` at a time; returns throughput and latency figures.
    With `stream`, each request is streamed and the time to its first text chunk is kept (TTFT).

    The clients are `concurrency` coroutines on one asyncio loop in this process, each with its
    own keep-alive connection, speaking HTTP/1.1 on raw sockets: a benchmark client must not take
    CPU from the servers it measures (16 httpx client threads parsing SSE did, on 2 cores). The
    CPU the clients used is reported (`client_cpu_s`), and the server's own (`server_cpu_s`)."""
    import asyncio

    return asyncio.run(_run_load(url, bodies, concurrency, stream))


async def _run_load(url: str, bodies: list[dict], concurrency: int, stream: bool) -> dict:
    import asyncio
    from urllib.parse import urlsplit

    import orjson

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    work = list(reversed(bodies))
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = [0]
    statuses: dict[int, int] = {}

    async def one(reader, writer, body: dict) -> tuple[int, int, float | None, bool]:
        if stream:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        data = orjson.dumps(body)
        t0 = time.perf_counter()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, len(data), data))
        status_line = await reader.readline()
        if not status_line:  # the server closed a kept-alive connection without saying so
            raise ConnectionResetError
        status = int(status_line.split()[1])
        chunked, length, close = False, 0, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "content-length":
                length = int(value)
            elif name == "connection" and value == "close":
                close = True
        first, n, pieces, buf = None, 0, 0, b""

        def events(data: bytes) -> None:
            nonlocal first, n, pieces, buf
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event = orjson.loads(line[6:])
                choices = event.get("choices")
                if choices and choices[0].get("text"):
                    pieces += 1
                    if first is None:
                        first = time.perf_counter() - t0
                if event.get("usage"):
                    n = event["usage"]["completion_tokens"]

        if chunked:
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                data = await reader.readexactly(size + 2)
                if status == 200 and stream:
                    events(data[:-2])
                elif status == 200:
                    buf += data[:-2]
        else:
            data = await reader.readexactly(length)
            if status == 200 and stream:
                events(data + b"\n")
            else:
                buf = data
        if status == 200 and not stream:
            n = orjson.loads(buf)["usage"]["completion_tokens"]
        # llama_cpp.server ignores stream_options.include_usage: count its chunks (one per token)
        return status, n or pieces, first, close

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while work:
                body = work.pop()
                t0 = time.perf_counter()
                try:
                    status, n, first, close = await one(reader, writer, body)
                except ConnectionResetError:
                    # llama-server (cpp-httplib) closes a connection after a long streamed
                    # response although it offered keep-alive: send the request again on a new one
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    t0 = time.perf_counter()
                    status, n, first, close = await one(reader, writer, body)
                dt = time.perf_counter() - t0
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(dt)
                    tokens[0] += n
                    if first is not None:
                        ttfts.append(first)
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    cpu0 = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    out = summarize(latencies, tokens[0], wall, statuses, ttfts)
    out["client_cpu_s"] = round(time.process_time() - cpu0, 3)
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize(latencies: list[float], tokens: int, wall: float, statuses: dict | None = None,
              ttfts: list[float] | None = None) -> dict:
    return {
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "ttft_p50_ms": round(percentile(ttfts or [], 0.5) * 1000, 1),
        "ttft_p95_ms": round(percentile(ttfts or [], 0.95) * 1000, 1),
        "statuses": statuses or {200: len(latencies)},
    }


def batch_counters(url: str) -> dict:
    """The batcher's step-time counters from llmtools' /metrics (empty for other servers)."""
    out: dict = {}
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        if line.startswith(("llmtools_batch_step_seconds_total", "llmtools_batch_tokens_total",
                            "llmtools_batch_steps_total")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def profile_delta(before: dict, after: dict, wall: float) -> str:
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    steps = d.get("llmtools_batch_steps_total", 0) or 1
    sec = lambda phase: d.get(f'llmtools_batch_step_seconds_total{{phase="{phase}"}}', 0.0)  # noqa: E731
    decoded = d.get('llmtools_batch_tokens_total{kind="decode"}', 0)
    prompt = d.get('llmtools_batch_tokens_total{kind="prompt"}', 0)
    return (f"wall {wall:.2f}s: decode {sec('decode'):.2f}s ({1000 * sec('decode') / steps:.1f} ms/step, "
            f"{decoded / steps:.1f} seq/step), prefill {sec('prefill'):.2f}s "
            f"({prompt:.0f} tokens), sample {sec('sample'):.2f}s, "
            f"emit {sec('emit'):.2f}s, idle {wall - sum(sec(p) for p in ('decode', 'prefill', 'sample', 'emit', 'build')):.2f}s")


def run_direct(llm, prompts: list[str], max_tokens: int) -> dict:
    """The prompts one after another on one Llama (what one Llama object can do), streamed for TTFT."""
    latencies, ttfts, tokens = [], [], 0
    start = time.perf_counter()
    for prompt in prompts:
        llm.reset()  # like llmtools' one-at-a-time path: no prefix reuse between requests
        t0 = time.perf_counter()
        first = None
        for part in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=0,
                                          min_p=0.0, repeat_penalty=1.0, stream=True):
            if first is None and part["choices"][0]["text"]:
                first = time.perf_counter() - t0
            if not part["choices"][0].get("finish_reason"):
                tokens += 1
        latencies.append(time.perf_counter() - t0)
        ttfts.append(first if first is not None else latencies[-1])
    return summarize(latencies, tokens, time.perf_counter() - start, None, ttfts)


SYSTEMS = ("llmtools --parallel", "llmtools sequential", "llama_cpp.server", "llama-server")
# llama.cpp's own C++ server takes the request options of llama_cpp.server (its sampler defaults
# differ from ours the same way)
THEIRS = ("llama_cpp.server", "llama-server")


def start_servers(path: str, args, env: dict) -> dict:
    """name -> (url, process, bodies key) for the three HTTP systems."""
    top = max(args.level_list)
    servers = {}
    common = ["--threads", str(args.threads), "--batch-threads", str(args.batch_threads), "--n-ctx", str(args.n_ctx),
              "--max-queue", "256", "-q"]
    parallel = ["--parallel", str(args.parallel)] if args.parallel else []  # default: serve's own
    for name, extra in (("llmtools --parallel", [*parallel, "--max-concurrency", str(top)]),
                        ("llmtools sequential", ["--parallel", "0", "--max-concurrency", str(top)])):
        if name not in args.system_list:
            continue
        port = free_port()
        ours, our_env = common, env
        if args.serve_default_threads:  # what a user gets with no thread options at all
            ours = [x for i, x in enumerate(common) if not (x.endswith("threads") or common[i - 1].endswith("threads"))]
            our_env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "LLMTOOLS_THREADS")}
        proc = subprocess.Popen([str(BIN / "llmtools"), "serve", path, "--port", str(port), *ours, *extra], env=our_env,
                                stdout=subprocess.DEVNULL)
        servers[name] = (f"http://127.0.0.1:{port}", proc, "/health")
    if not args.no_llama_cpp_server and "llama_cpp.server" in args.system_list:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", path, "--host", "127.0.0.1", "--port", str(port),
             "--n_threads", str(args.threads), "--n_threads_batch", str(args.batch_threads), "--n_ctx", str(args.n_ctx),
             # by default a new request interrupts the one streaming (cut-short completions would
             # count as fast ones): let every request run to its end, as the others do
             "--interrupt_requests", "False", "--verbose", "False"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["llama_cpp.server"] = (f"http://127.0.0.1:{port}", proc, "/v1/models")
    if "llama-server" in args.system_list:
        # llama.cpp's C++ server (build_llama_server.sh builds it from the source llama-cpp-python
        # vendors): the same slots as llmtools (--parallel, default 8), n_ctx per slot, its own
        # continuous batching and prompt cache, no web UI
        slots = args.parallel or 8
        port = free_port()
        proc = subprocess.Popen(
            [args.llama_server, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-t", str(args.threads),
             "-tb", str(args.batch_threads), "-np", str(slots), "-c", str(args.n_ctx * slots), "--no-webui",
             "--log-disable"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["llama-server"] = (f"http://127.0.0.1:{port}", proc, "/health")
    return servers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="a .gguf path or a registry name")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp decoding threads, the same for every system")
    ap.add_argument("--batch-threads", type=int, default=None,
                    help="llama.cpp prompt-processing threads (n_threads_batch), the same for every system "
                         "(default: --threads)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context per request, every system")
    ap.add_argument("--requests", type=int, default=32, help="requests per system and concurrency level")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--no-llama-cpp-server", action="store_true")
    ap.add_argument("--systems", default=",".join(SYSTEMS) + ",direct",
                    help="comma-separated subset of: " + ", ".join(SYSTEMS) + ", direct (to split a run into "
                         "several shorter invocations)")
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER"),
                    help="llama.cpp's C++ llama-server binary, for the system 'llama-server' (default: $LLAMA_SERVER; "
                         "benchmarks/serve/build_llama_server.sh builds one)")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--parallel", type=int, default=0,
                    help="llmtools serve --parallel (slots decoded together); default: serve's own default")
    ap.add_argument("--fresh-prompts", action="store_true",
                    help="every request of the run its own prompt (a different number at its start), so that no two "
                         "requests share more than the chat template and a token or two, and prefix reuse cannot "
                         "serve a repeated prompt; the same prompts for every system at a level and round")
    ap.add_argument("--serve-default-threads", action="store_true",
                    help="start llmtools serve with no thread options and no $OMP_NUM_THREADS (its own defaults)")
    ap.add_argument("--probe-steps", type=int, default=64)
    ap.add_argument("--probe-runs", type=int, default=2)
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    args.level_list = [int(x) for x in args.levels.split(",")]
    args.batch_threads = args.batch_threads or args.threads
    args.system_list = [x.strip() for x in args.systems.split(",") if x.strip()]
    unknown = set(args.system_list) - {*SYSTEMS, "direct"}
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if "llama-server" in args.system_list and not args.llama_server:
        ap.error("the system llama-server needs --llama-server PATH or $LLAMA_SERVER")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(ROOT / "src"))
    from llmtools.models import gguf_file, load_model

    import llama_cpp

    path = args.model if args.model.endswith(".gguf") else gguf_file(args.model)
    # The same prompt text for everyone: the model's own chat template, rendered once.
    renderer = load_model(path, threads=args.threads, n_ctx=args.n_ctx)
    prompts = [renderer.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    template = prompts[0]
    q0 = QUESTIONS[0]
    head, tail = template[: template.index(q0)], template[template.index(q0) + len(q0):]
    renderer.close()

    def renderer_prompts(question: str) -> str:  # the chat template, filled without the model loaded
        return head + question + tail
    common = {"max_tokens": args.max_tokens, "temperature": 0.0, "top_p": 1.0, "top_k": 0}
    serial = [0]

    def prompt_set() -> list[str]:
        if not args.fresh_prompts:
            return (prompts * (args.requests // len(prompts) + 1))[: args.requests]
        out = []
        for i in range(args.requests):
            serial[0] += 1
            # the digits reversed, so that consecutive requests differ in their first token
            q = f"{str(serial[0])[::-1]}. {QUESTIONS[i % len(QUESTIONS)]}"
            out.append(renderer_prompts(q))
        return out

    def bodies(texts: list[str]) -> tuple[list[dict], list[dict]]:
        ours = [{"prompt": p, **common} for p in texts]
        # llama_cpp.server's own defaults differ (top_k 40, min_p 0.05, repeat_penalty 1.1): pin
        # them to what llmtools and the direct run use, so every system decodes the same way.
        theirs = [{"prompt": p, **common, "min_p": 0.0, "repeat_penalty": 1.0} for p in texts]
        return ours, theirs

    # the servers run this tree's llmtools, whatever is installed
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    servers = start_servers(path, args, env)
    results: list[dict] = []
    probe_res = None
    try:
        for url, proc, health in servers.values():
            wait_up(url, proc, health)
        llm = llama_cpp.Llama(model_path=path, n_threads=args.threads, n_threads_batch=args.batch_threads,
                              n_ctx=args.n_ctx, verbose=False)
        run_direct(llm, prompts[:2], args.max_tokens)  # warm-up: page the weights in for everyone
        warm_ours, warm_theirs = bodies(prompts[:2])
        for name, (url, _, _) in servers.items():
            run_load(url, warm_theirs if name in THEIRS else warm_ours, 1, stream=True)
        for rnd in range(args.rounds):
            if "direct" in args.system_list:
                direct = run_direct(llm, prompt_set(), args.max_tokens)
                results.append({"round": rnd, "system": "direct", "concurrency": 1, "load": os.getloadavg()[0], **direct})
                print(f"round {rnd} direct: {direct['tokens_per_s']} tok/s p95 {direct['p95_ms']} ms", file=sys.stderr)
            for c in args.level_list:
                ours, theirs = bodies(prompt_set())
                order = list(servers)
                if (rnd + c) % 2:
                    order.reverse()
                for name in order:
                    url, proc, _ = servers[name]
                    before = batch_counters(url) if name == "llmtools --parallel" else {}
                    cpu0 = proc_cpu(proc.pid)
                    res = run_load(url, theirs if name in THEIRS else ours, c, stream=True)
                    res["server_cpu_s"] = round(proc_cpu(proc.pid) - cpu0, 3)
                    if before:
                        res["batch_profile"] = profile_delta(before, batch_counters(url), res["wall_s"])
                        print(f"  batcher: {res['batch_profile']}", file=sys.stderr)
                    results.append({"round": rnd, "system": name, "concurrency": c, "load": os.getloadavg()[0], **res})
                    print(f"round {rnd} {name} c={c}: {res['tokens_per_s']} tok/s p50 {res['p50_ms']} p95 {res['p95_ms']} "
                          f"ttft {res['ttft_p50_ms']} ms {res['statuses']}; cpu: server {res['server_cpu_s']:.2f}s, "
                          f"clients {res['client_cpu_s']:.2f}s of {res['wall_s']:.2f}s wall", file=sys.stderr)
        llm.close()
    finally:
        for _, proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if not args.no_probe:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from probe_batch import probe

        probe_res = probe(path, args.threads, sorted({1, *args.level_list}), steps=args.probe_steps, runs=args.probe_runs)
        print(f"probe: {probe_res['tps']}", file=sys.stderr)
    report(results, probe_res, args, path)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "probe": probe_res}, indent=1) + "\n")


def report(results: list[dict], probe_res: dict | None, args, path: str) -> None:

    def agg(system: str, c: int) -> dict | None:
        rows = [r for r in results if r["system"] == system and r["concurrency"] == c]
        if not rows:
            return None
        tokens = sum(r["tokens"] for r in rows)
        wall = sum(r["wall_s"] for r in rows)
        med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
        return {"tps": tokens / wall, "p50": med("p50_ms"), "p95": med("p95_ms"), "ttft": med("ttft_p50_ms"),
                "errors": sum(n for r in rows for s, n in r["statuses"].items() if int(s) != 200),
                "cpu": (f"{sum(r.get('server_cpu_s', 0) for r in rows) / wall:.2f} / "
                        f"{sum(r.get('client_cpu_s', 0) for r in rows) / wall:.2f}")}

    loads = [r["load"] for r in results] or [os.getloadavg()[0]]
    direct = agg("direct", 1)

    print(f"\n{Path(path).name}, {args.threads} llama.cpp threads (prompts: {args.batch_threads}), {args.requests} "
          f"streamed /v1/completions x {args.max_tokens} max tokens per system and level, greedy, {args.rounds} round(s); "
          f"load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| clients | system | tokens/s | p50 latency ms | p95 latency ms | TTFT p50 ms | non-200 | vs direct | vs own 1-client | vs llama_cpp.server | vs llama-server | vs probe B=N | CPU cores: server / clients |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    if direct:
        print(f"| 1 | direct llama-cpp-python | {direct['tps']:.1f} | {direct['p50']:.0f} | {direct['p95']:.0f} | "
              f"{direct['ttft']:.0f} | 0 | 1.00x | | | | | |")
    for c in args.level_list:
        theirs = agg("llama_cpp.server", c)
        cpp = agg("llama-server", c)
        for name in SYSTEMS:
            row = agg(name, c)
            if row is None:
                continue
            own = agg(name, args.level_list[0])
            vs_theirs = f"{row['tps'] / theirs['tps']:.2f}x" if theirs and theirs["tps"] else ""
            vs_cpp = f"{row['tps'] / cpp['tps']:.2f}x" if cpp and cpp["tps"] else ""
            vs_direct = f"{row['tps'] / direct['tps']:.2f}x" if direct else ""
            vs_probe = ""
            if probe_res and name == "llmtools --parallel" and c in probe_res["tps"]:
                vs_probe = f"{row['tps'] / statistics.median(probe_res['tps'][c]):.2f}x"
            print(f"| {c} | {name} | {row['tps']:.1f} | {row['p50']:.0f} | {row['p95']:.0f} | {row['ttft']:.0f} | "
                  f"{row['errors']} | {vs_direct} | "
                  f"{row['tps'] / own['tps'] if own['tps'] else float('nan'):.2f}x | {vs_theirs} | {vs_cpp} | {vs_probe} | {row['cpu']} |")
    if probe_res:
        base = statistics.median(probe_res["tps"][1])
        print(f"\nprobe (low-level llama_decode, B sequences per step, greedy, {args.probe_steps} steps; median of runs):\n")
        print("| B | tokens/s | x vs B=1 | seq 0 logits bit-identical to alone |")
        print("|---:|---:|---:|---|")
        for b, values in sorted(probe_res["tps"].items()):
            print(f"| {b} | {statistics.median(values):.1f} | {statistics.median(values) / base:.2f}x | "
                  f"{probe_res['identical'][b]} |")



if __name__ == "__main__":
    main()
