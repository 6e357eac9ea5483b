"""`watch --by`: per-group window metrics, group drift, alert rules over groups, bounded memory."""

from __future__ import annotations

import random
import tracemalloc

import orjson
import pytest

from llmtools.errors import UsageError
from llmtools.ops.watch import Alert, Monitor, WatchConfig, watch

T0 = 1_700_000_040.0
CHANNELS = ("web", "email", "phone")


def events(n, seed=0, shift=None, shift_from=0, wrong=None, start=0):
    """n events over three channels; `shift` multiplies one channel's latency from event
    `shift_from` on; `wrong` makes that channel's answers wrong half the time."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        channel = CHANNELS[i % 3]
        lat = rng.lognormvariate(5.0, 0.2)
        if shift and channel == shift[0] and i >= shift_from:
            lat *= shift[1]
        correct = not (wrong == channel and rng.random() < 0.5)
        out.append({"time": T0 + i * 0.01, "meta": {"channel": channel}, "status": 200, "latency_ms": lat,
                    "label": "a", "prediction": "a" if correct else "b"})
    return out


def run(records, rules=(), **cfg):
    cfg.setdefault("window", "300")
    cfg.setdefault("by", "meta.channel")
    monitor = Monitor(WatchConfig(**cfg), [Alert.from_text(r) for r in rules])
    out = list(watch(iter(records), monitor))
    return out, monitor


def test_per_group_metrics_equal_each_group_alone():
    recs = events(300, wrong="phone")
    out, _ = run(recs, min_group=1)
    by = out[0]["by"]
    assert by["field"] == "meta.channel" and set(by["groups"]) == set(CHANNELS)
    for channel in CHANNELS:
        alone, _ = run([r for r in recs if r["meta"]["channel"] == channel], by=None, window="100")
        group = by["groups"][channel]
        assert group["count"] == alone[0]["count"] == 100
        assert group["p95_latency_ms"] == alone[0]["p95_latency_ms"]
        assert group["accuracy"] == alone[0]["accuracy"]
    d = by["disparity"]["accuracy"]
    assert d["min_group"] == "phone" and d["gap"] == pytest.approx(1 - by["groups"]["phone"]["accuracy"])


def test_a_latency_shift_in_one_group_fires_gap_and_the_others_do_not():
    rules = ["lat: gap(p95_latency_ms) > 100", "err: gap(error_rate) > 0.05", "acc: min(accuracy) < 0.8"]
    recs = events(900) + events(900, shift=("email", 2.0), start=900)
    out, monitor = run(recs, rules)
    windows = [r for r in out if r["type"] == "metrics"]
    alerts = [r for r in out if r["type"] == "alert"]
    assert [a["alert"] for a in alerts] == ["lat"] and alerts[0]["window"] == 4
    assert alerts[0]["values"]["gap(p95_latency_ms)"] > 100
    # the drift of the shifted group against its own reference, and of no other
    last = windows[-1]["by"]["groups"]
    assert last["email"]["drift"]["latency_ms"]["drift"] is True
    assert last["web"]["drift"]["latency_ms"]["drift"] is False
    assert last["phone"]["drift"]["latency_ms"]["drift"] is False
    assert windows[-1]["by"]["disparity"]["p95_latency_ms"]["max_group"] == "email"


def test_min_accuracy_fires_for_the_bad_group():
    out, _ = run(events(600, wrong="phone"), ["min(accuracy) < 0.8", "gap(accuracy) > 0.3"])
    fired = [r["alert"] for r in out if r["type"] == "alert" and r["state"] == "firing"]
    assert fired == ["min(accuracy) < 0.8", "gap(accuracy) > 0.3"]


def test_small_groups_do_not_count_in_gap():
    recs = events(300)
    recs += [{"time": T0 + 5, "meta": {"channel": "fax"}, "status": 500, "latency_ms": 9000.0}] * 5
    out, _ = run(recs, ["gap(error_rate) > 0.05"], window="305", min_group=20)
    assert not [r for r in out if r["type"] == "alert"]
    assert out[0]["by"]["groups"]["fax"]["error_rate"] == 1.0
    assert out[0]["by"]["disparity"]["error_rate"]["groups"] == 3


def test_top_groups_and_other():
    recs = [{"meta": {"channel": f"c{i % 50}"}, "latency_ms": 10.0 + (i % 50)} for i in range(5000)]
    recs += [{"meta": {"channel": "big"}, "latency_ms": 1.0}] * 500
    out, _ = run(recs, window="5500", top_groups=5)
    by = out[0]["by"]
    assert len(by["groups"]) == 5 and "big" in by["groups"]
    assert sum(g["count"] for g in by["groups"].values()) + by["other"]["count"] == 5500
    assert by["distinct_tracked"] == 10  # 2 x --top-groups tracked; the rest went to other


def test_gap_without_by_is_a_usage_error():
    with pytest.raises(UsageError, match="add --by"):
        Monitor(WatchConfig(window="10"), [Alert.from_text("gap(error_rate) > 0.1")])


def _peak(n_groups, n=100_000):
    monitor = Monitor(WatchConfig(window="100000", by="user", drift=False), [Alert.from_text("gap(error_rate) > 0.5")])
    rng = random.Random(0)
    tracemalloc.start()
    for i in range(n):
        monitor.feed({"user": f"u{i % n_groups}", "latency_ms": rng.uniform(1, 1000), "status": 200})
    monitor.finish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.slow
def test_memory_is_flat_with_100k_distinct_groups():
    few, many = _peak(10), _peak(100_000)
    assert many < 2 * few + 2_000_000, (few, many)


def test_command_once_exits_1_when_a_group_gap_fires(cli):
    data = b"".join(orjson.dumps(r) + b"\n" for r in events(900) + events(900, shift=("email", 2.0), start=900))
    res = cli(["watch", "--once", "--window", "300", "--by", "meta.channel", "--alert", "gap(p95_latency_ms) > 100"],
              input=data)
    assert res.exit_code == 1, res.stderr
    assert "gap(p95_latency_ms) > 100" in res.stderr
    ok = cli(["watch", "--once", "--window", "300", "--by", "meta.channel", "--alert", "gap(error_rate) > 0.05"],
             input=data)
    assert ok.exit_code == 0
    assert ok.records()[0]["by"]["groups"]["web"]["count"] == 100
    assert cli(["watch", "--once", "--alert", "gap(error_rate) > 0.05"], input=data).exit_code == 2
