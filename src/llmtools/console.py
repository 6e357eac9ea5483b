"""Everything for people goes to stderr: summaries, progress, warnings.

Rich is used only when stderr is a TTY; otherwise a summary is one plain line, printed only
with `-v`. `-q` silences all of it. stdout is never touched here.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Mapping


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def show_summary(
    command: str,
    title: str,
    rows: Mapping[str, Any],
    quiet: bool = False,
    verbose: bool = False,
) -> None:
    """A summary table on a TTY; one `key=value` line with -v when stderr is not a TTY."""
    if quiet:
        return
    if stderr_is_tty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{command}: {title}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in rows.items():
            table.add_row(str(key), _fmt(value))
        Console(stderr=True).print(table)
    elif verbose:
        parts = ", ".join(f"{k}={_fmt(v)}" for k, v in rows.items())
        sys.stderr.write(f"{command}: {title}: {parts}\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextmanager
def progress(description: str, total: int | None = None, quiet: bool = False) -> Iterator[Any]:
    """A rich progress bar on a TTY; a no-op object elsewhere. Yields `advance(n=1)`."""
    if quiet or not stderr_is_tty():
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=__import__("rich.console").console.Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
