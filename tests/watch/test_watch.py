"""`llmtools watch` end to end: metrics, windows, drift, --once gates and bad input."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import orjson
import pytest

T0 = 1_700_000_040.0  # on a minute boundary


def serve_log(n, seed=0, start=T0, step=0.1, latency=(5.5, 0.4), error_every=0, model="smollm2", iso=False, **extra):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lat = rng.lognormvariate(*latency)
        t = start + i * step
        rec = {
            "time": t,
            "request_id": f"r{i}",
            "model": {"name": model, "format": "gguf", "sha256": "ab12"},
            "endpoint": "/v1/chat/completions",
            "status": 500 if error_every and i % error_every == 0 else 200,
            "latency_ms": lat,
            "ttft_ms": lat / 5,
            "prompt_tokens": rng.randint(10, 200),
            "completion_tokens": rng.randint(5, 100),
        }
        if iso:
            from datetime import datetime, timezone

            rec["time"] = datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        rec.update(extra)
        out.append(rec)
    return out


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def metrics(result):
    return [r for r in result.records() if r["type"] == "metrics"]


def test_help_summary_matches_registry(cli):
    from llmtools.cli import COMMANDS
    from llmtools.commands.watch import cli as command

    assert command.help.splitlines()[0] == COMMANDS["watch"]
    assert command.callback.__doc__.splitlines()[0] == COMMANDS["watch"]
    res = cli(["watch", "--help"])
    assert res.exit_code == 0 and "--follow" in res.stdout and "--prometheus-port" in res.stdout


def test_help_does_not_import_heavy_stacks():
    code = (
        "import sys; from llmtools.cli import main\n"
        "try: main(['watch', '--help'])\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'scipy', 'transformers', 'prometheus_client') if m in sys.modules]\n"
        "sys.stderr.write(repr(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip() == "[]"


def test_window_metrics_match_exact_values(cli):
    recs = serve_log(1200, error_every=20)  # 10 records/s: 600 per minute
    res = cli(["watch", "--window", "1m", "--price", "0.5,1.5", "--no-drift"], input=jsonl(recs))
    assert res.exit_code == 0, res.stderr
    out = metrics(res)
    assert [m["count"] for m in out] == [600, 600]
    assert all("partial" not in m for m in out[:1])
    first, chunk = out[0], recs[:600]
    assert first["start"] == "2023-11-14T22:14:00Z" and first["end"] == "2023-11-14T22:15:00Z"
    assert first["errors"] == 30 and first["error_rate"] == pytest.approx(0.05)
    lat = sorted(r["latency_ms"] for r in chunk)
    for q, key in ((0.5, "p50_latency_ms"), (0.95, "p95_latency_ms"), (0.99, "p99_latency_ms")):
        exact = lat[math.floor(q * (len(lat) - 1))]
        assert abs(first[key] - exact) / exact <= 0.01
    ttft = sorted(r["ttft_ms"] for r in chunk)
    assert first["p95_ttft_ms"] == pytest.approx(ttft[math.floor(0.95 * 599)], rel=0.01)
    p_sum = sum(r["prompt_tokens"] for r in chunk)
    c_sum = sum(r["completion_tokens"] for r in chunk)
    assert first["prompt_tokens"] == p_sum and first["completion_tokens"] == c_sum
    assert first["cost"] == pytest.approx((p_sum * 0.5 + c_sum * 1.5) / 1000)
    assert first["tokens_per_s"] == pytest.approx(c_sum / 60)
    assert first["request_tokens_per_s"] == pytest.approx(c_sum / (sum(r["latency_ms"] for r in chunk) / 1000))
    assert first["fields"]["prompt_tokens"]["mean"] == pytest.approx(p_sum / 600)
    assert first["status"] == {"200": 570, "500": 30}
    assert first["model"]["name"] == "smollm2"
    assert "status" not in first["fields"] and "time" not in first["fields"]


def test_iso_times_feedback_and_accuracy(cli):
    recs = serve_log(10, iso=True, step=1.0)
    for i, r in enumerate(recs):
        r["feedback"] = [1, 0, "up", "down", {"score": 0.5}, True, 4, None, "meh", 0][i]
        r["label"], r["prediction"] = "Paris", ("paris " if i % 2 else "Rome")
    res = cli(["watch", "--window", "1h"], input=jsonl(recs))
    (m,) = metrics(res)
    assert m["count"] == 10 and m["partial"] is True
    assert m["feedback_count"] == 8 and m["feedback_mean"] == pytest.approx((1 + 0 + 1 + 0 + 0.5 + 1 + 4 + 0) / 8)
    assert m["accuracy"] == 0.5 and m["accuracy_count"] == 10
    assert m["start"] == "2023-11-14T22:00:00Z"


def test_count_windows_and_sliding_windows(cli):
    recs = [{"i": i, "latency_ms": float(i)} for i in range(1, 101)]
    res = cli(["watch", "--window", "40", "--no-drift"], input=jsonl(recs))
    out = metrics(res)
    assert [(m["first_record"], m["last_record"], m.get("partial", False)) for m in out] == [
        (1, 40, False), (41, 80, False), (81, 100, True)]
    res = cli(["watch", "--window", "40", "--sliding", "--every", "20", "--no-drift"], input=jsonl(recs))
    out = metrics(res)
    assert [(m["first_record"], m["last_record"], m["count"]) for m in out] == [
        (1, 20, 20), (1, 40, 40), (21, 60, 40), (41, 80, 40), (61, 100, 40)]
    assert out[2]["fields"]["latency_ms"]["min"] == 21 and out[2]["fields"]["latency_ms"]["max"] == 60
    res = cli(["watch", "--window", "40", "--every", "15", "--sliding"], input=jsonl(recs))
    assert res.exit_code == 2 and "multiple" in res.stderr


def test_sliding_time_windows(cli):
    recs = serve_log(1800, step=0.1)  # three minutes
    res = cli(["watch", "--window", "2m", "--sliding", "--every", "1m", "--no-drift"], input=jsonl(recs))
    out = metrics(res)
    assert [(m["start"][11:16], m["end"][11:16], m["count"]) for m in out] == [
        ("22:13", "22:15", 600), ("22:14", "22:16", 1200), ("22:15", "22:17", 1200)]


def test_finetune_metric_stream_tracks_numeric_fields(cli):
    recs = [{"step": s, "loss": 3.0 - s * 0.01, "lr": 1e-4, "tokens_per_s": 900.0 + s} for s in range(1, 101)]
    res = cli(["watch", "--window", "50", "--alert", "mean(loss) < 2.6"], input=jsonl(recs))
    out = res.records()
    m = [r for r in out if r["type"] == "metrics"]
    assert set(m[0]["fields"]) == {"loss", "lr", "tokens_per_s"}  # step is ignored by default
    assert m[0]["fields"]["loss"]["mean"] == pytest.approx(sum(3.0 - s * 0.01 for s in range(1, 51)) / 50)
    assert m[0]["error_rate"] == 0 and m[0]["p95_latency_ms"] is None
    assert [r["state"] for r in out if r["type"] == "alert"] == ["firing"]


def test_reference_file_drift(cli, tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_bytes(jsonl(serve_log(2000, seed=1)))
    same = serve_log(600, seed=2)
    shifted = serve_log(600, seed=4, start=T0 + 60, latency=(6.5, 0.4), model="other")
    for r in shifted:
        r["prompt_tokens"] += 300
    res = cli(["watch", "--window", "1m", "--reference", str(ref), "--vocab", "prompt"], input=jsonl(same + shifted))
    a, b = metrics(res)
    assert "reference" not in a
    assert a["drifted_fields"] == []
    assert a["drift"]["latency_ms"]["psi"] < 0.1 and a["drift"]["model.name"]["js"] == 0.0
    assert set(b["drifted_fields"]) == {"latency_ms", "ttft_ms", "prompt_tokens", "model.name"}
    assert b["drift"]["prompt_tokens"]["psi"] > 0.2 and b["drift"]["prompt_tokens"]["ks"] == 1.0
    assert b["drift"]["model.name"]["js"] == pytest.approx(math.sqrt(math.log(2)))
    assert b["drift"]["latency_ms"]["ks_p"] < 1e-10


def test_vocabulary_drift(cli):
    recs = [{"prompt": "what is the capital of france", "i": i} for i in range(50)]
    recs += [{"prompt": "write python code to sort a list", "i": i} for i in range(50)]
    res = cli(["watch", "--window", "50", "--vocab", "prompt", "--alert", "js(prompt) > 0.5"], input=jsonl(recs))
    out = res.records()
    assert out[1]["drift"]["vocab:prompt"]["js"] == pytest.approx(math.sqrt(math.log(2)))
    assert out[2]["type"] == "alert" and out[2]["state"] == "firing"


def test_once_exit_codes(cli):
    data = jsonl(serve_log(300, step=1.0))
    ok = cli(["watch", "--once", "--window", "5m", "--alert", "p95_latency_ms > 5000"], input=data)
    assert ok.exit_code == 0, ok.stderr
    bad = cli(["watch", "--once", "--window", "5m", "--alert", "p95_latency_ms > 100", "--alert", "error_rate > 0.5"], input=data)
    assert bad.exit_code == 1
    assert "1 alert(s) fired: p95_latency_ms > 100" in bad.stderr
    assert [r["alert"] for r in bad.records() if r["type"] == "alert"] == ["p95_latency_ms > 100"]
    # Without --once a monitor that saw alerts still ends with 0.
    assert cli(["watch", "--window", "5m", "--alert", "p95_latency_ms > 100"], input=data).exit_code == 0


def test_bad_rules_and_options_are_usage_errors(cli):
    assert cli(["watch", "--alert", "p95 >"], input=b"").exit_code == 2
    assert cli(["watch", "--window", "5 parsecs"], input=b"").exit_code == 2
    assert cli(["watch", "--price", "1"], input=b"").exit_code == 2
    assert cli(["watch", "--from-end"], input=b"").exit_code == 2


def test_malformed_input_follows_on_error(cli, tmp_path):
    good = jsonl(serve_log(3))
    data = good + b"{not json\n" + b"[1, 2]\n" + b'{"time": "yesterday-ish", "latency_ms": 5}\n' + good
    res = cli(["watch", "--window", "1h"], input=data)
    assert res.exit_code == 3 and "<stdin>:4" in res.stderr and "invalid JSON" in res.stderr
    rejects = tmp_path / "rejects.jsonl"
    res = cli(["watch", "--window", "1h", "--on-error", "skip", "--rejects", str(rejects)], input=data)
    assert res.exit_code == 0
    assert metrics(res)[0]["count"] == 6
    reasons = [json.loads(line)["reason"] for line in rejects.read_text().splitlines()]
    assert len(reasons) == 3 and "time" in reasons[2] and reasons[1].startswith("expected a JSON object")
    res = cli(["watch", "--window", "1h", "--on-error", "keep"], input=data)
    assert metrics(res)[0]["count"] == 7  # the record with a bad time is kept, at the last good time


def test_output_file_is_written(cli, tmp_path):
    out = tmp_path / "m.jsonl"
    res = cli(["watch", "--window", "100", "-o", str(out)], input=jsonl(serve_log(250)))
    assert res.exit_code == 0 and res.stdout == ""
    assert [json.loads(x)["count"] for x in out.read_text().splitlines()] == [100, 100, 50]


def test_real_pipe_grep_alert(tmp_path, venv_bin):
    data = jsonl(serve_log(600, step=0.5))
    cmd = f"'{venv_bin / 'llmtools'}' watch --window 1m --alert 'p50_latency_ms > 10' | grep '\"alert\"'"
    proc = subprocess.run(cmd, shell=True, input=data, capture_output=True, timeout=60)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["state"] == "firing"


def test_quiet_live_stream_closes_time_window_by_wall_clock_and_counts_late_events():
    from llmtools.ops.watch import Monitor, WatchConfig

    now = [1000.0]
    mon = Monitor(WatchConfig(window="1m", drift=False), clock=lambda: now[0])
    assert mon.feed({"time": 1000.0, "latency_ms": 5}) is None
    assert mon.feed({"time": 1010.0, "latency_ms": 6}) is None
    now[0] = 1019.0
    assert mon.tick() is None  # the window [960, 1020) is still open
    now[0] = 1021.0
    (closed,) = mon.tick()
    assert closed["count"] == 2 and closed["end"] == "1970-01-01T00:17:00Z" and "partial" not in closed
    assert mon.feed({"time": 1030.0}) is None
    assert mon.feed({"time": 1001.0}) is None  # older than the open window: counted in it, as late
    (last,) = mon.finish()
    assert last["count"] == 2 and last["late"] == 1


def test_empty_input_writes_nothing(cli):
    res = cli(["watch", "--once", "--alert", "count > 0"], input=b"")
    assert res.exit_code == 0 and res.stdout == ""
