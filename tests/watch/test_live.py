"""What only a live process shows: --follow across rotation, Prometheus, the TTY dashboard."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import orjson
import pytest

from llmtools.ops.watch.follow import follow


def _line(i, **kw):
    rec = {"time": 1_700_000_000.0 + i, "latency_ms": 100.0 + i, "status": 200, "i": i}
    rec.update(kw)
    return orjson.dumps(rec) + b"\n"


def _reader(stream):
    q: queue.Queue = queue.Queue()

    def pump():
        for line in iter(stream.readline, b""):
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _next(q, timeout=20.0):
    line = q.get(timeout=timeout)
    assert line is not None, "watch ended early"
    return json.loads(line)


def _watch(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "llmtools", "watch", *args], env=env, **kw)


def test_follow_generator_handles_rename_and_truncate(tmp_path):
    log = tmp_path / "app.jsonl"
    log.write_bytes(b"a\nb\npart")
    got = []
    gen = follow(str(log), poll=0.001, sleep=lambda s: None)

    def take(n):
        while len(got) < n:
            item = next(gen)
            if item is not None:
                got.append(item)

    take(2)
    assert got == [b"a", b"b"]
    with open(log, "ab") as fh:
        fh.write(b"ial\n")  # a line written in two pieces is given out whole
    take(3)
    old = open(log, "ab")
    os.rename(log, tmp_path / "app.jsonl.1")
    old.write(b"late\n")  # written to the old file after the rename: still read
    old.close()
    log.write_bytes(b"new1\n")
    take(5)
    log.write_bytes(b"t\n")  # truncated and rewritten shorter than the read position
    take(6)
    assert got == [b"a", b"b", b"partial", b"late", b"new1", b"t"]


def test_follow_survives_rotation_end_to_end(tmp_path):
    log = tmp_path / "requests.jsonl"
    log.write_bytes(b"".join(_line(i) for i in range(3)))
    proc = _watch(["--follow", str(log), "--window", "3", "--poll", "20ms", "--no-drift"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = _reader(proc.stdout)
        first = _next(out)
        assert first["count"] == 3 and first["fields"]["i"]["max"] == 2
        # logrotate-style: rename, keep writing a moment to the old file, then start a new one.
        rotated = tmp_path / "requests.jsonl.1"
        with open(log, "ab") as old:
            os.rename(log, rotated)
            old.write(_line(3))
        with open(log, "wb") as new:
            new.write(_line(4) + _line(5))
        second = _next(out)
        assert second["count"] == 3 and (second["fields"]["i"]["min"], second["fields"]["i"]["max"]) == (3, 5)
        # copytruncate-style: truncate in place, then write again once the reader has seen it.
        # (Like tail -F, a file truncated and regrown past the read position within one poll
        # cannot be told from one that only grew.)
        with open(log, "wb"):
            pass
        time.sleep(0.5)
        with open(log, "ab") as fh:
            fh.write(_line(6) + _line(7) + _line(8))
        third = _next(out)
        assert (third["fields"]["i"]["min"], third["fields"]["i"]["max"]) == (6, 8)
        with open(log, "ab") as fh:
            fh.write(_line(9))
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # a clean stop still writes the open window
        last = _next(out)
        assert last["partial"] is True and last["count"] == 1 and last["fields"]["i"]["max"] == 9
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_follow_once_reads_to_the_current_end(tmp_path):
    log = tmp_path / "requests.jsonl"
    log.write_bytes(b"".join(_line(i, latency_ms=900.0) for i in range(5)))
    proc = subprocess.run([sys.executable, "-m", "llmtools", "watch", "--follow", str(log), "--once", "--poll", "20ms",
                           "--window", "1h", "--alert", "p95_latency_ms > 800"], capture_output=True, timeout=60)
    assert proc.returncode == 1
    kinds = [json.loads(x)["type"] for x in proc.stdout.splitlines()]
    assert kinds == ["metrics", "alert"]


def test_prometheus_render_parses():
    parser = pytest.importorskip("prometheus_client.parser")
    from llmtools.ops.watch import Monitor, WatchConfig
    from llmtools.ops.watch.alerts import Alert
    from llmtools.ops.watch.prometheus import render

    mon = Monitor(WatchConfig(window="10"), [Alert.from_text("slow: p95_latency_ms > 50")])
    for i in range(20):
        mon.feed({"latency_ms": float(i * 10), "status": 500 if i % 4 == 0 else 200, "model": {"name": "m"}})
    text = render({"events": mon.seq, "windows": mon.windows, "fired": mon.fired, "latest": mon.latest,
                   "alerts": [("slow", mon.alerts[0].state == "firing")]}).decode()
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    value = {(f.name, s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert value[("llmtools_watch_events", "llmtools_watch_events_total", ())] == 20
    assert value[("llmtools_watch_count", "llmtools_watch_count", ())] == 10
    assert value[("llmtools_watch_error_rate", "llmtools_watch_error_rate", ())] == pytest.approx(0.2)  # 12 and 16 of 10..19
    p95 = value[("llmtools_watch_field", "llmtools_watch_field", (("field", "latency_ms"), ("stat", "p95")))]
    assert p95 == pytest.approx(mon.latest["p95_latency_ms"])
    assert value[("llmtools_watch_alert_firing", "llmtools_watch_alert_firing", (("alert", "slow"),))] == 1.0


def test_prometheus_endpoint_serves_live_metrics(tmp_path):
    parser = pytest.importorskip("prometheus_client.parser")
    log = tmp_path / "requests.jsonl"
    log.write_bytes(b"".join(_line(i) for i in range(4)))
    proc = _watch(["--follow", str(log), "--window", "2", "--poll", "20ms", "--prometheus-port", "0", "--no-dashboard"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = proc.stderr.readline().decode()
        assert "Prometheus metrics at http://127.0.0.1:" in banner
        url = banner.rsplit(" ", 1)[1].strip()
        out = _reader(proc.stdout)
        _next(out)
        deadline = time.time() + 20
        while True:
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            samples = {s.name: s.value for f in parser.text_string_to_metric_families(text) for s in f.samples}
            if samples.get("llmtools_watch_windows_total", 0) >= 2 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert samples["llmtools_watch_events_total"] == 4
        assert samples["llmtools_watch_count"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_dashboard_renders_on_the_terminal_not_on_stdout(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"".join(_line(i * 10) for i in range(30)))
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    with open(data, "rb") as stdin:
        proc = subprocess.Popen([sys.executable, "-m", "llmtools", "watch", "--window", "1m", "--alert", "p95_latency_ms > 150"],
                                stdin=stdin, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def drain_terminal():  # read the terminal while watch runs, so it never blocks on a full pty
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain_terminal, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait(timeout=60)
    reader.join(timeout=30)
    screen = b"".join(chunks)
    os.close(master)
    text = screen.decode("utf-8", "replace")
    assert "llmtools watch: 30 events" in text
    assert "p95_latency_ms" in text and "alert p95_latency_ms > 150" in text and "firing" in text
    records = [json.loads(x) for x in stdout.splitlines()]  # stdout is records only
    assert [r["type"] for r in records].count("metrics") == 6  # 22:13 .. 22:18
    assert b"\x1b[" not in stdout and "events" not in stdout.decode()
