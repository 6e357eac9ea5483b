"""normalize in real processes: shell pipes, a closed pipe, and what a short run imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def llmtools(venv_bin) -> str:
    exe = venv_bin / "llmtools"
    assert exe.exists(), f"{exe} missing: install the package into the venv (pip install -e .)"
    return str(exe)


def write_records(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            rec = {"id": i, "text": f"  Record {i}:  “Quoted”  café – Mail user{i}@example.com  ", "keep": [i]}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def test_pipeline_of_real_processes(llmtools, tmp_path):
    src = tmp_path / "in.jsonl"
    write_records(src, 20)
    proc = subprocess.run(
        f"cat {src} | {llmtools} normalize | {llmtools} normalize --steps +lowercase --redact email --explain",
        shell=True, capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 20
    assert out[3]["text"] == 'record 3: "quoted" café - mail <EMAIL>'
    assert out[3]["keep"] == [3]
    assert out[3]["_llmtools"]["normalize"]["changed"] == ["pii", "lowercase"]
    # The two-stage pipe equals one run with both sets of steps.
    one = subprocess.run(
        [llmtools, "normalize", "--steps", "+lowercase", "--redact", "email", str(src)], capture_output=True, timeout=60
    )
    assert [json.loads(x)["text"] for x in one.stdout.splitlines()] == [r["text"] for r in out]


def test_closed_pipe_ends_quietly(llmtools, tmp_path):
    src = tmp_path / "big.jsonl"
    write_records(src, 20000)  # far more than a pipe buffer
    proc = subprocess.run(
        f"{llmtools} normalize {src} | head -1; echo \"status=${{PIPESTATUS[0]}}\" >&2",
        shell=True, capture_output=True, timeout=120, executable="/bin/bash",
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == 0
    err = proc.stderr.decode()
    assert "Traceback" not in err and "Error" not in err, err
    assert "status=0" in err


def test_bad_line_exit_code_in_a_pipe(llmtools, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{"text": \n')
    proc = subprocess.run(f"{llmtools} normalize < {src}", shell=True, capture_output=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stderr.decode().strip().startswith("llmtools: error: <stdin>:2: invalid JSON")


def test_short_run_imports_only_what_it_needs(tmp_path):
    # Start-up time: an ASCII record with the default steps needs neither ftfy nor the opt-in
    # step modules; a non-ASCII one loads ftfy only when mojibake is suspected. Plain input to
    # stdout needs neither gzip nor tempfile (for -o).
    src = tmp_path / "one.jsonl"
    src.write_text('{"text": "Hello  world"}\n')
    code = (
        "import sys\n"
        "from llmtools.cli import main\n"
        "try:\n"
        f"    main(['normalize', {str(src)!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "mods = ['ftfy', 'py3langid', 'numpy', 'regex', 'difflib', 'llmtools.ops.normalize.pii',\n"
        "        'llmtools.ops.normalize.phones', 'phonenumbers', 'email_validator',\n"
        "        'llmtools.ops.normalize.values', 'llmtools.ops.normalize.quality', 'gzip', 'tempfile']\n"
        "sys.stderr.write(','.join(m for m in mods if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"text": "Hello world"}
    assert proc.stderr.decode() == ""


def test_ftfy_loads_without_its_display_helpers_until_used():
    # Repairing mojibake imports ftfy but not ftfy.formatting (wcwidth, ~20 ms); ftfy's own use
    # of it (explain_unicode) still works, through the real module, imported on first call.
    code = (
        "import io, sys, contextlib\n"
        "from llmtools.ops.normalize import cleaning as T\n"
        "assert T.fix_mojibake('doesn\\u00e2\\u20ac\\u2122t') == 'doesn\\u2019t'\n"
        "assert 'ftfy' in sys.modules and 'wcwidth' not in sys.modules and 'ftfy.formatting' not in sys.modules\n"
        "import ftfy\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    ftfy.explain_unicode('\\u00e9')\n"
        "assert 'LATIN SMALL LETTER E WITH ACUTE' in out.getvalue(), out.getvalue()\n"
        "import ftfy.formatting\n"
        "assert hasattr(ftfy.formatting, 'display_center') and 'wcwidth' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
