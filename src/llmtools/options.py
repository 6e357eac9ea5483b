"""Option bundles every command shares, so the same flag means the same thing everywhere."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from llmtools.io import ON_ERROR_CHOICES, Job


class IOConfig:
    """The shared input/output options, collected into one object for the command body."""

    def __init__(self, command: str, **kw: Any):
        self.command = command
        self.inputs: tuple[str, ...] = kw.pop("inputs", ()) or ("-",)
        self.output: str | None = kw.pop("output", None)
        self.field: str = kw.pop("field", None) or "text"
        self.on_error: str = kw.pop("on_error", "fail")
        self.rejects: str | None = kw.pop("rejects", None)
        self.unbuffered: bool = kw.pop("unbuffered", False)
        self.quiet: bool = kw.pop("quiet", False)
        self.verbose: bool = kw.pop("verbose", False)
        self.input_format: str = kw.pop("input_format", None) or "auto"
        self.csv_types: tuple[str, ...] = kw.pop("csv_types", ()) or ()
        self.txt_paragraphs: bool = kw.pop("txt_paragraphs", False)
        self.row_group_size: int | None = kw.pop("row_group_size", None)
        self.schema_path: str | None = kw.pop("schema", None)
        self._schema: Any = None
        self._names: dict[str, str] = {}  # stdin kept in a temp file by check_first()

    @property
    def schema(self) -> Any:
        """The --schema check (llmtools.schema.SchemaCheck), loaded once; None without --schema.
        A missing or invalid schema is exit 2, before any input is read."""
        if self.schema_path and self._schema is None:
            from llmtools.schema import load

            self._schema = load(self.schema_path)
        return self._schema

    def read_options(self) -> Any:
        """formats.ReadOptions for the inputs (checks --csv-types: a bad one is exit 2)."""
        from llmtools.formats import ReadOptions, parse_csv_types

        return ReadOptions(format=self.input_format, csv_types=parse_csv_types(self.csv_types),
                           txt_paragraphs=self.txt_paragraphs, text_field=self.field)

    def check_first(self) -> None:
        """Read every input once now, checking --schema (and that each record parses): bad data
        fails the run before a command loads any model. stdin is kept in a temp file for the
        real pass (the job that reads it deletes it)."""
        job = self.job(field=None, output=None, rejects=None, on_error="fail")
        job.check_first()
        self.inputs, self._names = tuple(job.inputs), dict(job._names)

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
            read_options=self.read_options(),
            row_group_size=self.row_group_size,
            schema=self.schema,
        )
        kw.update(overrides)
        job = Job(**kw)
        job._names.update(self._names)
        return job


_IO_KEYS = ("inputs", "output", "field", "on_error", "rejects", "unbuffered", "quiet", "verbose", "input_format",
            "csv_types", "txt_paragraphs", "row_group_size", "schema")

# = formats.FORMAT_CHOICES (a test checks), spelled here so --help imports nothing more
INPUT_FORMATS = ("auto", "jsonl", "parquet", "arrow", "csv", "tsv", "txt")


def io_options(
    field: bool = True,
    field_default: str = "text",
    field_help: str = "Text field to read; a dotted path reaches nested fields (`meta.body`).",
    output_help: str = "Write records to FILE (atomically: temp file, then rename) instead of stdout.",
    output_metavar: str = "FILE",
    inputs: bool = True,
    format_flag: bool = True,
    table_output: bool = True,
    schema: bool = False,
) -> Callable:
    """Add FILES..., -o, --field, --on-error, --rejects, --unbuffered, -q, -v and the input-format
    options (--format, also spelled --input-format; only the latter with `format_flag=False`,
    for a command whose --format means something else), and --row-group-size when -o writes
    records (`table_output`), and --schema FILE with `schema`; pass `io: IOConfig`."""

    def decorator(fn: Callable) -> Callable:
        opts = [
            click.option("-o", "--output", metavar=output_metavar, help=output_help),
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
        if inputs:
            names = ("--format", "--input-format") if format_flag else ("--input-format",)
            opts[1:1] = [
                click.option(*names, "input_format", type=click.Choice(INPUT_FORMATS), default="auto", show_default=True,
                             help="Input format; auto goes by extension (.jsonl .parquet .arrow .csv .tsv .txt, a "
                                  "`datasets` folder; .gz/.zst around any) and reads stdin as JSONL."),
                click.option("--csv-types", "csv_types", multiple=True, metavar="COL=TYPE",
                             help="CSV/TSV input: parse these columns as `number` or `json` (comma list, repeatable); "
                                  "other values stay strings, an empty cell of a typed column is null."),
                click.option("--txt-paragraphs", "txt_paragraphs", is_flag=True,
                             help=".txt input: one record per blank-line-separated paragraph, not per line."),
            ]
        if schema:
            opts.append(click.option(
                "--schema", "schema", metavar="FILE", type=click.Path(dir_okay=False),
                help="Check every record against this JSON Schema (draft 2020-12 unless its $schema says; JSON or "
                     "YAML): a record that does not fit is bad input (reason `schema`, with the failing path and "
                     "message), handled by --on-error."))
        if table_output:
            opts.insert(1, click.option(
                "--row-group-size", "row_group_size", type=click.IntRange(1), default=65536, show_default=True, metavar="N",
                help="-o FILE.parquet: rows per row group (zstd-compressed). -o FILE.csv/.tsv writes CSV/TSV; "
                     "other names and stdout get JSONL."))
        if field:
            opts.insert(0, click.option("--field", default=field_default, show_default=True, metavar="PATH", help=field_help))
        if inputs:
            opts.insert(0, click.argument("inputs", nargs=-1, type=click.Path(allow_dash=True), metavar="[FILES]..."))

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


class ModelConfig:
    """The shared model options, collected: which model (`ref`) and how to load it."""

    def __init__(self, ref: str | None, api_key: str | None = None, trust_pickle: bool = False,
                 backend: str | None = None, given: bool = False):
        self.ref = ref
        self.api_key = api_key
        self.trust_pickle = trust_pickle
        self.backend = None if backend == "auto" else backend
        self.given = given  # the reference was on the command line (not the default)

    @property
    def is_url(self) -> bool:
        from llmtools.models.refs import is_url

        return bool(self.ref) and is_url(str(self.ref))

    def load(self, ref: str | None = None, **opts: Any) -> Any:
        """Load `ref` (default: this reference) with these options; see llmtools.models.load_model."""
        from llmtools.models import load_model

        return load_model(ref or self.ref, backend=self.backend, api_key=self.api_key,
                          trust_pickle=self.trust_pickle, **opts)


MODEL_HELP = "A Hugging Face directory, a .gguf file, an http(s)://host/v1 endpoint, or a registry name (see `llmtools models`)."
_DEFAULT = object()


def model_options(
    model: str | None = "--model",
    *,
    dest: str = "model_ref",
    default: Any = _DEFAULT,
    required: bool = False,
    help: str = MODEL_HELP,
    api_key: str | None = "--api-key",
    api_key_env: tuple[str, ...] | None = None,
    trust_pickle: bool = True,
    backend: bool = False,
) -> Callable:
    """Add the model options; pass `model: ModelConfig`.

    `model` is the option that names the model (`--model` also gets `-m`), an argument's metavar
    (`MODEL`), or None; `default` is registry.DEFAULT_MODEL unless given. `api_key` is that
    option's name (or None for none), read from `api_key_env` (default: llmtools.models'
    API_KEY_ENV) when not given; `trust_pickle` adds --trust-pickle; `backend` adds --backend.
    """
    from llmtools.models.loading import API_KEY_ENV, BACKEND_CHOICES
    from llmtools.models.registry import DEFAULT_MODEL

    default = DEFAULT_MODEL if default is _DEFAULT else default
    env = API_KEY_ENV if api_key_env is None else api_key_env
    names = [dest, "model_api_key", "trust_pickle", "backend"]
    opts: list[Callable] = []
    if model is not None and model.startswith("--"):
        flags = ["-m", model] if model == "--model" else [model]
        opts.append(click.option(*flags, dest, default=default, required=required, show_default=bool(default),
                                 metavar="MODEL", help=help))
    elif model is not None:
        opts.append(click.argument(dest, required=required, default=None if required else default, metavar=model))
    if api_key is not None:
        opts.append(click.option(api_key, "model_api_key", metavar="KEY", default=lambda: _env_api_key(env),
                                 show_default=" or ".join(f"${name}" for name in env),
                                 help="API key for an http(s) model endpoint."))
    if trust_pickle:
        opts.append(click.option("--trust-pickle", is_flag=True,
                                 help="Allow loading pickle `.bin` weights (they can run arbitrary code when loaded)."))
    if backend:
        opts.append(click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
                                 help="Model backend; auto picks llama.cpp for a .gguf file or registry name, torch "
                                      "for a directory, http for a URL."))

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from click.core import ParameterSource

            ctx = click.get_current_context()
            got = {k: kwargs.pop(k) for k in names if k in kwargs}
            given = ctx.get_parameter_source(dest) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
            kwargs["model"] = ModelConfig(got.get(dest), got.get("model_api_key"), got.get("trust_pickle", False),
                                          got.get("backend"), given=given)
            return fn(*args, **kwargs)

        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return decorator


def _env_api_key(names: tuple[str, ...]) -> str | None:
    from llmtools.models.loading import api_key_from_env

    return api_key_from_env(names)


def engine_options(fn: Callable) -> Callable:
    """Add --engine, --master, --spark-conf, --compress; pass `engine: EngineConfig`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from llmtools.engines import EngineConfig

        kwargs["engine"] = EngineConfig(kwargs.pop("engine_name"), kwargs.pop("spark_master"),
                                        kwargs.pop("spark_conf"), kwargs.pop("compress"))
        return fn(*args, **kwargs)

    opts = [
        click.option("--engine", "engine_name", type=click.Choice(["local", "spark"]), default="local", show_default=True,
                     help="Where to run: this process, or Apache Spark (pip install 'llmtools[spark]'; needs Java 17+). "
                          "With spark, FILES are paths or globs Spark reads (local, hdfs://, s3a://, .gz), -o and "
                          "--rejects name folders of part files, and stdin/stdout are not used."),
        click.option("--master", "spark_master", metavar="URL", envvar="SPARK_MASTER", default="local[*]",
                     show_default="$SPARK_MASTER or local[*]",
                     help="--engine spark: the cluster (local[N], spark://HOST:PORT, yarn, k8s://...)."),
        click.option("--spark-conf", "spark_conf", multiple=True, metavar="KEY=VALUE",
                     help="--engine spark: a Spark setting, e.g. spark.executor.memory=4g (repeatable)."),
        click.option("--compress", is_flag=True, help="--engine spark: gzip the part files (part-NNNNN.jsonl.gz)."),
    ]
    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


