"""The `llmtools` root group. It maps command names to modules and imports nothing heavy.

Each command lives in `llmtools.commands.<name>` and is imported only when it is run or its
help is shown, so `llmtools --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from llmtools import __version__
from llmtools import errors

# name -> one-line summary. The summary is shown by `llmtools --help` without importing the
# command module; tests check it matches the command's own docstring first line.
COMMANDS: dict[str, str] = {
    "normalize": "Clean, normalize, filter and redact text records.",
    "dedup": "Remove exact and near-duplicate records (MinHash LSH).",
    "augment": "Make seeded, traceable variants of text records.",
    "finetune": "Fine-tune a model (LoRA or full) on JSONL records.",
    "score": "Score predictions against references, with CI gates.",
    "quantize": "Convert a model to GGUF and quantize it, with a quality report.",
    "serve": "Serve a model over an OpenAI-compatible API, or in batch.",
    "watch": "Monitor a stream of events: metrics, drift and alerts.",
    "models": "List the model registry and what is ready to use.",
}


class _ClosedPipe(Exception):
    """stdout's reader went away."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"llmtools.commands.{name}")
        return module.cli

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            # click's main() turns EPIPE into exit 1 even with standalone_mode=False; a closed
            # pipe (`llmtools ... | head -1`) is a normal end, so it is passed on under a type
            # click does not catch.
            raise _ClosedPipe() from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, summary in COMMANDS.items()])


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from llmtools.native import STATUS

    click.echo(f"llmtools, version {__version__}")
    click.echo(f"C helper (llmtools._speedups): {STATUS}")
    ctx.exit(0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, and whether the compiled helper is in use, and exit.")
@click.option("--debug", is_flag=True, envvar="LLMTOOLS_DEBUG", help="Show Python tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Small Unix-style commands for the whole life of an LLM.

    Every command reads JSONL on stdin (or FILES) and writes JSONL on stdout, so they chain:

    \b
        cat raw.jsonl | llmtools normalize | llmtools dedup > clean.jsonl
        llmtools serve --batch smollm2 < eval.jsonl | llmtools score --metric rouge

    Exit codes: 0 ok, 1 failure or failed gate, 2 usage, 3 bad input, 4 missing
    dependency/model, 130 interrupted.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _debug_requested(argv: list[str]) -> bool:
    if os.environ.get("LLMTOOLS_DEBUG", "").lower() in ("1", "true", "yes"):
        return True
    for arg in argv:
        if arg == "--":
            break
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            break
    return False


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: maps exceptions to exit codes; tracebacks only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        rv = cli.main(args=args, prog_name="llmtools", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("llmtools: interrupted\n")
        code = errors.ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("llmtools: interrupted\n")
        code = errors.ExitCode.INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        code = errors.ExitCode.OK
    except _ClosedPipe:
        _silence_stdout()
        code = errors.ExitCode.OK
    except errors.LLMToolsError as exc:
        if debug:
            raise
        sys.stderr.write(f"llmtools: error: {exc.message}\n")
        code = exc.exit_code
    except Exception as exc:  # anything unexpected: one line, unless --debug
        if debug:
            raise
        cause = exc.__class__.__name__
        sys.stderr.write(f"llmtools: internal error: {cause}: {exc} (run with --debug for the traceback)\n")
        code = errors.ExitCode.FAILURE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.exit(code)
