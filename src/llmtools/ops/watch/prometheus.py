"""Expose the monitor's latest window in the Prometheus text format, over a tiny HTTP server.

Gauges describe the last closed window; counters run over the whole stream. The server is a
daemon thread bound to 127.0.0.1 unless told otherwise; it reads a snapshot the monitor thread
replaces whole, so no lock is needed.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from llmtools.errors import UsageError

PREFIX = "llmtools_watch"


def render(snapshot: dict[str, Any]) -> bytes:
    """The exposition text for a snapshot: {"latest": metrics record, "alerts": [...], totals}."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self):  # noqa: ANN202 - prometheus_client's protocol
            yield from _families(snapshot, CounterMetricFamily, GaugeMetricFamily)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def _families(snap: dict[str, Any], Counter: Any, Gauge: Any):
    c = Counter(f"{PREFIX}_events", "Records read since start.")
    c.add_metric([], snap.get("events", 0))
    yield c
    c = Counter(f"{PREFIX}_windows", "Windows closed since start.")
    c.add_metric([], snap.get("windows", 0))
    yield c
    c = Counter(f"{PREFIX}_alerts_fired", "Alert firing transitions since start.")
    c.add_metric([], snap.get("fired", 0))
    yield c

    latest = snap.get("latest") or {}
    scalars = [
        ("count", "Records in the last window."),
        ("errors", "Errors in the last window."),
        ("error_rate", "Share of records in the last window that are errors."),
        ("tokens_per_s", "Completion tokens per second of the last window."),
        ("request_tokens_per_s", "Completion tokens per second of request latency."),
        ("cost", "Cost of the last window's tokens at --price."),
        ("feedback_mean", "Mean feedback score in the last window."),
        ("accuracy", "Share of records whose prediction equals the label."),
    ]
    for key, doc in scalars:
        value = latest.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            g = Gauge(f"{PREFIX}_{key}", doc)
            g.add_metric([], float(value))
            yield g

    fields = latest.get("fields") or {}
    if fields:
        g = Gauge(f"{PREFIX}_field", "Per-field statistics of the last window.", labels=["field", "stat"])
        for name, summary in sorted(fields.items()):
            for stat, value in summary.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    g.add_metric([name, stat], float(value))
        yield g

    drift = latest.get("drift") or {}
    if drift:
        g = Gauge(f"{PREFIX}_drift", "Drift of the last window against the reference.", labels=["field", "stat"])
        for name, entry in sorted(drift.items()):
            for stat in ("psi", "ks", "ks_p", "js", "emb"):
                value = entry.get(stat)
                if isinstance(value, (int, float)):
                    g.add_metric([name, stat], float(value))
        yield g

    alerts = snap.get("alerts") or []
    if alerts:
        g = Gauge(f"{PREFIX}_alert_firing", "1 while an alert rule is firing.", labels=["alert"])
        for name, firing in alerts:
            g.add_metric([name], 1.0 if firing else 0.0)
        yield g


class MetricsServer:
    """`/metrics` on host:port in a daemon thread; `url` tells where (port 0 picks a free one)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], host: str = "127.0.0.1", port: int = 9464):
        get = snapshot

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = render(get())
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # stderr belongs to the dashboard
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise UsageError(f"--prometheus-port {port}: cannot listen on {host}: {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="watch-prometheus", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
