"""The alert rule language (parsed, never eval'd) and the firing/resolving state machine."""

from __future__ import annotations

import pytest

from llmtools.errors import UsageError
from llmtools.ops.watch import Monitor, WatchConfig
from llmtools.ops.watch.alerts import Alert, evaluate, parse


def _eval(text, metrics):
    _, ast, _ = parse(text)
    return evaluate(ast, lambda node: metrics.get(node[1] if node[0] == "metric" else f"{node[1]}({node[2]})"))


@pytest.mark.parametrize(
    "text, metrics, expected",
    [
        ("p95_latency_ms > 800", {"p95_latency_ms": 801}, True),
        ("p95_latency_ms > 800", {"p95_latency_ms": 800}, False),
        ("error_rate >= 0.05 and count > 10", {"error_rate": 0.05, "count": 11}, True),
        ("error_rate >= 0.05 and count > 10", {"error_rate": 0.05, "count": 10}, False),
        ("not (a < 1 or b < 1)", {"a": 2, "b": 3}, True),
        ("a * 2 + 1 == 7 - b / 2", {"a": 2, "b": 4}, True),
        ("a * 2 + 1 == 7 - b / 2", {"a": 2, "b": 2}, False),
        ("-a < -1", {"a": 2}, True),
        ("psi(prompt_tokens) > 0.2", {"psi(prompt_tokens)": 0.3}, True),
        ("js(model.name) > 0.1 or ks_p(latency_ms) < 0.05", {"js(model.name)": 0.0, "ks_p(latency_ms)": 0.01}, True),
        ("missing > 0", {}, False),  # no data never fires
        ("missing < 0", {}, False),
        ("a / 0 > 1", {"a": 5}, False),  # division by zero is no value, not a crash
    ],
)
def test_expressions(text, metrics, expected):
    assert _eval(text, metrics) is expected


@pytest.mark.parametrize(
    "text",
    ["", "p95 >", "__import__('os').system('x') > 0", "open(x) > 1", "a > 1 for", "a > 1 for soon",
     "quantile(latency_ms) > 1", "a > 1 extra", "a ; b", "(a > 1"],
)
def test_bad_rules_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse(text)


def test_for_clauses_and_names():
    assert parse("p95_latency_ms > 800 for 2m")[2] == ("seconds", 120.0)
    assert parse("error_rate > 0.1 for 3 windows")[2] == ("windows", 3)
    assert parse("error_rate > 0.1 for 1 window")[2] == ("windows", 1)
    name, _, hold = parse("slow: p95_latency_ms > 800")
    assert name == "slow" and hold is None


def _alert_records(rule, latencies_per_minute, window="1m"):
    """Feed one minute of records per entry; return (state transitions, alert records)."""
    mon = Monitor(WatchConfig(window=window, drift=False), [Alert.from_text(rule)])
    out = []
    for minute, latency in enumerate(latencies_per_minute):
        for i in range(4):
            out += mon.feed({"time": 600.0 + minute * 60 + i * 10, "latency_ms": latency}) or []
    out += mon.finish()
    return [r for r in out if r["type"] == "alert"]


def test_alert_fires_and_resolves_without_for():
    alerts = _alert_records("p95_latency_ms > 800", [100, 900, 900, 100, 100])
    assert [(a["state"], a["window"]) for a in alerts] == [("firing", 2), ("resolved", 4)]
    assert alerts[0]["values"]["p95_latency_ms"] == pytest.approx(900, rel=0.01)
    assert alerts[0]["start"] == "1970-01-01T00:11:00Z"


def test_for_duration_suppresses_a_short_spike_and_fires_on_a_long_one():
    # One bad minute is not enough for `for 2m`; two in a row are.
    assert _alert_records("p95_latency_ms > 800 for 2m", [100, 900, 100, 100]) == []
    alerts = _alert_records("p95_latency_ms > 800 for 2m", [100, 900, 900, 900, 100])
    assert [(a["state"], a["window"]) for a in alerts] == [("firing", 3), ("resolved", 5)]
    assert alerts[0]["since"] == "1970-01-01T00:11:00Z" and alerts[0]["windows_true"] == 2
    alerts = _alert_records("p95_latency_ms > 800 for 3 windows", [900, 900, 100, 900, 900, 900])
    assert [(a["state"], a["window"]) for a in alerts] == [("firing", 6)]


def test_alert_on_drift_function_and_field_quantile():
    mon = Monitor(
        WatchConfig(window="100"),
        [Alert.from_text("psi(prompt_tokens) > 0.2"), Alert.from_text("p50(prompt_tokens) > 55")],
    )
    out = []
    for i in range(300):
        out += mon.feed({"prompt_tokens": (i % 20) + (50 if i >= 200 else 0)}) or []
    out += mon.finish()
    alerts = [r for r in out if r["type"] == "alert"]
    assert {(a["alert"], a["window"]) for a in alerts} == {("psi(prompt_tokens) > 0.2", 3), ("p50(prompt_tokens) > 55", 3)}
    metrics = [r for r in out if r["type"] == "metrics"]
    assert metrics[0]["drift"] is None and metrics[0]["reference"] is True
    assert metrics[1]["drift"]["prompt_tokens"]["psi"] == 0.0
    assert metrics[2]["drift"]["prompt_tokens"]["drift"] is True
    assert metrics[2]["drifted_fields"] == ["prompt_tokens"]


class _LetterEmbedder:
    """A stand-in sentence encoder: normalised letter counts (deterministic, instant)."""

    def embed(self, texts):
        out = []
        for text in texts:
            vec = [text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"]
            norm = sum(v * v for v in vec) ** 0.5 or 1.0
            out.append([v / norm for v in vec])
        return out


def test_embedding_drift_plumbing_with_a_stub_encoder():
    mon = Monitor(WatchConfig(window="20", embed_sample=8), [Alert.from_text("emb(prompt) > 0.2")])
    mon._embedder = _LetterEmbedder()
    out = []
    for i in range(40):
        out += mon.feed({"prompt": "aaaa bbbb"}) or []
    for i in range(20):
        out += mon.feed({"prompt": "zzzz yyyy"}) or []
    m = [r for r in out if r["type"] == "metrics"]
    assert m[1]["drift"]["prompt"]["emb"] == pytest.approx(0.0, abs=1e-12)
    assert m[2]["drift"]["prompt"]["emb"] == pytest.approx(1.0) and m[2]["drift"]["prompt"]["emb_drift"] is True
    assert [r["state"] for r in out if r["type"] == "alert"] == ["firing"]


@pytest.mark.slow
def test_embedding_drift_with_the_offline_model(cli):
    import json

    pytest.importorskip("torch")
    travel = ["what is the capital of france", "how tall is the eiffel tower", "best time to visit paris"]
    code = ["fix this python traceback", "write a rust function to sort", "segfault in my C code"]
    lines = [json.dumps({"prompt": travel[i % 3]}) for i in range(60)] + [json.dumps({"prompt": code[i % 3]}) for i in range(30)]
    res = cli(["watch", "--window", "30", "--embed", "prompt", "--embed-sample", "30"], input="\n".join(lines))
    assert res.exit_code == 0, res.stderr
    m = res.records()
    assert m[1]["drift"]["prompt"]["emb"] < 0.05  # same texts: the means coincide
    assert m[2]["drift"]["prompt"]["emb"] > 0.3 and "prompt" in m[2]["drifted_fields"]
