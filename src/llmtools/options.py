"""Option bundles every command shares, so the same flag means the same thing everywhere."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import click

from llmtools.io import ON_ERROR_CHOICES, Job


class IOConfig:
    """The shared input/output options, collected into one object for the command body."""

    def __init__(self, command: str, **kw: Any):
        self.command = command
        self.inputs: tuple[str, ...] = kw.pop("inputs", ()) or ("-",)
        self.output: str | None = kw.pop("output", None)
        self.field: str | None = kw.pop("field", "text")
        self.on_error: str = kw.pop("on_error", "fail")
        self.rejects: str | None = kw.pop("rejects", None)
        self.unbuffered: bool = kw.pop("unbuffered", False)
        self.quiet: bool = kw.pop("quiet", False)
        self.verbose: bool = kw.pop("verbose", False)

    def job(self, **overrides: Any) -> Job:
        kw = dict(
            inputs=self.inputs,
            output=self.output,
            field=self.field,
            on_error=self.on_error,
            rejects=self.rejects,
            unbuffered=self.unbuffered,
            quiet=self.quiet,
            verbose=self.verbose,
            command=f"llmtools {self.command}",
        )
        kw.update(overrides)
        return Job(**kw)


_IO_KEYS = ("inputs", "output", "field", "on_error", "rejects", "unbuffered", "quiet", "verbose")


def io_options(
    field: bool = True,
    field_default: str = "text",
    field_help: str = "Text field to read; a dotted path reaches nested fields (`meta.body`).",
    output_help: str = "Write records to FILE (atomically: temp file, then rename) instead of stdout.",
    inputs: bool = True,
) -> Callable:
    """Add FILES..., -o, --field, --on-error, --rejects, --unbuffered, -q, -v; pass `io: IOConfig`."""

    def decorator(fn: Callable) -> Callable:
        opts = [
            click.option("-o", "--output", metavar="FILE", help=output_help),
            click.option(
                "--on-error",
                type=click.Choice(ON_ERROR_CHOICES),
                default="fail",
                show_default=True,
                help="On a bad input line: stop with exit 3, skip it, or keep it unchanged in the output.",
            ),
            click.option(
                "--rejects",
                metavar="FILE",
                help="Save every dropped or bad record here, unchanged under `record`, with its `reason`.",
            ),
            click.option("--unbuffered", is_flag=True, help="Flush after every record (automatic on a TTY)."),
            click.option("-q", "--quiet", is_flag=True, help="No summary, progress or warnings on stderr."),
            click.option("-v", "--verbose", is_flag=True, help="Print the summary on stderr even when it is not a TTY."),
        ]
        if field:
            opts.insert(0, click.option("--field", default=field_default, show_default=True, metavar="PATH", help=field_help))
        if inputs:
            opts.insert(0, click.argument("inputs", nargs=-1, type=click.Path(allow_dash=True, dir_okay=False), metavar="[FILES]..."))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            io_kw = {k: kwargs.pop(k) for k in _IO_KEYS if k in kwargs}
            kwargs["io"] = IOConfig(ctx.info_name or "llmtools", **io_kw)
            return fn(*args, **kwargs)

        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return decorator


def model_options(default: str | None = "smollm2", required: bool = False, flag: str = "--model") -> Callable:
    """Add -m/--model, --api-key and --trust-pickle; passes `model_ref`, `api_key`, `trust_pickle`."""

    def decorator(fn: Callable) -> Callable:
        fn = click.option(
            "--trust-pickle",
            is_flag=True,
            help="Allow loading pickle `.bin` weights (they can run arbitrary code when loaded).",
        )(fn)
        fn = click.option(
            "--api-key",
            metavar="KEY",
            default=lambda: os.environ.get("LLMTOOLS_API_KEY") or os.environ.get("OPENAI_API_KEY"),
            show_default="$LLMTOOLS_API_KEY or $OPENAI_API_KEY",
            help="API key for an http(s) model endpoint.",
        )(fn)
        fn = click.option(
            "-m",
            flag,
            "model_ref",
            default=default,
            required=required,
            show_default=bool(default),
            metavar="MODEL",
            help="A Hugging Face directory, a .gguf file, an http(s)://host/v1 endpoint, or a registry name (see `llmtools models`).",
        )(fn)
        return fn

    return decorator
