"""The examples run for real: the cron scripts, and (slow) the lifecycle demo's shortened variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CRON = ROOT / "examples" / "cron"


def _env():
    env = dict(os.environ)
    env["LLMTOOLS"] = str(Path(sys.executable).parent / "llmtools")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _write(path: Path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_nightly_dedup_is_incremental(tmp_path):
    incoming, clean, state = tmp_path / "in", tmp_path / "clean", tmp_path / "state"
    incoming.mkdir()
    day1 = [{"id": f"d1-{i}", "text": f"ticket {i}: the {w} arrived broken and support never answered my emails about it"} for i, w in enumerate(["kettle", "lamp", "router"])]
    _write(incoming / "2026-11-24.jsonl", day1)
    run = lambda: subprocess.run(["bash", str(CRON / "nightly-dedup.sh"), str(incoming), str(clean), str(state)], env=_env(), capture_output=True, text=True, timeout=120)  # noqa: E731
    first = run()
    assert first.returncode == 0, first.stderr
    day2 = [dict(day1[1], id="d2-0"), {"id": "d2-1", "text": "a completely new ticket about a refund for a missing bike lock part"}]
    _write(incoming / "2026-11-25.jsonl", day2)
    second = run()
    assert second.returncode == 0, second.stderr
    kept = [json.loads(x)["id"] for x in (clean / "2026-11-25.jsonl").read_text().splitlines()]
    assert kept == ["d2-1"]
    rejected = [json.loads(x) for x in (state / "rejects" / "2026-11-25.jsonl").read_text().splitlines()]
    assert rejected[0]["record"]["id"] == "d2-0" and rejected[0]["dup_of"] == "d1-1"
    mtime = (clean / "2026-11-24.jsonl").stat().st_mtime_ns
    assert run().returncode == 0 and (clean / "2026-11-24.jsonl").stat().st_mtime_ns == mtime  # done batches are skipped


def _requests(latency, n=50, status=200):
    return [{"time": 1764100000 + i, "request_id": f"r{i}", "endpoint": "/v1/chat/completions", "status": status,
             "latency_ms": latency, "ttft_ms": latency / 4, "prompt_tokens": 20, "completion_tokens": 30} for i in range(n)]


def test_watch_alert_exit_codes(tmp_path):
    healthy, slow = tmp_path / "ok.jsonl", tmp_path / "slow.jsonl"
    _write(healthy, _requests(120.0))
    _write(slow, _requests(120.0, n=10) + _requests(5000.0, n=40))
    ok = subprocess.run(["bash", str(CRON / "watch-alert.sh"), str(healthy)], env=_env(), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout == "", ok.stderr
    bad = subprocess.run(["bash", str(CRON / "watch-alert.sh"), str(slow)], env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stderr
    assert "p95_latency_ms" in bad.stdout


def _readme_demo_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("== llmtools lifecycle demo: summary")
    return readme[start:readme.index("```", start)]


def _unchanged_by_fast(summary: str) -> list[str]:
    """The summary's parts that FAST=1 (fewer steps, a smaller held-out set) leaves alone: the
    counts up to the training split, what normalize removed, and what dedup removed."""
    lines = summary.splitlines()
    data = next(line for line in lines if line.startswith("data "))
    normalize = next(line for line in lines if line.startswith("removed   normalize:"))
    dedup = next(line for line in lines if line.strip().startswith("dedup:"))
    return [" ".join(data.split(" -> train")[0].split()), " ".join(normalize.split()),
            " ".join(dedup.split(";")[0].split())]


def test_readme_demo_block_has_the_lines_the_fast_demo_checks():
    parts = _unchanged_by_fast(_readme_demo_block())
    assert parts[0].startswith("data raw 772 lines -> clean") and "unique" in parts[0]
    assert parts[2].startswith("dedup: duplicate")


@pytest.mark.slow
@pytest.mark.sysdep("wordnet", "curl")
def test_lifecycle_demo_fast_variant(tmp_path):
    """The documented shortened demo (FAST=1) end to end, so the demo cannot rot."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        ["make", "-C", str(ROOT / "examples" / "lifecycle"), "FAST=1", f"OUT={out}",
         f"LLMTOOLS={Path(sys.executable).parent / 'llmtools'}", f"PYTHON={sys.executable}"],
        capture_output=True, text=True, timeout=1500, env=_env(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "SUMMARY.txt").read_text()
    assert "lineage: OK" in summary
    # The README shows a real full run; the data lines do not depend on FAST, so they must match.
    assert _unchanged_by_fast(summary) == _unchanged_by_fast(_readme_demo_block())
    report = json.loads((out / "quant-report.json").read_text())
    assert report["type"].lower() == "q4_k_m" or "q4_k" in json.dumps(report).lower()


@pytest.mark.slow
def test_prompt_experiment_makefile_runs_on_a_tiny_model(tmp_path, tiny_model_dir):
    """examples/prompts end to end on the tiny model: three variants, the paired ranking, the
    fairness gate and the summary (real answers and figures come from smollm2 in its README)."""
    py = Path(sys.executable)
    out = tmp_path / "out"
    proc = subprocess.run(
        ["make", "-C", str(ROOT / "examples" / "prompts"), f"LLMTOOLS={py.parent / 'llmtools'}", f"PYTHON={py}",
         f"MODEL={tiny_model_dir}", f"OUT={out}", "EVAL_LIMIT=6", "MAX_TOKENS=4", "COT_TOKENS=4", "SHOTS=0",
         "BOOTSTRAP=100", "MIN_GROUP=1"],
        env=_env(), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for v in ("zero-shot", "few-shot", "cot") for x in (out / f"{v}.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in records} == {"zero-shot", "few-shot", "cot"} and len(records) == 18
    assert all(len(r["_llmtools"]["prompt"]["template"]) == 64 for r in records)
    assert json.loads((out / "cot.jsonl.manifest.json").read_text())["params"]["extract"].startswith("Answer:")
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["paired"]["variant"]["n"] == 6
    assert "gate gap(exact_match)" in (out / "SUMMARY.txt").read_text()
