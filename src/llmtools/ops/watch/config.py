"""What `llmtools watch` computes, and over which windows (`WatchConfig`), and its option parsers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from llmtools.errors import UsageError
from llmtools.ops.watch import drift as wd
from llmtools.ops.watch.sketch import DEFAULT_ALPHA

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str) -> float:
    """'30s', '5m', '1.5h', '250ms', '2d' -> seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d), such as 30s or 5m")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise UsageError(f"bad duration {text!r}: must be more than zero")
    return value


def parse_window(text: str) -> tuple[str, float]:
    """'5m' -> ("time", 300.0); '1000' -> ("count", 1000)."""
    text = str(text).strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise UsageError("--window must be at least 1 record")
        return "count", n
    return "time", parse_duration(text)


def parse_time(value: Any) -> float | None:
    """An ISO-8601 string or epoch seconds (milliseconds when above 1e11) -> epoch seconds."""
    tv = type(value)
    if tv is float or tv is int:
        return value / 1000.0 if value > 1e11 else float(value)
    if tv is str:
        text = value.strip()
        try:
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            dt = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_time(float(text))
            except ValueError:
                return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


def iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts):
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    text = dt.isoformat(timespec="milliseconds" if ts % 1 else "seconds")
    return text.replace("+00:00", "Z")


@dataclass
class WatchConfig:
    window: str = "1m"
    sliding: bool = False
    every: str | None = None  # the slide step of a sliding window (default: window / 5)
    time_field: str = "time"
    status_field: str = "status"
    error_field: str = "error"
    latency_field: str = "latency_ms"
    ttft_field: str = "ttft_ms"
    prompt_tokens_field: str = "prompt_tokens"
    completion_tokens_field: str = "completion_tokens"
    feedback_field: str = "feedback"
    label_field: str = "label"
    prediction_field: str = "prediction"
    model_field: str = "model"
    track: list[str] = field(default_factory=list)  # numeric fields; empty = every top-level number
    ignore: list[str] = field(default_factory=lambda: ["step", "epoch"])
    categorical: list[str] = field(default_factory=lambda: ["model.name", "endpoint"])
    vocab: list[str] = field(default_factory=list)
    embed: list[str] = field(default_factory=list)
    embedder: str | None = None
    embed_sample: int = 64
    price_prompt: float | None = None  # per 1k tokens
    price_completion: float | None = None
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)
    alpha: float = DEFAULT_ALPHA
    drift: bool = True
    psi_bins: int = wd.PSI_BINS
    psi_threshold: float = 0.1
    ks_pvalue: float = 0.05
    ks_max_n: int = 1000
    js_threshold: float = 0.1
    emb_threshold: float = 0.1
    seed: int = 0
    by: str | None = None  # --by: the field whose values are the groups
    top_groups: int = 20  # --top-groups: groups reported per window (twice as many are tracked)
    min_group: int = 20  # --min-group: events a group needs in a window to count in gap()/min()/max()

    def __post_init__(self) -> None:
        if self.top_groups < 1:
            raise UsageError("--top-groups must be at least 1")
        if self.min_group < 1:
            raise UsageError("--min-group must be at least 1")
        self.window_kind, self.window_size = parse_window(self.window)
        if self.every is None:
            if not self.sliding:
                self.pane_size = self.window_size
            elif self.window_kind == "count":
                self.pane_size = max(1, int(self.window_size) // 5)
            else:
                self.pane_size = self.window_size / 5
        else:
            kind, step = parse_window(self.every)
            if kind != self.window_kind:
                raise UsageError("--every must be a duration for a time window and a count for a count window")
            if not self.sliding:
                raise UsageError("--every needs --sliding")
            self.pane_size = step
        ratio = self.window_size / self.pane_size
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise UsageError("--window must be a whole multiple of --every")
        self.panes_per_window = int(round(ratio))
        if self.panes_per_window > 1000:
            raise UsageError("--window / --every is over 1000 panes; use a larger --every")
        for q in self.quantiles:
            if not 0 < q < 1:
                raise UsageError(f"quantile {q} is not between 0 and 1")
        if self.price_prompt is not None and self.price_prompt < 0 or self.price_completion is not None and self.price_completion < 0:
            raise UsageError("--price values must not be negative")
