"""watch: metrics, drift and alerts over a stream of events, window by window.

    for rec in watch(records, Monitor(WatchConfig(window="5m"), [Alert.from_text("error_rate > 0.1")])): ...

The modules: config (WatchConfig: windows, fields, thresholds; duration and time parsing),
monitor (panes, windows, the metric and alert records), sketch (bounded-memory quantiles),
drift (PSI, KS, Jensen-Shannon, cosine), groups (--by: per-group aggregates in bounded memory),
alerts (the rule language), follow (`tail -F`), live
(running the command: input, signals, Prometheus, dashboard), prometheus and dashboard.
"""

from __future__ import annotations

from llmtools.ops.watch.alerts import Alert
from llmtools.ops.watch.config import WatchConfig, iso, parse_duration, parse_time, parse_window
from llmtools.ops.watch.live import check_embedder, follow_lines, run
from llmtools.ops.watch.monitor import Monitor, watch
from llmtools.ops.watch.sketch import Sketch

__all__ = [
    "Alert", "Monitor", "Sketch", "WatchConfig", "check_embedder", "follow_lines", "iso", "parse_duration", "parse_time",
    "parse_window", "run", "watch",
]
