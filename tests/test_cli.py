"""The CLI contract: lazy start-up, exit codes, one-line errors, quiet closed pipes."""

from __future__ import annotations

import subprocess
import sys
import types

import click
import pytest

from llmtools import __version__
from llmtools.cli import COMMANDS

HEAVY = ("torch", "transformers", "peft", "nltk", "datasketch", "numpy", "llama_cpp", "scipy", "sacrebleu", "rouge_score", "starlette", "uvicorn",
         "phonenumbers", "email_validator", "pyspark", "py4j", "mlflow", "optuna")

PROBE = """
import sys
from llmtools.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
sys.stderr.write("HEAVY=" + ",".join(heavy) + "\\n")
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"]] + [[name, "--help"] for name in COMMANDS])
def test_help_imports_nothing_heavy(args):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    heavy_line = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")][-1]
    assert heavy_line == "HEAVY=", f"{' '.join(args)} imported {heavy_line[6:]}"
    assert proc.stdout.strip()


def test_summaries_match_docstrings():
    import importlib

    for name, summary in COMMANDS.items():
        cmd = importlib.import_module(f"llmtools.commands.{name}").cli
        assert cmd.help.strip().splitlines()[0] == summary, name


def test_exit_codes_in_help_and_man_page_are_the_enum():
    """`llmtools --help` and the man pages name every ExitCode, and no other code."""
    import re
    from pathlib import Path

    from llmtools.cli import cli as root
    from llmtools.errors import ExitCode

    line = " ".join(root.help.split()).partition("Exit codes: ")[2]
    assert sorted(int(n) for n in re.findall(r"\b(\d+) [a-z]", line)) == sorted(ExitCode)
    page = (Path(__file__).resolve().parent.parent / "man" / "llmtools.1").read_text()
    status = page.partition(".SH EXIT STATUS")[2].partition(".SH")[0]
    assert [int(n) for n in re.findall(r"^\.B (\d+)$", status, re.M)] == [int(c) for c in ExitCode]
    assert all(code.meaning in status.replace("\\-", "-") for code in ExitCode)


def test_version(cli):
    result = cli(["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    from llmtools.native import STATUS

    assert f"C helper (llmtools._speedups): {STATUS}" in result.stdout


def test_unknown_command_is_usage_error(cli):
    result = cli(["frobnicate"])
    assert result.exit_code == 2 and "No such command" in result.stderr


@pytest.fixture
def boom_command(monkeypatch):
    """A throwaway command that fails the way a bug would, to test error mapping."""
    from llmtools import cli as cli_mod
    from llmtools.errors import MissingDependency

    @click.command()
    @click.option("--kind", default="bug")
    def boom(kind):
        """Fail on purpose."""
        if kind == "missing":
            raise MissingDependency("missing dependency 'x': install it with: pip install x")
        if kind == "interrupt":
            raise KeyboardInterrupt
        raise ValueError("something broke")

    module = types.ModuleType("llmtools.commands._boom")
    module.cli = boom
    monkeypatch.setitem(sys.modules, "llmtools.commands._boom", module)
    monkeypatch.setitem(cli_mod.COMMANDS, "_boom", "Fail on purpose.")


def test_internal_error_is_one_line_without_traceback(cli, boom_command):
    result = cli(["_boom"])
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["llmtools: internal error: ValueError: something broke (run with --debug for the traceback)"]


def test_debug_shows_the_traceback(cli, boom_command):
    with pytest.raises(ValueError):
        from llmtools.cli import main

        main(["--debug", "_boom"])


def test_missing_dependency_exit_4(cli, boom_command):
    result = cli(["_boom", "--kind", "missing"])
    assert result.exit_code == 4 and "pip install x" in result.stderr


def test_interrupt_exit_130(cli, boom_command):
    result = cli(["_boom", "--kind", "interrupt"])
    assert result.exit_code == 130 and "interrupted" in result.stderr
