"""The `llmtools serve` command: options in, llmtools.ops.serve out."""

from __future__ import annotations

import os

import click

from llmtools import options
from llmtools.errors import UsageError

KEEP_DEFAULT = "1"


def _split_env(name: str) -> tuple[str, ...]:
    value = os.environ.get(name, "")
    return tuple(k for k in value.replace(",", " ").split() if k)


def _prompting(template_path, examples_path, shots, shots_seed, variant, extract, raw_field):
    from llmtools.ops import serve as ops
    from llmtools.prompts import Examples, PromptTemplate

    if examples_path is not None and template_path is None:
        raise UsageError("--examples needs --template (the template places the examples)")
    if shots is not None and examples_path is None:
        raise UsageError("--shots needs --examples")
    examples = Examples.load(examples_path, shots=shots, seed=shots_seed) if examples_path else None
    template = PromptTemplate.load(template_path, examples=examples, variant=variant) if template_path else None
    try:
        pattern = ops.compile_extract(extract)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ops.Prompting(template=template, variant=variant, extract=pattern, raw_field=raw_field)


def _batch_on_spark(io, engine, job, loader, ref, defaults, batch_size, messages_field, output_field, chat,
                    prompting) -> dict:
    """serve --batch --engine spark: each partition loads the model once and runs ops.serve.batch
    over its records (the function the local --batch runs); returns what the summary shows."""
    import dataclasses
    import time

    from llmtools import engines
    from llmtools.ops import serve as ops

    field = io.field

    def serve_part(records, _reject, _where):
        backend = loader(ref)
        tokens = 0
        try:
            for record in ops.batch(records, backend, defaults=defaults, batch_size=batch_size, field=field,
                                    messages_field=messages_field, output_field=output_field, chat=chat,
                                    prompting=prompting):
                usage = record.get("usage")
                if isinstance(usage, dict):
                    tokens += usage.get("completion_tokens") or 0
                yield record
        finally:
            backend.close()
        return {"tokens": tokens, "model": backend.identity.short}

    engine.check_io(io.inputs, io.output)
    params = {"model": ref, "defaults": dataclasses.asdict(defaults), "chat": chat, "batch_size": batch_size}
    if prompting.template is not None:
        params["template"] = prompting.template.provenance()
    started = time.perf_counter()
    parts = [p for p in engines.run_records(engine, io, job, serve_part, "serve-batch", params) if p]
    elapsed = time.perf_counter() - started
    tokens = sum(p["tokens"] for p in parts)
    return {"model": parts[0]["model"] if parts else ref, "records": job.counts["out"], "completion tokens": tokens,
            "seconds": elapsed, "tokens/s": tokens / elapsed if elapsed else 0.0}


