"""serve --batch --engine spark: each partition loads the model once (or calls an http endpoint)
and runs the local batch code; greedy output equals the local output apart from the timing."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import run_cli
from tests.engines.test_spark_records import parts, write
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.openai_server import serve_backend


def requests(n: int, bad_every: int = 0) -> list[bytes]:
    lines = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append([b'{"prompt": 3}\n', b"not json\n", b'{"prompt": "x", "max_tokens": -1}\n'][(i // bad_every) % 3])
            continue
        if i % 11 == 0:
            lines.append(b"\n")
        rec = {"id": i, "prompt": " ".join(f"w{(i * 7 + k) % 13}" for k in range(1 + i % 5))}
        if i % 4 == 0:
            rec["max_tokens"] = 2
        lines.append(orjson.dumps(rec) + b"\n")
    return lines


def untimed(data: bytes) -> list[dict]:
    out = []
    for line in data.splitlines():
        rec = orjson.loads(line)
        assert isinstance((rec.get("_llmtools") or {}).pop("latency_ms", 0.0), float) or "prediction" not in rec
        out.append(rec)
    return out


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("on_error", ["skip", "keep"])
def test_batch_through_an_endpoint_equals_local(spark, tmp_path, on_error):
    src = write(tmp_path / "req.jsonl", requests(600, bad_every=53))
    opts = ["--batch", "--on-error", on_error, "--batch-size", "4", "--max-tokens", "6", "-q"]
    with serve_backend(FakeBackend("m")) as url:
        local_rej = tmp_path / "local-rejects.jsonl"
        local = run_cli(["serve", url, *opts, "--rejects", local_rej, src])
        out, rej = tmp_path / "out", tmp_path / "rej"
        res = run_cli(["serve", url, *opts, "--engine", "spark", "-o", out, "--rejects", rej, src])
    assert local.exit_code == 0, local.stderr
    assert res.exit_code == 0, res.stderr
    assert len([p for p in out.iterdir() if p.name.startswith("part-")]) >= 2
    got, want = untimed(parts(out)), untimed(local.stdout_bytes)
    assert got == want and any(r.get("prediction") for r in got)
    assert parts(rej) == local_rej.read_bytes()
    # Nothing lost: every non-blank line is a response (or, kept, the bad record) or a reject.
    lines_in = sum(1 for line in src.read_bytes().splitlines() if line.strip())
    assert lines_in == len(got) + len(parts(rej).splitlines())


@pytest.mark.sysdep("java")
def test_bad_request_fails_with_its_line(spark, tmp_path):
    lines = requests(300)
    lines[-5] = b'{"prompt": null}\n'
    src = write(tmp_path / "req.jsonl", lines)
    with serve_backend(FakeBackend("m")) as url:
        local = run_cli(["serve", url, "--batch", src])
        res = run_cli(["serve", url, "--batch", "--engine", "spark", "-o", tmp_path / "out", src])
    assert local.exit_code == 3 and res.exit_code == 3, res.stderr
    assert f"{src}:{len(lines) - 4}:" in res.stderr
    assert res.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_spark_needs_batch_mode(tmp_path):
    res = run_cli(["serve", "--engine", "spark", "m"])
    assert res.exit_code == 2 and "--batch only" in res.stderr


@pytest.mark.slow
@pytest.mark.sysdep("java")
def test_tiny_torch_model_loaded_per_partition_greedy_equals_local(spark, tiny_model_dir, tmp_path):
    src = write(tmp_path / "req.jsonl", requests(40))
    opts = ["--batch", "--batch-size", "1", "--max-tokens", "5", "-q"]
    local = run_cli(["serve", tiny_model_dir, *opts, src])
    assert local.exit_code == 0, local.stderr
    res = run_cli(["serve", tiny_model_dir, *opts, "--engine", "spark", "-o", tmp_path / "out", src])
    assert res.exit_code == 0, res.stderr
    assert untimed(parts(tmp_path / "out")) == untimed(local.stdout_bytes)
