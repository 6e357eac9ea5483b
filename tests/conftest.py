"""Shared fixtures: a CLI runner that goes through the real entry point, and tiny models."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# In CI (.ci/run sets LLMTOOLS_NO_SKIP=1) every Hypothesis test draws the same examples on every
# run, so CI's verdict never depends on the draw; a developer's run keeps drawing at random and
# finding new cases (two real ones so far, each now an @example beside its test).
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("LLMTOOLS_NO_SKIP") == "1":
    hypothesis_settings.load_profile("ci")

# Keep tests on one thread per process: the machines are 2-core and shared.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_runtest_setup(item):
    """`@pytest.mark.sysdep("wordnet")`: skip, naming the package and the fix, when a system
    package from scripts/sysdeps.txt is missing (a failure in CI, below)."""
    for mark in item.iter_markers("sysdep"):
        from tests.helpers import sysdeps

        for name in mark.args:
            sysdeps.require(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With LLMTOOLS_NO_SKIP=1 (set by .ci/run), a skipped test is a failed test."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LLMTOOLS_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped in CI (LLMTOOLS_NO_SKIP=1), which counts as a failure: {reason}"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes

    def records(self) -> list[dict]:
        import orjson

        return [orjson.loads(line) for line in self.stdout_bytes.splitlines() if line.strip()]


class _Buffered(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


def run_cli(args: list[str], input: str | bytes | None = None) -> Result:
    """Run `llmtools ARGS` in-process through the real entry point (exit-code mapping included)."""
    from llmtools.cli import main

    if isinstance(input, str):
        input = input.encode("utf-8")
    stdin = _Buffered(io.BufferedReader(io.BytesIO(input or b"")), encoding="utf-8")
    out_b, err_b = io.BytesIO(), io.BytesIO()
    stdout = _Buffered(out_b, encoding="utf-8", write_through=True)
    stderr = _Buffered(err_b, encoding="utf-8", write_through=True)
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        try:
            stdout.flush()
            stderr.flush()
        except ValueError:
            pass
        sys.stdin, sys.stdout, sys.stderr = old
    data = out_b.getvalue()
    return Result(code, data.decode("utf-8", "replace"), err_b.getvalue().decode("utf-8", "replace"), data)


@pytest.fixture
def cli():
    """`cli(["normalize", "--steps", "nfc"], input="...")` -> Result."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer llama with a tokenizer trained on the fly, saved as safetensors (session-wide)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The folder holding the `llmtools` script, for subprocess tests."""
    return Path(sys.executable).parent
