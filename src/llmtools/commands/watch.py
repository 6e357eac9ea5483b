"""`llmtools watch`: wires options to llmtools.ops.watch (metrics, drift, alerts over a stream)."""

from __future__ import annotations

from typing import Any

import click

from llmtools import console, errors, options
from llmtools.io import read_jsonl


def _parse_price(price: str | None, prompt_price: float | None, completion_price: float | None) -> tuple[Any, Any]:
    if price is None:
        return prompt_price, completion_price
    parts = [p.strip() for p in price.split(",")]
    if len(parts) != 2:
        raise errors.UsageError("--price takes PROMPT,COMPLETION per 1k tokens, such as --price 0.5,1.5")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise errors.UsageError(f"--price {price!r}: not two numbers") from None


@click.command(context_settings={"max_content_width": 100})
@options.io_options(field=False, output_help="Write records to FILE atomically (it appears when watch ends) instead of stdout.")
@click.option("--follow", "follow_path", metavar="FILE", help="Keep reading FILE as it grows, like `tail -F` (survives rotation and truncation).")
@click.option("--poll", default="250ms", show_default=True, metavar="DURATION", help="How often --follow checks FILE for new lines.")
@click.option("--from-end", is_flag=True, help="With --follow, skip what FILE already holds.")
@click.option("--window", default="1m", show_default=True, metavar="SIZE", help="Window: a duration (30s, 5m, 1h; by the records' time field) or a record count (1000).")
@click.option("--sliding/--tumbling", default=False, show_default=True, help="Tumbling windows do not overlap; a sliding window advances every --every.")
@click.option("--every", metavar="SIZE", help="Step of a sliding window (default: a fifth of --window).")
@click.option("--reference", metavar="FILE", help="Events to compare against for drift (default: the first full window).")
@click.option("--no-drift", is_flag=True, help="Do not compute drift.")
@click.option("--alert", "alerts", multiple=True, metavar="RULE", help="Alert rule such as 'p95_latency_ms > 800 for 2m' (repeatable).")
@click.option("--once", is_flag=True, help="Read to the end, evaluate, and exit 1 if any alert fired (cron and CI gates).")
@click.option("--price", metavar="P,C", help="Price per 1k prompt and completion tokens, for the cost metric (e.g. 0.5,1.5).")
@click.option("--prompt-price", type=float, metavar="PRICE", help="Price per 1k prompt tokens (instead of --price).")
@click.option("--completion-price", type=float, metavar="PRICE", help="Price per 1k completion tokens (instead of --price).")
@click.option("--time-field", default="time", show_default=True, metavar="PATH", help="Event time: ISO-8601 or epoch seconds (milliseconds above 1e11). Records without it get the time they were read.")
@click.option("--status-field", default="status", show_default=True, metavar="PATH", help="HTTP status; >= 400 counts as an error.")
@click.option("--error-field", default="error", show_default=True, metavar="PATH", help="A non-empty value here counts as an error.")
@click.option("--latency-field", default="latency_ms", show_default=True, metavar="PATH", help="Request latency, for p50/p95/p99_latency_ms.")
@click.option("--ttft-field", default="ttft_ms", show_default=True, metavar="PATH", help="Time to first token, for p50/p95/p99_ttft_ms.")
@click.option("--prompt-tokens-field", default="prompt_tokens", show_default=True, metavar="PATH", help="Prompt token count (cost).")
@click.option("--completion-tokens-field", default="completion_tokens", show_default=True, metavar="PATH", help="Completion token count (tokens_per_s, cost).")
@click.option("--feedback-field", default="feedback", show_default=True, metavar="PATH", help="Feedback: a number, true/false, up/down, or {\"score\": x}.")
@click.option("--label-field", default="label", show_default=True, metavar="PATH", help="Expected answer, for accuracy.")
@click.option("--prediction-field", default="prediction", show_default=True, metavar="PATH", help="Model answer, for accuracy.")
@click.option("--model-field", default="model", show_default=True, metavar="PATH", help="Model identity, copied into metric and alert records.")
@click.option("--track", multiple=True, metavar="PATH", help="Numeric field to track (repeatable). Default: every top-level number, plus the fields above.")
@click.option("--ignore", multiple=True, metavar="FIELD", help="Top-level numeric field not to track automatically (repeatable; default: step, epoch).")
@click.option("--categorical", multiple=True, metavar="PATH", help="Categorical field for counts and JS drift (repeatable; default: model.name, endpoint).")
@click.option("--vocab", multiple=True, metavar="PATH", help="Text field whose word distribution is compared by JS drift (repeatable).")
@click.option("--embed", multiple=True, metavar="PATH", help="Text field for embedding drift with an offline sentence model (repeatable).")
@click.option("--embedder", metavar="MODEL", help="Sentence embedding model directory or package (default: all-MiniLM-L6-v2).")
@click.option("--embed-sample", default=64, show_default=True, type=click.IntRange(2, 100000), help="Texts sampled per window for embedding drift.")
@click.option("--psi-threshold", default=0.1, show_default=True, type=float, help="PSI at or above this flags numeric drift (large samples).")
@click.option("--ks-pvalue", default=0.05, show_default=True, type=float, help="KS p-value below this flags numeric drift (samples of at most 1000).")
@click.option("--js-threshold", default=0.1, show_default=True, type=float, help="Jensen-Shannon distance at or above this flags categorical drift.")
@click.option("--emb-threshold", default=0.1, show_default=True, type=float, help="Cosine distance of mean embeddings at or above this flags embedding drift.")
@click.option("--by", "by", metavar="PATH", help="Also report each window per group of this field (channel, language, model.name): count, error_rate, latency and TTFT quantiles, accuracy, feedback, and latency drift against the group's reference; alert rules get gap(M), ratio(M), min(M), max(M) over the groups.")
@click.option("--top-groups", type=click.IntRange(1, 100000), default=20, show_default=True, metavar="K", help="With --by: groups reported per window, by count; the rest are merged into `other`. Memory is bounded by 2K groups per pane however many values the field has.")
@click.option("--min-group", type=click.IntRange(1), default=20, show_default=True, metavar="N", help="With --by: events a group needs in a window to count in gap(), ratio(), min() and max().")
@click.option("--prometheus-port", type=click.IntRange(0, 65535), metavar="PORT", help="Serve the latest metrics at http://HOST:PORT/metrics for Prometheus (0: any free port).")
@click.option("--prometheus-host", default="127.0.0.1", show_default=True, metavar="HOST", help="Address the Prometheus endpoint binds to.")
@click.option("--dashboard/--no-dashboard", default=None, help="Live table on stderr (default: when stderr is a terminal and not -q).")
def cli(io: options.IOConfig, follow_path: str | None, poll: str, from_end: bool, window: str, sliding: bool,
        every: str | None, reference: str | None, no_drift: bool, alerts: tuple[str, ...], once: bool,
        price: str | None, prompt_price: float | None, completion_price: float | None, time_field: str,
        status_field: str, error_field: str, latency_field: str, ttft_field: str, prompt_tokens_field: str,
        completion_tokens_field: str, feedback_field: str, label_field: str, prediction_field: str,
        model_field: str, track: tuple[str, ...], ignore: tuple[str, ...], categorical: tuple[str, ...],
        vocab: tuple[str, ...], embed: tuple[str, ...], embedder: str | None, embed_sample: int,
        psi_threshold: float, ks_pvalue: float, js_threshold: float, emb_threshold: float,
        by: str | None, top_groups: int, min_group: int,
        prometheus_port: int | None, prometheus_host: str, dashboard: bool | None) -> int:
    """Monitor a stream of events: metrics, drift and alerts.
    
    Reads JSONL events (serve's request log, finetune's metric stream, any records) from FILES, stdin
    or `--follow FILE`, and writes one `{"type": "metrics", ...}` record per window to stdout, plus
    `{"type": "alert", "state": "firing"|"resolved", ...}` records when an --alert rule changes.
    
    Per window: count, errors and error_rate (status >= 400 or a non-empty error field), p50/p95/p99
    of latency and TTFT, tokens_per_s, cost (with --price), feedback_mean, accuracy (where label and
    prediction fields exist), and count/mean/min/max/p50/p95/p99 of every numeric field. Quantiles
    come from a log-bucket sketch (1% relative error), so memory stays flat for any stream length.
    
    Drift against --reference FILE (or, without it, the first full window): PSI and the KS statistic
    (with its p-value) for numeric fields, the Jensen-Shannon distance for categorical fields
    (model.name, endpoint, --categorical) and --vocab text fields, and the cosine distance of mean
    sentence embeddings for --embed text fields. A field is flagged as drifted, as Evidently does it,
    by KS p < 0.05 when either sample has at most 1000 values, else by PSI >= 0.1; categorical and
    vocabulary fields by JS >= 0.1; embeddings by cosine distance >= 0.1.
    
    Alert rules (--alert, repeatable) compare window metrics: names from the metric record
    (error_rate, p95_latency_ms, count, tokens_per_s, cost, ...), and functions psi(F), ks(F),
    ks_p(F), js(F), emb(F), p50(F), p95(F), p99(F), quantile(F, Q), mean(F), min(F), max(F),
    count(F), sum(F); with and, or, not, + - * / and parentheses. With --by FIELD, each window
    record also holds `by`: the top --top-groups groups' metrics, `other`, and each metric's
    disparity (min, max, gap, ratio over groups of at least --min-group events), which rules
    read as gap(M), ratio(M), min(M) and max(M) for a group metric M: 'gap(error_rate) > 0.05',
    'min(accuracy) < 0.8', 'gap(p95_latency_ms) > 300 for 2 windows'. `for 2m` or `for 3 windows` makes
    a rule wait until it has held that long, to stop flapping. `NAME: RULE` names a rule.
    
    \b
    Examples:
      llmtools watch --follow requests.jsonl --window 5m --alert 'p95_latency_ms > 800 for 10m'
      llmtools watch --once --reference baseline.jsonl --alert 'psi(prompt_tokens) > 0.2' < today.jsonl
      llmtools watch --window 100 --alert 'mean(loss) > 5' < train-log.jsonl | grep '"alert"'
      llmtools watch --follow requests.jsonl --prometheus-port 9464 > metrics.jsonl
      llmtools watch --once --by meta.channel --window 1h --alert 'gap(error_rate) > 0.05' < requests.jsonl
    
    \b
    Exit codes: 0 done (alerts may have fired, except with --once); 1 with --once when any
    alert fired; 2 bad option or rule; 3 bad input line (see --on-error).
    """
    from llmtools.ops import watch as ops

    if follow_path and io.inputs != ("-",):
        raise errors.UsageError("give either FILES or --follow FILE, not both")
    if from_end and not follow_path:
        raise errors.UsageError("--from-end needs --follow")
    p_price, c_price = _parse_price(price, prompt_price, completion_price)
    rules = [ops.Alert.from_text(text) for text in alerts]
    cfg = ops.WatchConfig(
        window=window, sliding=sliding, every=every, time_field=time_field, status_field=status_field,
        error_field=error_field, latency_field=latency_field, ttft_field=ttft_field,
        prompt_tokens_field=prompt_tokens_field, completion_tokens_field=completion_tokens_field,
        feedback_field=feedback_field, label_field=label_field, prediction_field=prediction_field,
        model_field=model_field, track=list(track), ignore=list(ignore) if ignore else ["step", "epoch"],
        categorical=list(categorical) if categorical else ["model.name", "endpoint"], vocab=list(vocab),
        embed=list(embed), embedder=embedder, embed_sample=embed_sample, price_prompt=p_price,
        price_completion=c_price, drift=not no_drift, psi_threshold=psi_threshold, ks_pvalue=ks_pvalue,
        js_threshold=js_threshold, emb_threshold=emb_threshold, by=by, top_groups=top_groups, min_group=min_group,
    )
    poll_s = ops.parse_duration(poll)
    if cfg.embed:
        ops.check_embedder(cfg.embedder)
    lines = ops.follow_lines(follow_path, poll=poll_s, from_end=from_end, once=once) if follow_path else None
    # Windows are rare, so each is flushed at once (a live pipe sees it); watch never writes its
    # input records back, so where each came from is not kept.
    job = io.job(inputs=(follow_path,) if follow_path else io.inputs, field=None, unbuffered=True, locate=False,
                 lines=lines)
    monitor = ops.Monitor(cfg, rules, reference=read_jsonl(reference) if reference else None, on_bad=job.bad)
    show_dash = dashboard if dashboard is not None else (console.stderr_is_tty() and not io.quiet)
    prometheus = (prometheus_host, prometheus_port) if prometheus_port is not None else None
    if not ops.run(job, monitor, prometheus=prometheus, dashboard=show_dash):
        job.summary({"events": monitor.seq, "windows": monitor.windows, "alerts fired": monitor.fired},
                    title="done", records=False)
    if once and monitor.fired:
        fired = sorted({a.name or a.text for a in monitor.alerts if a.times_fired})
        raise errors.GateFailed(f"{monitor.fired} alert(s) fired: {'; '.join(fired)}")
    return 0
