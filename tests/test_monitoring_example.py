"""examples/monitoring: every metric the Grafana dashboard and the Prometheus alert rules use is one
that a real `llmtools serve` and `llmtools watch --prometheus-port` export, with the label values
the queries select. A renamed metric fails here."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.server_process import ENV, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "examples" / "monitoring"
NAME = re.compile(r"\b(llmtools_[a-zA-Z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*=\s*"([^"$]*)"')
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself


def expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by where it is."""
    out = {}
    dash = json.loads((MONITORING / "grafana" / "llmtools-dashboard.json").read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out[f"dashboard {panel['title']!r} {target['refId']}"] = target["expr"]
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            out[f"rule {rule['alert']}"] = rule["expr"]
    return out


def series_names(families) -> dict[str, list[dict]]:
    """The series names a scrape can have (a histogram's _bucket/_sum/_count, a counter's _total),
    with the label sets seen for each, from prometheus_client's parser."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",), "unknown": ("",)}
    out: dict[str, list[dict]] = {}
    for fam in families:
        for suffix in suffixes.get(fam.type, ("",)):
            out.setdefault(fam.name + suffix, [])
        for sample in fam.samples:
            out.setdefault(sample.name, []).append(dict(sample.labels))
    return out


def missing(exprs: dict[str, str], exported: dict[str, list[dict]]) -> list[str]:
    """What the expressions ask for that is not exported: unknown names, or (for watch's labelled
    gauges) label values no sample has."""
    problems = []
    for where, expr in exprs.items():
        for name, matchers in NAME.findall(expr):
            if name not in exported:
                problems.append(f"{where}: no metric {name}")
                continue
            wanted = {k: v for k, v in MATCHER.findall(matchers or "") if k not in ("job", "instance")}
            if wanted and name.startswith("llmtools_watch") and not any(wanted.items() <= labels.items() for labels in exported[name]):
                problems.append(f"{where}: no {name} sample with {wanted}")
        for name in re.findall(r"\b(up)\{", expr):
            assert name in PROMETHEUS_OWN
    return problems


def test_the_example_files_are_well_formed():
    exprs = expressions()
    assert len(exprs) >= 25
    names = {n for e in exprs.values() for n, _ in NAME.findall(e)}
    assert {"llmtools_request_latency_seconds_bucket", "llmtools_time_to_first_token_seconds_bucket",
            "llmtools_requests_total", "llmtools_request_errors_total", "llmtools_queue_depth",
            "llmtools_batch_size_bucket", "llmtools_watch_error_rate", "llmtools_watch_drift"} <= names
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"llmtools-serve", "llmtools-watch"} and config["rule_files"] == ["alerts.yml"]
    assert len(jobs["llmtools-serve"]["static_configs"][0]["targets"]) >= 2  # several replicas
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"} and rule["annotations"]["summary"]


def _scrape(url: str):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(httpx.get(url, timeout=10).text))


@pytest.mark.slow
def test_every_metric_in_the_dashboard_and_rules_is_exported(tiny_model_dir, tmp_path):
    import httpx

    log = tmp_path / "requests.jsonl"
    server = ServerProcess([tiny_model_dir, "--log", str(log)])
    watch = None
    try:
        url = server.wait_ready()
        for i in range(3):
            assert httpx.post(f"{url}/v1/completions", json={"prompt": f"hello {i}", "max_tokens": 3}, timeout=120).status_code == 200
        with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 3, "stream": True}, timeout=120) as r:
            assert r.status_code == 200 and "".join(r.iter_text())
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": -5}, timeout=60).status_code >= 400
        serve_families = _scrape(f"{url}/metrics")
        served = {s.name: s.value for f in serve_families for s in f.samples if not s.labels or set(s.labels) == {"le"}}
        # one request at a time: each model call had one prompt
        assert served["llmtools_batch_size_count"] == served["llmtools_batch_size_sum"] == 4
    finally:
        server.stop()

    lines = log.read_text().splitlines()
    assert len(lines) >= 4
    reference = tmp_path / "reference.jsonl"
    reference.write_text("\n".join(lines) + "\n")
    watch = subprocess.Popen(
        [sys.executable, "-m", "llmtools", "watch", "--follow", str(log), "--reference", str(reference), "--window", "2",
         "--poll", "20ms", "--prometheus-port", "0", "--no-dashboard", "--alert", "slow: p95_latency_ms > 800 for 2m",
         "--alert", "psi(prompt_tokens) > 0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**ENV, "PYTHONUNBUFFERED": "1"})
    try:
        banner = watch.stderr.readline().decode()
        assert "Prometheus metrics at http://127.0.0.1:" in banner, banner
        watch_url = banner.rsplit(" ", 1)[1].strip()
        deadline = time.time() + 60
        while True:
            watch_families = _scrape(watch_url)
            samples = {s.name: s.value for f in watch_families for s in f.samples}
            if samples.get("llmtools_watch_windows_total", 0) >= 2 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert samples.get("llmtools_watch_windows_total", 0) >= 2
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=30)

    exported = series_names(serve_families + watch_families)
    exprs = expressions()
    assert missing(exprs, exported) == []
    # the check bites: a renamed metric, or a label value nothing has, is reported
    renamed = {"renamed": exprs["rule LLMToolsSlowP95"].replace("llmtools_request_latency_seconds", "llmtools_request_latency_ms")}
    assert missing(renamed, exported) == ["renamed: no metric llmtools_request_latency_ms_bucket"]
    assert missing({"label": 'llmtools_watch_drift{field="prompt_length", stat="psi"}'}, exported) == [
        "label: no llmtools_watch_drift sample with {'field': 'prompt_length', 'stat': 'psi'}"]
