"""The live dashboard: a rich table on stderr, redrawn in place (stdout keeps the records)."""

from __future__ import annotations

import time
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Dashboard:
    """Shows the last closed window, the open window's running count, and alert states."""

    def __init__(self, console: Any = None, min_interval: float = 0.25):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self.min_interval = min_interval
        self._last = 0.0
        self.live = Live(self._render(None, 0, []), console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def update(self, latest: dict | None, events: int, alerts: list[tuple[str, str]], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self.live.update(self._render(latest, events, alerts), refresh=True)

    def _render(self, latest: dict | None, events: int, alerts: list[tuple[str, str]]) -> Any:
        from rich.table import Table

        table = Table(title=f"llmtools watch: {events} events", title_justify="left", show_header=True)
        table.add_column("metric", style="bold")
        table.add_column("last window", justify="right")
        if latest is None:
            table.add_row("window", "(waiting for the first window to close)")
        else:
            span = f"{latest.get('start') or ''} .. {latest.get('end') or ''}".strip(" .")
            table.add_row("window", f"#{latest['window']} {span}{' (partial)' if latest.get('partial') else ''}")
            for key in ("count", "error_rate", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms",
                        "p50_ttft_ms", "p95_ttft_ms", "tokens_per_s", "cost", "feedback_mean", "accuracy"):
                if key in latest and latest[key] is not None:
                    table.add_row(key, _fmt(latest[key]))
            for name, summary in (latest.get("fields") or {}).items():
                if name in ("latency_ms", "ttft_ms"):
                    continue
                table.add_row(f"{name} mean / p95", f"{_fmt(summary.get('mean'))} / {_fmt(summary.get('p95'))}")
            for name, entry in (latest.get("drift") or {}).items():
                stats = ", ".join(f"{k}={_fmt(entry[k])}" for k in ("psi", "ks", "js", "emb") if k in entry)
                flag = " [red]DRIFT[/red]" if entry.get("drift") or entry.get("emb_drift") else ""
                table.add_row(f"drift {name}", stats + flag)
        for name, state in alerts:
            color = {"firing": "red", "pending": "yellow"}.get(state, "green")
            table.add_row(f"alert {name}", f"[{color}]{state}[/{color}]")
        return table

    def close(self, latest: dict | None, events: int, alerts: list[tuple[str, str]]) -> None:
        self.live.update(self._render(latest, events, alerts), refresh=True)
        self.live.stop()
