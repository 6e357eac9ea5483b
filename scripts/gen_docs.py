#!/usr/bin/env python3
"""Generate man/ pages and completions/ scripts from the click command tree.

    python scripts/gen_docs.py            # write man/ and completions/
    python scripts/gen_docs.py --out DIR  # write them under DIR (the staleness test uses this)

Never edit the generated files by hand: tests/test_docs.py fails when they are out of date.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

import click
from click.shell_completion import get_completion_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from llmtools import __version__  # noqa: E402
from llmtools.cli import COMMANDS, cli  # noqa: E402
from llmtools.errors import ExitCode  # noqa: E402


def roff(text: str) -> str:
    """Escape text for roff: backslashes, leading dots/quotes, and hyphens."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def help_to_roff(help_text: str) -> str:
    """click docstring -> roff paragraphs; `\\b` blocks are kept verbatim (.nf/.fi)."""
    out: list[str] = []
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    for para in paragraphs:
        if para.startswith("\b"):
            body = para[1:].lstrip("\n")
            out.append(".PP\n.nf\n.RS 4\n" + roff(body) + "\n.RE\n.fi")
        else:
            out.append(".PP\n" + roff(" ".join(line.strip() for line in para.splitlines())))
    return "\n".join(out)


def option_entries(cmd: click.Command, ctx: click.Context) -> list[str]:
    entries = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        entries.append(f".TP\n.B {roff(names)}\n{roff(help_text or '')}")
    return entries


def usage_of(cmd: click.Command, ctx: click.Context) -> str:
    pieces = cmd.collect_usage_pieces(ctx)
    return " ".join(pieces)


def man_page(name: str, cmd: click.Command, ctx: click.Context, summary: str, sub: bool) -> str:
    title = name.upper()
    parts = [
        f'.TH "{title}" "1" "" "llmtools {__version__}" "llmtools manual"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
        ".SH SYNOPSIS",
        f".B {roff(name.replace('-', ' '))}\n{roff(usage_of(cmd, ctx))}",
        ".SH DESCRIPTION",
        help_to_roff(cmd.help or summary),
    ]
    opts = option_entries(cmd, ctx)
    if opts:
        parts += [".SH OPTIONS", *opts]
    if not sub:
        parts.append(".SH COMMANDS")
        for cname, csummary in COMMANDS.items():
            parts.append(f".TP\n.B llmtools\\-{roff(cname)}(1)\n{roff(csummary)}")
    parts.append(".SH EXIT STATUS")
    for code in ExitCode:
        parts.append(f".TP\n.B {code.value}\n{roff(code.meaning)}")
    see = ["llmtools(1)"] if sub else [f"llmtools-{c}(1)" for c in COMMANDS]
    parts += [".SH SEE ALSO", roff(", ".join(see))]
    return "\n".join(parts) + "\n"


def generate(out: str) -> list[str]:
    written = []
    man_dir = os.path.join(out, "man")
    comp_dir = os.path.join(out, "completions")
    os.makedirs(man_dir, exist_ok=True)
    os.makedirs(comp_dir, exist_ok=True)

    root_ctx = click.Context(cli, info_name="llmtools")
    files = {os.path.join(man_dir, "llmtools.1"): man_page("llmtools", cli, root_ctx, "small Unix-style commands for the whole life of an LLM", sub=False)}
    for cname, summary in COMMANDS.items():
        cmd = cli.get_command(root_ctx, cname)
        ctx = click.Context(cmd, info_name=cname, parent=root_ctx)
        files[os.path.join(man_dir, f"llmtools-{cname}.1")] = man_page(f"llmtools-{cname}", cmd, ctx, summary, sub=True)
    for shell, filename in (("bash", "llmtools.bash"), ("zsh", "_llmtools"), ("fish", "llmtools.fish")):
        comp = get_completion_class(shell)(cli, {}, "llmtools", "_LLMTOOLS_COMPLETE")
        files[os.path.join(comp_dir, filename)] = comp.source()
    for path, text in files.items():
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        written.append(os.path.relpath(path, out))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=ROOT, help="folder to write man/ and completions/ under")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