@click.command(context_settings={"max_content_width": 100})
@options.model_options("[MODEL]", api_key="--model-api-key", api_key_env=("OPENAI_API_KEY",), backend=True)
@options.io_options(
    field_default="prompt",
    field_help="Batch mode: the prompt field of a request record (dotted path for nested fields).",
    output_help="Batch mode: write records to FILE (atomically) instead of stdout.",
)
@options.engine_options
@click.option("--batch", "batch_mode", is_flag=True, help="Batch mode: requests from FILES/stdin, responses on stdout, in order.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="Batch mode: requests per generate_batch call (records with the same options are grouped).")
@click.option("--messages-field", default="messages", show_default=True, metavar="PATH",
              help="Batch mode: the chat messages field; used when present, else --field.")
@click.option("--output-field", default="prediction", show_default=True, metavar="PATH",
              help="Batch mode: where the generated text goes (score reads `prediction`).")
@click.option("--chat", is_flag=True, help="Batch mode: send a plain prompt as one user message, through the chat template.")
@click.option("--template", "template_path", metavar="FILE.j2", type=click.Path(dir_okay=False),
              help="Batch mode: render each request from its record with this Jinja2 template (sandboxed; record fields "
                   "are variables, `examples` the few-shot examples). A missing field is a bad record (see --on-error).")
@click.option("--examples", "examples_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Batch mode: JSONL of few-shot examples, given to --template as `examples`.")
@click.option("--shots", type=click.IntRange(0), default=None, metavar="K",
              help="Batch mode: use K examples drawn from --examples with --shots-seed (default: all, in file order).")
@click.option("--shots-seed", type=int, default=0, show_default=True, metavar="S",
              help="Batch mode: seed of the --shots draw (same file, K and S: same examples, same order).")
@click.option("--variant", metavar="NAME", help="Batch mode: stamp each output record with `variant: NAME`, so one "
                                                "JSONL can hold several prompt variants (score --by variant).")
@click.option("--extract", metavar="REGEX", help="Batch mode: the prediction is the reply's first match of REGEX (group "
                                                 "`answer`, else group 1, else the match; '' when none); the whole "
                                                 "reply goes to --raw-field.")
@click.option("--raw-field", default="raw_prediction", show_default=True, metavar="PATH",
              help="Batch mode with --extract: where the whole reply goes.")
@click.option("--manifest", "manifest_path", metavar="FILE",
              help="Batch mode: write the run's provenance manifest (model, inputs, template sha256, example ids) to "
                   "FILE.  [default with -o: OUT.manifest.json]")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True,
              help="max_tokens for a request or record that gives none.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True,
              help="Default temperature (0 = greedy, so answers are reproducible).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="Default nucleus sampling top_p.")
@click.option("--top-k", type=click.IntRange(0), default=0, show_default=True, help="Default top_k (0 = off).")
@click.option("--seed", type=int, default=None, help="Default sampling seed.")
@click.option("--stop", multiple=True, metavar="TEXT", help="Default stop sequence (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Only 127.0.0.1 is reachable by default; use 0.0.0.0 deliberately, with --api-key.")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on (0 = any free port).")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Require `Authorization: Bearer KEY` (repeatable for key rotation). Default: $LLMTOOLS_API_KEY "
                   "(several keys separated by spaces or commas). /health stays open.")
@click.option("--admin-key", "admin_keys", multiple=True, metavar="KEY",
              help="Key for /admin/* (repeatable; default $LLMTOOLS_ADMIN_KEY, else the API keys). With no key at all, /admin is off.")
@click.option("--max-body", default="1M", show_default=True, metavar="SIZE",
              help="Largest request body (bytes, or 512k, 1M); bigger ones get 413.")
@click.option("--max-tokens-cap", type=click.IntRange(1), default=2048, show_default=True,
              help="Largest max_tokens a request may ask for; above it the request gets 400.")
@click.option("--max-concurrency", type=click.IntRange(1, 1024), default=None,
              help="Requests admitted to run at once. A llama.cpp model decodes up to --parallel sequences of them "
                   "together; a torch model batches up to --micro-batch of them; an http backend uses this many "
                   "threads.  [default: --parallel, or 4 with --parallel 0]")
@click.option("--parallel", type=click.IntRange(0, 256), default=8, show_default=True,
              help="llama.cpp: KV slots for continuous batching. Up to N sequences are decoded together, one "
                   "llama_decode per step; a new request joins at the next step, its prompt evaluated in chunks "
                   "so that it does not stall the others. Each slot gets the full --n-ctx (the KV cache holds "
                   "N x n_ctx tokens). 0: one request at a time on one context, as before.")
@click.option("--max-queue", type=click.IntRange(0), default=64, show_default=True,
              help="Requests that may wait beyond --max-concurrency; past that, 429 with Retry-After.")
@click.option("--timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
              help="Seconds a request may take, queue wait included (504 after); also the drain limit on SIGTERM.")
@click.option("--micro-batch", type=click.IntRange(1, 256), default=8, show_default=True,
              help="torch: merge up to N waiting non-streamed requests with equal options into one generate_batch "
                   "call, which runs them to the end together (a request arriving meanwhile waits for the whole "
                   "batch; llama.cpp's --parallel lets it join at the next token instead). 1 turns it off.")
@click.option("--log", "log_path", metavar="FILE", help="Append one JSONL record per request (the input of `llmtools watch`).")
@click.option("--log-content", is_flag=True, help="Also log prompt and response text (off by default: they may be private).")
@click.option("--model-name", metavar="NAME", help="The model id clients send and /v1/models shows (default: the first model's name). "
                                                    "It stays the same across blue/green swaps.")
