"""Running `llmtools watch`: the input (files, or `--follow FILE` until SIGTERM), the monitor, and
what shows it while it runs (a Prometheus endpoint, a live dashboard on stderr).

    lines = follow_lines("requests.jsonl", poll=0.25)       # raw lines; None when idle
    run(Job(inputs=["requests.jsonl"], lines=lines, ...), Monitor(cfg, rules))
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Iterator

from llmtools import errors
from llmtools.io import Job
from llmtools.ops.watch.follow import follow
from llmtools.ops.watch.monitor import Monitor, watch


def follow_lines(path: str, *, poll: float, from_end: bool = False, once: bool = False) -> Iterator[bytes | None]:
    """The lines of FILE as it grows, like `tail -F`, with a None whenever nothing is new, until
    SIGTERM (systemd, docker stop) ends it cleanly. With `once`: what FILE holds now, up to the
    first quiet moment, and no None."""
    stop = _stop_on_sigterm()  # now, before anything is read
    if once:
        return _until_quiet(path, poll, from_end)
    return follow(path, poll=poll, from_end=from_end, stop=stop.is_set)


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        except ValueError:
            pass
    return stop


def _until_quiet(path: str, poll: float, from_end: bool) -> Iterator[bytes]:
    quiet = threading.Event()
    for raw in follow(path, poll=poll, from_end=from_end, stop=quiet.is_set):
        if raw is None:
            quiet.set()
            continue
        yield raw


def check_embedder(name: str | None) -> None:
    """Fail before reading anything (exit 4) when the embedding stack or the model is missing."""
    from llmtools.models.embedder import resolve_embedder

    errors.require("torch", "embed", purpose="embedding drift")
    resolve_embedder(name)


def run(job: Job, monitor: Monitor, *, prometheus: tuple[str, int] | None = None, dashboard: bool = False) -> bool:
    """Feed `job`'s records through `monitor`, writing each window's records to `job` as it
    closes; serve the latest metrics at http://HOST:PORT/metrics with `prometheus` = (HOST,
    PORT), and show a live table on stderr with `dashboard`. Ctrl-C ends the run after the open
    window is written, then is raised again. Returns whether the dashboard was shown."""
    server = _prometheus(job, monitor, *prometheus) if prometheus is not None else None
    dash = None
    interrupted = False
    with job:
        write = job.write
        try:
            if dashboard:
                from llmtools.ops.watch.dashboard import Dashboard

                dash = Dashboard()
            show = (lambda: dash.update(monitor.latest, monitor.seq, _alert_states(monitor))) if dash else None
            for rec in watch(job.records(), monitor, on_idle=show):
                write(rec)
                if dash is not None:
                    dash.update(monitor.latest, monitor.seq, _alert_states(monitor), force=True)
        except KeyboardInterrupt:
            interrupted = True
            for rec in monitor.finish():  # the open window
                write(rec)
        if dash is not None:
            dash.close(monitor.latest, monitor.seq, _alert_states(monitor))
        if server is not None:
            server.close()
    if interrupted:
        raise KeyboardInterrupt
    return dash is not None


def _alert_states(monitor: Monitor) -> list[tuple[str, str]]:
    return [(a.name or a.text, a.state) for a in monitor.alerts]


def _prometheus(job: Job, monitor: Monitor, host: str, port: int) -> Any:
    from llmtools.ops.watch.prometheus import MetricsServer

    server = MetricsServer(
        lambda: {"events": monitor.seq, "windows": monitor.windows, "fired": monitor.fired, "latest": monitor.latest,
                 "alerts": [(n, s == "firing") for n, s in _alert_states(monitor)]},
        host=host, port=port,
    )
    job.warn(f"Prometheus metrics at {server.url}")
    return server