_TRACK_KEYS = ("track", "track_required", "track_model")


def track_options(model_help: str | None = "Also log the model artifact (large).") -> Callable:
    """Add --track, --track-required and (unless `model_help` is None) --track-model; pass
    `track: tracking.TrackConfig`."""

    def decorator(fn: Callable) -> Callable:
        opts = [
            click.option("--track", "track", metavar="mlflow[:EXPERIMENT]", default=None,
                         show_default="mlflow when $MLFLOW_TRACKING_URI is set, else off",
                         help="Log params, metrics and artifacts to an MLflow run (server: $MLFLOW_TRACKING_URI; "
                              "experiment: EXPERIMENT, else $MLFLOW_EXPERIMENT_NAME, else llmtools-COMMAND). "
                              "`none` turns it off."),
            click.option("--track-required", is_flag=True,
                         help="Exit 1 before any work if the tracking server cannot be reached (default: warn and go on)."),
        ]
        if model_help is not None:
            opts.append(click.option("--track-model", is_flag=True, help=model_help))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from llmtools.tracking import TrackConfig

            got = {k: kwargs.pop(k) for k in _TRACK_KEYS if k in kwargs}
            kwargs["track"] = TrackConfig.parse(got.get("track"), required=got.get("track_required", False),
                                                log_model=got.get("track_model", False))
            return fn(*args, **kwargs)

        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return decorator