@click.option("--model-file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read the model reference from FILE (first line); SIGHUP re-reads it and swaps blue/green.")
@click.option("--keep-previous", default=KEEP_DEFAULT, show_default=True, metavar="N|DURATION",
              help="Keep replaced versions loaded for rollback: a count (2) or a time (90s, 10m, 1h). 0 unloads at once.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for inference (default: the backend's choice). For llama.cpp this is also the "
                   "prompt-processing budget unless --batch-threads is given.")
@click.option("--batch-threads", type=click.IntRange(1), default=None,
              help="llama.cpp: CPU threads for prompt processing (default: --threads, else $LLMTOOLS_THREADS or "
                   "$OMP_NUM_THREADS, else all cores, as llama_cpp.server does).")
@click.option("--n-ctx", type=click.IntRange(16), default=None, help="Context length (default: the backend's choice).")
def cli(io, engine, model, batch_mode, batch_size, messages_field, output_field, chat, template_path, examples_path, shots,
        shots_seed, variant, extract, raw_field, manifest_path, max_tokens, temperature, top_p, top_k, seed,
        stop, host, port, api_keys, admin_keys, max_body, max_tokens_cap, max_concurrency, parallel, max_queue, timeout, micro_batch,
        log_path, log_content, model_name, model_file, keep_previous, threads, batch_threads, n_ctx):
    """Serve a model over an OpenAI-compatible API, or in batch.

    MODEL is a Hugging Face directory, a .gguf file, a registry name (default: smollm2) or an
    http(s)://host/v1 endpoint.

    HTTP mode (the default) serves /v1/chat/completions (with SSE streaming), /v1/completions,
    /v1/embeddings (when the model can embed), /v1/models (the active version, its identity and
    provenance), /health (200 ready, 503 loading or draining) and /metrics (Prometheus). It binds
    127.0.0.1 unless --host says otherwise. With --api-key (or $LLMTOOLS_API_KEY) every endpoint
    but /health needs `Authorization: Bearer KEY`. Requests past --max-concurrency running plus
    --max-queue waiting get 429 at once; bodies over --max-body get 413; requests past --timeout
    get 504. Errors use OpenAI's error object. A llama.cpp model decodes up to --parallel
    requests together, one token of each per step (continuous batching): a new request joins at
    the next step, and a seeded request gives the same text alone or among others.

    Blue/green: SIGHUP, or POST /admin/models/load {"model": REF} (needs an admin or API key),
    loads a model beside the active one; it takes traffic only after a health check (a short
    generation) passes. The replaced version stays loaded for --keep-previous, so POST
    /admin/rollback is instant. SIGTERM drains: admitted requests finish, new ones are refused,
    and the process exits 0.

    Batch mode (--batch) reads request records from FILES or stdin: `prompt` (see --field) or
    `messages`, with optional max_tokens, temperature, top_p, top_k, seed and stop. Each record
    comes out in order with `prediction` (see --output-field), `finish_reason`, `usage` and
    `_llmtools.model` / `_llmtools.latency_ms` added, ready for `llmtools score`.

    Prompt experiments: --template FILE.j2 renders each request from its record (Jinja2,
    sandboxed: `{{ question }}`, `{{ meta.channel }}`, `{% for ex in examples %}`); a
    rendering that is a JSON list of {role, content}, or holds <message role="user">...</message>
    blocks, is sent as chat messages, anything else as a plain prompt. --examples with --shots K
    --shots-seed S gives it K few-shot examples, the same ones every run. --variant stamps the
    records; --extract cuts the answer out of a chain-of-thought reply. Records carry
    `_llmtools.prompt` (the template's sha256 and the example ids), and so does the manifest.

    \b
    Examples:
        llmtools serve smollm2 --port 8000 --log requests.jsonl
        llmtools serve runs/v1.q4.gguf --api-key "$KEY" --max-queue 32 --timeout 30
        llmtools serve --model-file current-model.txt --keep-previous 10m &
        echo runs/v2 > current-model.txt && kill -HUP %1      # blue/green swap
        curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}'
        llmtools serve --batch smollm2 < eval.jsonl | llmtools score
        llmtools serve --batch --template 3shot.j2 --examples train.jsonl --shots 3 --variant 3shot < eval.jsonl

    \b
    On Spark (--batch --engine spark), each partition loads the model once on its executor (a
    directory or .gguf every worker reads at the same path, or a registry name installed
    there) or calls an http(s)://.../v1 MODEL (a fleet of `llmtools serve` replicas), and runs
    the same batch code over its records. Windows of --batch-size end at partition ends; with
    greedy decoding (the default) and a backend whose answer does not depend on the rest of its
    batch, the part files hold the local output, apart from `_llmtools.latency_ms` (a timing):
        llmtools serve --batch --engine spark --master spark://head:7077 runs/v1.q4.gguf \\
            'hdfs:///eval/*.jsonl' -o hdfs:///eval/answers --rejects hdfs:///eval/bad-requests

    \b
    Exit codes: 0 drained after SIGTERM (or batch done); 130 SIGINT; 2 bad options or
    the port cannot be bound; 3 a bad batch record (--on-error fail); 4 the model or
    a serving dependency is missing, or the first model failed to load.
    """
    from llmtools.ops import serve as ops

    loader = ops.make_loader(backend=model.backend, api_key=model.api_key, trust_pickle=model.trust_pickle,
                             threads=threads, batch_threads=batch_threads, n_ctx=n_ctx)
    if model.given and model_file:
        raise UsageError("give MODEL or --model-file, not both")
    if engine.spark and not batch_mode:
        raise UsageError("--engine spark runs --batch only (the HTTP server runs on this machine)")
    if batch_mode:
        defaults = ops.Defaults(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                                stop=tuple(stop))
        ref = ops.read_model_file(model_file) if model_file else model.ref
        prompting = _prompting(template_path, examples_path, shots, shots_seed, variant, extract, raw_field)
        job = io.job(validate=ops.validator(io.field, messages_field, defaults, chat, prompting.template))
        if engine.spark:
            if manifest_path is not None:
                raise UsageError("--manifest: with --engine spark the manifest is llmtools-manifest.json in the -o folder")
            stats = _batch_on_spark(io, engine, job, loader, ref, defaults, batch_size, messages_field, output_field,
                                    chat, prompting)
            job.summary(stats, title="batch", records=False)
            return 0
        if manifest_path is None and io.output not in (None, "-"):
            from llmtools.provenance import manifest_path_for

            manifest_path = manifest_path_for(io.output)
        stats = ops.run_batch(job, loader, ref, defaults=defaults, batch_size=batch_size,
                              messages_field=messages_field, output_field=output_field, chat=chat,
                              prompting=prompting, manifest_path=manifest_path)
        job.summary(stats, title="batch", records=False)
        return 0
    for name, value in (("--template", template_path), ("--examples", examples_path), ("--variant", variant),
                        ("--extract", extract), ("--manifest", manifest_path), ("--shots", shots)):
        if value is not None:
            raise UsageError(f"{name} is a batch-mode option (add --batch)")

    if io.inputs != ("-",):
        raise UsageError("FILES are read only in --batch mode; the HTTP server takes requests over HTTP")
    try:
        keep = ops.KeepPolicy.parse(keep_previous)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if max_tokens > max_tokens_cap:
        raise UsageError(f"--max-tokens {max_tokens} is above --max-tokens-cap {max_tokens_cap}")
    config = ops.ServeConfig(
        model_ref=model.ref, model_file=model_file, served_name=model_name, host=host, port=port,
        api_keys=tuple(api_keys) or _split_env("LLMTOOLS_API_KEY"),
        admin_keys=tuple(admin_keys) or _split_env("LLMTOOLS_ADMIN_KEY"),
        max_body=ops.parse_size(max_body), max_queue=max_queue, timeout=timeout, micro_batch=micro_batch,
        max_concurrency=max_concurrency or (parallel or 4), parallel=parallel,
        defaults=ops.Defaults(max_tokens=max_tokens, max_tokens_cap=max_tokens_cap, temperature=temperature, top_p=top_p,
                              top_k=top_k, seed=seed, stop=tuple(stop)),
        keep=keep, log_path=log_path, log_content=log_content, quiet=io.quiet,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys and not io.quiet:
        click.echo(f"llmtools serve: warning: listening on {host} without --api-key: anyone who can reach it can use it",
                   err=True)
    return ops.serve_http(config, loader)
