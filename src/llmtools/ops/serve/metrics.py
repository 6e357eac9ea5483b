"""Prometheus metrics for `llmtools serve`, in a private registry (no global state, so several
servers, or tests, can live in one process)."""

from __future__ import annotations

from typing import Callable

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _BatchTimes:
    """Counters read at scrape time from the continuous batchers' own step timing
    (llama_batching.StepTimes), summed over the loaded model versions."""

    PHASES = ("decode", "prefill", "sample", "emit", "build")

    def __init__(self, times: Callable[[], list]):
        self.times = times

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        seconds = CounterMetricFamily(
            "llmtools_batch_step_seconds",
            "Time the continuous batcher's thread spent per phase: decode (llama_decode of a step's sampled tokens), "
            "prefill (prompt chunks), sample, emit (handing text to the HTTP streams), build (filling the batch).",
            labels=["phase"],
        )
        tokens = CounterMetricFamily("llmtools_batch_tokens", "Tokens the continuous batcher evaluated, by kind.",
                                     labels=["kind"])
        steps = CounterMetricFamily("llmtools_batch_steps", "Continuous-batching steps that decoded tokens.")
        all_times = self.times()
        for phase in self.PHASES:
            seconds.add_metric([phase], sum(getattr(t, phase) for t in all_times))
        tokens.add_metric(["decode"], sum(t.decoded for t in all_times))
        tokens.add_metric(["prompt"], sum(t.prefilled for t in all_times))
        steps.add_metric([], sum(t.decode_steps for t in all_times))
        yield seconds
        yield tokens
        yield steps


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], in_flight: Callable[[], float],
                 batch_times: Callable[[], list] | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llmtools_requests", "Requests answered, by endpoint and HTTP status.", ["endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "llmtools_request_errors", "Requests that failed, by endpoint and error type.", ["endpoint", "type"], registry=r
        )
        self.latency = Histogram(
            "llmtools_request_latency_seconds", "Time from request to last byte.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "llmtools_time_to_first_token_seconds",
            "Time from request to the first generated token (queue wait included).",
            ["endpoint"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("llmtools_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.completion_tokens = Counter("llmtools_completion_tokens", "Completion tokens generated.", ["model"], registry=r)
        self.rejected = Counter("llmtools_requests_rejected", "Requests refused before running, by reason.", ["reason"], registry=r)
        self.swaps = Counter("llmtools_model_swaps", "Model version changes, by kind (load, rollback).", ["kind"], registry=r)
        self.model_info = Gauge(
            "llmtools_model_info", "Loaded model versions (1 = active, 0 = standby).", ["name", "sha256", "version"], registry=r
        )
        self.batch_size = Histogram(
            "llmtools_batch_size",
            "Sequences per model step: per continuous-batching step (llama.cpp --parallel: decoding sequences plus "
            "those whose prompt chunk ran in it), or prompts per micro-batched model call (torch --micro-batch).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        queue = Gauge("llmtools_queue_depth", "Admitted requests waiting for a worker.", registry=r)
        queue.set_function(queue_depth)
        flight = Gauge("llmtools_requests_in_flight", "Admitted requests, waiting or running.", registry=r)
        flight.set_function(in_flight)
        if batch_times is not None:
            r.register(_BatchTimes(batch_times))

    def observe(self, endpoint: str, status: int, latency_s: float, ttft_s: float | None, error: str | None,
                model: str | None, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(endpoint).observe(ttft_s)
        if error:
            self.errors.labels(endpoint, error).inc()
        if model:
            if prompt_tokens:
                self.prompt_tokens.labels(model).inc(prompt_tokens)
            if completion_tokens:
                self.completion_tokens.labels(model).inc(completion_tokens)

    def observe_step(self, sequences: int, tokens: int) -> None:
        self.batch_size.observe(sequences)

    def set_models(self, slots) -> None:
        self.model_info.clear()
        for slot in slots:
            ident = slot.identity
            self.model_info.labels(ident.name, ident.sha256 or "", str(slot.version)).set(1 if slot.state == "active" else 0)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
