"""--engine spark for the record-wise commands: the same bytes as the local command, the same
rejects, the same errors, and the usage errors a cluster run needs."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import run_cli

TEXTS = ["  Hello\u201cworld\u201d  again ", "plain ascii text", "", "   ", "tab\tand\u200bzero width",
         "dash \u2013 and \u2014 dashes", "caf\u00e9 na\u0131ve \u00c5ngstr\u00f6m", "line one\n\n\nline two",
         "mojibake: caf\u00c3\u00a9", "x" * 5, "Email me at bob@example.com please"]


def corpus(seed: int, n: int, bad_every: int = 0) -> list[bytes]:
    """JSONL lines: texts from TEXTS with a random tail, blank lines, and (every `bad_every`th)
    a bad line: invalid JSON, a non-object, a missing field or a number for text."""
    rng = random.Random(seed)
    bad = [b'{"text": "unterminated\n', b"[1, 2]\n", b'{"other": 1}\n', b'{"text": 42, "id": "num"}\n']
    lines = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(bad[(i // bad_every) % len(bad)])
            continue
        if i % 17 == 5:
            lines.append(b"\n")
        text = rng.choice(TEXTS) + (" " + " ".join(rng.choice(["alpha", "beta", "\u201cq\u201d", "  gap"]) for _ in range(rng.randint(0, 4))) if rng.random() < 0.7 else "")
        lines.append(orjson.dumps({"id": f"{seed}-{i}", "text": text, "meta": {"n": i}}) + b"\n")
    return lines


def write(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def parts(folder: Path) -> bytes:
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))
    data = b""
    for name in names:
        raw = (folder / name).read_bytes()
        data += gzip.decompress(raw) if name.endswith(".gz") else raw
    return data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("spark-in")
    # A file big enough that textFile splits it, a gzipped one (never split), a small one.
    return [write(root / "a.jsonl", corpus(1, 400, bad_every=37)), write(root / "b.jsonl.gz", corpus(2, 150, bad_every=29)),
            write(root / "c.jsonl", corpus(3, 20))]


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("on_error", ["skip", "keep"])
def test_normalize_on_spark_is_byte_identical_to_local(spark, inputs, tmp_path, on_error):
    opts = ["--on-error", on_error, "--min-chars", "8", "--redact", "email", "--explain", "-q"]
    local_rej = tmp_path / "local-rejects.jsonl"
    local = run_cli(["normalize", *opts, "--rejects", local_rej, *inputs])
    assert local.exit_code == 0, local.stderr
    out, rej = tmp_path / "out", tmp_path / "rej"
    res = run_cli(["normalize", *opts, "--engine", "spark", "-o", out, "--rejects", rej, *inputs])
    assert res.exit_code == 0, res.stderr
    assert len([p for p in out.iterdir() if p.name.startswith("part-")]) >= 4  # a.jsonl was split
    assert parts(out) == local.stdout_bytes and local.stdout_bytes
    assert (out / "_SUCCESS").exists()
    # Rejects: the same entries (reason, source, line, record) as locally, in the same order.
    assert parts(rej) == local_rej.read_bytes()
    rejects = [orjson.loads(line) for line in parts(rej).splitlines()]
    assert {r["reason"] for r in rejects} >= {"min-chars"} and all(r["line"] for r in rejects)
    # Nothing lost: every non-blank line is in the output or the rejects.
    lines_in = sum(1 for p in inputs for line in (gzip.open(p) if p.suffix == ".gz" else open(p, "rb")) if line.strip())
    assert lines_in == len(parts(out).splitlines()) + len(rejects)
    manifest = json.loads((out / "llmtools-manifest.json").read_text())
    assert manifest["kind"] == "normalize output" and manifest["engine"]["name"] == "spark"
    assert manifest["metrics"]["records"]["in"] == lines_in
    assert set(manifest["inputs"]) == {str(p) for p in inputs} and all(v["sha256"] for v in manifest["inputs"].values())


@pytest.mark.sysdep("java")
def test_fail_names_the_first_bad_line_and_leaves_no_output(spark, tmp_path):
    # The first bad line sits in the second partition of the split file: its line number needs
    # the first partition's line count.
    lines = corpus(7, 400)
    first = len(lines) - 20
    lines[first] = b"[1, 2]\n"
    lines[-3] = b"{broken\n"
    inputs = [write(tmp_path / "a.jsonl", lines), write(tmp_path / "b.jsonl", [b"nope\n"])]
    local = run_cli(["normalize", *inputs])
    assert local.exit_code == 3
    out = tmp_path / "out"
    res = run_cli(["normalize", "--engine", "spark", "-o", out, *inputs])
    assert res.exit_code == 3, res.stderr
    where = local.stderr.strip().splitlines()[-1]
    assert f"{inputs[0]}:{first + 1}: expected a JSON object, got list" in where
    assert res.stderr.strip().splitlines()[-1] == where
    assert not out.exists()


@pytest.mark.sysdep("java")
def test_globs_compressed_parts_and_a_second_file_bad_line(spark, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    write(root / "x1.jsonl", corpus(5, 30))
    write(root / "x2.jsonl", corpus(6, 30)[:10] + [b"not json\n"] + corpus(6, 30)[10:])
    out = tmp_path / "out"
    res = run_cli(["normalize", "--engine", "spark", "-o", out, str(root / "x*.jsonl")])
    assert res.exit_code == 3 and f"{root / 'x2.jsonl'}:11: invalid JSON" in res.stderr
    res = run_cli(["normalize", "--engine", "spark", "--compress", "--on-error", "skip", "-q", "-o", out, str(root / "x*.jsonl")])
    assert res.exit_code == 0, res.stderr
    assert all(p.name.endswith(".jsonl.gz") for p in out.iterdir() if p.name.startswith("part-"))
    local = run_cli(["normalize", "--on-error", "skip", "-q", root / "x1.jsonl", root / "x2.jsonl"])
    assert parts(out) == local.stdout_bytes
    again = run_cli(["normalize", "--engine", "spark", "-o", out, str(root / "x1.jsonl")])
    assert again.exit_code == 2 and "already exists" in again.stderr


@pytest.mark.sysdep("java")
def test_schema_is_checked_on_the_executors_as_locally(spark, inputs, tmp_path):
    # --schema must reach the executors: records that do not fit are rejected with the same
    # reason, path and line as locally, and --on-error fail stops at the same first one.
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["id", "text"],
                                  "properties": {"text": {"type": "string", "minLength": 12}}}))
    opts = ["--schema", schema, "--on-error", "skip", "-q"]
    local_rej = tmp_path / "local-rejects.jsonl"
    local = run_cli(["normalize", *opts, "--rejects", local_rej, *inputs])
    assert local.exit_code == 0, local.stderr
    out, rej = tmp_path / "out", tmp_path / "rej"
    res = run_cli(["normalize", *opts, "--engine", "spark", "-o", out, "--rejects", rej, *inputs])
    assert res.exit_code == 0, res.stderr
    assert parts(out) == local.stdout_bytes
    assert parts(rej) == local_rej.read_bytes()
    assert sum(1 for line in parts(rej).splitlines() if orjson.loads(line)["reason"] == "schema") > 10
    local = run_cli(["normalize", "--schema", schema, *inputs])
    res = run_cli(["normalize", "--schema", schema, "--engine", "spark", "-o", tmp_path / "out2", *inputs])
    assert local.exit_code == res.exit_code == 3
    assert res.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, says", [
    (["--engine", "spark", "-o", "OUT"], "not stdin"),
    (["--engine", "spark", "-", "-o", "OUT"], "not stdin"),
    (["--engine", "spark", "IN"], "not stdout: give -o DIR"),
    (["--spark-conf", "spark.executor.memory=1g", "IN"], "need --engine spark"),
    (["--engine", "spark", "--spark-conf", "novalue", "IN", "-o", "OUT"], "expected KEY=VALUE"),
])
def test_usage_errors_say_what_to_pass(tmp_path, args, says):
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    args = [str(tmp_path / "in.jsonl") if a == "IN" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    res = run_cli(["normalize", *args], input='{"text": "a"}\n')
    assert res.exit_code == 2, res.stderr
    assert says in res.stderr and res.stderr.count("\n") == 1


def test_missing_java_exits_4_with_the_install_command(tmp_path):
    pytest.importorskip("pyspark")
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    env = dict(os.environ, JAVA_HOME=str(tmp_path / "no-java"), PATH=str(Path(sys.executable).parent))
    proc = subprocess.run([sys.executable, "-m", "llmtools", "normalize", "--engine", "spark", str(tmp_path / "in.jsonl"),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert "Java 17" in proc.stderr and "apt-get install -y openjdk-17-jre-headless" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_missing_pyspark_exits_4_with_the_extra(tmp_path, monkeypatch):
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    monkeypatch.setitem(sys.modules, "pyspark", None)
    res = run_cli(["normalize", "--engine", "spark", tmp_path / "in.jsonl", "-o", tmp_path / "out"])
    assert res.exit_code == 4 and "pip install 'llmtools[spark]'" in res.stderr
