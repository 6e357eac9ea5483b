"""Experiment tracking: an MLflow run for `finetune`, `score` and `quantize`.

Tracking is on when MLFLOW_TRACKING_URI is set or `--track mlflow[:EXPERIMENT]` is given, and off
otherwise; mlflow is imported only when it is on, so start-up is unchanged. A run gets the resolved
options as params, the log records as metric histories (by step), and the manifest and summary as
artifacts; its id goes into the manifest, so files and the MLflow UI point at each other.

Calls to the server run on one background thread, in order: a slow or lost server never stalls
training. A server that cannot be reached at the start is one warning and no tracking, unless
`--track-required`, which makes it an error (exit 1) before any work is done.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

from llmtools import errors

BACKENDS = ("mlflow",)
ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
PARAM_MAX_CHARS = 6000  # MLflow's limit on a param value
BATCH_PARAMS = 100  # MLflow's limit on params in one log_batch call
BATCH_METRICS = 1000
# The first calls decide whether the server is there: fail fast instead of MLflow's default
# retries with backoff (minutes), unless the user set these themselves.
PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RUN_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
DRAIN_TIMEOUT_S = 120.0


@dataclass
class TrackConfig:
    """What `--track`, `--track-required` and `--track-model` (and the environment) asked for."""

    backend: str | None = None  # "mlflow", or None: no tracking
    experiment: str | None = None  # None: $MLFLOW_EXPERIMENT_NAME, else llmtools-COMMAND
    required: bool = False
    log_model: bool = False
    explicit: bool = False  # --track was given (not only the environment variable)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @classmethod
    def parse(cls, spec: str | None, *, required: bool = False, log_model: bool = False,
              environ: Mapping[str, str] | None = None) -> "TrackConfig":
        """`spec` is --track's value: mlflow, mlflow:EXPERIMENT, none, or None (then tracking is
        on exactly when MLFLOW_TRACKING_URI is set)."""
        env = os.environ if environ is None else environ
        backend: str | None
        experiment = None
        if spec is None:
            backend = "mlflow" if env.get(ENV_URI) else None
        else:
            name, _, experiment_part = spec.partition(":")
            name = name.strip().lower()
            if name in ("none", "off"):
                backend = None
            elif name in BACKENDS:
                backend = name
                experiment = experiment_part.strip() or None
            else:
                raise errors.UsageError(f"--track: unknown tracker {spec!r} (use mlflow, mlflow:EXPERIMENT or none)")
        if backend is None and (required or log_model):
            flag = "--track-required" if required else "--track-model"
            raise errors.UsageError(f"{flag} needs tracking: give --track mlflow or set {ENV_URI}")
        return cls(backend, experiment, required, log_model, explicit=spec is not None)


def safe_uri(uri: str | None) -> str | None:
    """The tracking URI without a password or token, fit for logs and manifests."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars stay as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else ("" if value is None else _compact(value))
    return text if len(text) <= PARAM_MAX_CHARS else text[: PARAM_MAX_CHARS - 3] + "..."


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        import json

        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return str(value)


def numeric_metrics(data: Mapping[str, Any], skip: tuple[str, ...] = ("step", "type")) -> dict[str, float]:
    """The finite numbers of a (flattened) record, as metrics; booleans and text are left out."""
    out = {}
    for key, value in flatten(data).items():
        if key in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class Run:
    """A run that records nothing: what every command gets when tracking is off."""

    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    log_model = False

    @property
    def active(self) -> bool:
        return False

    def info(self) -> dict | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_record(self, record: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, data: Any, name: str) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(status_for(exc))


def status_for(exc: BaseException | None) -> str:
    """The MLflow run status for how a command ended: a failed gate is a finished run."""
    if exc is None or isinstance(exc, errors.GateFailed):
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt) or getattr(exc, "exit_code", None) == errors.ExitCode.INTERRUPTED:
        return "KILLED"
    return "FAILED"


class MlflowRun(Run):
    """One MLflow run; every call is queued for a background thread that sends it."""

    def __init__(self, client: Any, run_id: str, experiment_id: str, experiment: str, tracking_uri: str,
                 warn: Callable[[str], None], log_model: bool = False, known_params: Mapping[str, str] | None = None):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.log_model = log_model
        self._warn = warn
        self._known_params = dict(known_params or {})
        self._queue: queue.Queue = queue.Queue()
        self._failed: str | None = None
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="llmtools-mlflow", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return self._failed is None and not self._finished

    def info(self) -> dict:
        return {"backend": "mlflow", "run_id": self.run_id, "experiment_id": self.experiment_id,
                "experiment": self.experiment, "tracking_uri": safe_uri(self.tracking_uri)}

    # -- what commands call: cheap, never blocking, never raising

    def log_params(self, params: Mapping[str, Any]) -> None:
        fresh = {}
        for key, value in flatten(params).items():
            text = param_value(value)
            if key in self._known_params:  # a resumed run keeps the values it started with
                continue
            self._known_params[key] = text
            fresh[key] = text
        if fresh:
            self._submit(self._send_params, fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if metrics:
            self._submit(self._send_metrics, dict(metrics), step, int(time.time() * 1000))

    def log_record(self, record: Mapping[str, Any]) -> None:
        """A JSONL log record ({"step": N, "loss": ...}): its numbers become metric points at step N."""
        step = record.get("step")
        self.log_metrics(numeric_metrics(record), int(step) if isinstance(step, (int, float)) else None)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self._submit(self._send_tags, {k: param_value(v) for k, v in tags.items()})

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._submit(self._send_artifact, path, artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        self._submit(self.client.log_dict, self.run_id, data, name)

    def finish(self, status: str = "FINISHED") -> None:
        """Send everything queued (waiting at most DRAIN_TIMEOUT_S), then close the run."""
        if self._finished:
            return
        self._submit(self.client.set_terminated, self.run_id, status)
        self._finished = True
        self._queue.put(None)
        self._thread.join(DRAIN_TIMEOUT_S)
        if self._thread.is_alive():
            self._warn(f"tracking: MLflow at {safe_uri(self.tracking_uri)} is slow; "
                       f"gave up waiting after {DRAIN_TIMEOUT_S:.0f}s with {self._queue.qsize()} call(s) unsent")

    # -- the background thread

    def _submit(self, fn: Callable, *args: Any) -> None:
        if self._failed is None and not self._finished:
            self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._failed is not None:
                continue
            fn, args = item
            try:
                fn(*args)
            except Exception as exc:  # the run goes on; tracking stops, with one warning
                self._failed = one_line(exc)
                self._warn(f"tracking: lost MLflow at {safe_uri(self.tracking_uri)} ({self._failed}); "
                           "the run goes on without tracking")

    def _send_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = list(params.items())
        for i in range(0, len(items), BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + BATCH_PARAMS]])

    def _send_metrics(self, metrics: dict[str, float], step: int | None, timestamp: int) -> None:
        from mlflow.entities import Metric

        items = list(metrics.items())
        for i in range(0, len(items), BATCH_METRICS):
            batch = [Metric(k, v, timestamp, step or 0) for k, v in items[i : i + BATCH_METRICS]]
            self.client.log_batch(self.run_id, metrics=batch)

    def _send_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _send_artifact(self, path: str, artifact_path: str | None) -> None:
        if os.path.isdir(path):
            self.client.log_artifacts(self.run_id, path, artifact_path)
        else:
            self.client.log_artifact(self.run_id, path, artifact_path)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def _env_defaults(values: Mapping[str, str]) -> Iterator[None]:
    """Set these environment variables for a while, unless the user set them."""
    added = [k for k in values if k not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def start_run(config: TrackConfig | None, command: str, *, warn: Callable[[str], None], run_name: str | None = None,
              resume_run_id: str | None = None, tags: Mapping[str, Any] | None = None,
              notice: Callable[[str], None] | None = None) -> Run:
    """Open a run for `command` (or reopen `resume_run_id`); a Run that records nothing when
    tracking is off or, without --track-required, when the server cannot be reached. `notice`
    (default: `warn`) gets one line naming the run and where to see it."""
    if config is None or not config.enabled:
        return Run()
    notice = notice or warn
    try:
        import mlflow  # noqa: F401  (the import is the check)
    except ImportError as exc:
        if config.explicit or config.required:
            raise errors.MissingDependency(f"--track mlflow needs mlflow ({exc}). Install it with: pip install 'llmtools[track]'") from None
        warn(f"tracking: {ENV_URI} is set but mlflow is not installed (pip install 'llmtools[track]'); going on without tracking")
        return Run()
    from mlflow import MlflowClient
    from mlflow.tracking import get_tracking_uri

    # stdout carries records only: MLflow would print the run's URL there when a run ends.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    uri = get_tracking_uri()
    experiment = config.experiment or os.environ.get(ENV_EXPERIMENT) or f"llmtools-{command}"
    try:
        with _env_defaults(PROBE_ENV):
            client = MlflowClient(tracking_uri=uri)
            known: dict[str, str] = {}
            old = _existing_run(client, resume_run_id, warn) if resume_run_id else None
            if old is not None:
                experiment_id = old.info.experiment_id
                known = dict(old.data.params)
                client.update_run(old.info.run_id, status="RUNNING")
                run_id = old.info.run_id
            else:
                resume_run_id = None
                experiment_id = _experiment_id(client, experiment)
                base_tags = {"llmtools.command": command, "mlflow.source.name": f"llmtools {command}",
                             "mlflow.source.type": "LOCAL", **{k: param_value(v) for k, v in (tags or {}).items()}}
                run_id = client.create_run(experiment_id, tags=base_tags, run_name=run_name).info.run_id
    except Exception as exc:
        message = f"tracking: cannot reach MLflow at {safe_uri(uri)}: {one_line(exc)}"
        if config.required:
            raise errors.RuntimeFailure(f"{message} (--track-required)") from None
        warn(f"{message}; going on without tracking")
        return Run()
    for key, value in RUN_ENV.items():
        os.environ.setdefault(key, value)
    if (uri or "").startswith(("http://", "https://")):
        where = f"{safe_uri(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    else:
        where = f"{safe_uri(uri)} (experiment {experiment_id})"
    notice(f"tracking: {'continuing' if resume_run_id else 'logging to'} MLflow run {run_id}: {where}")
    return MlflowRun(client, run_id, experiment_id, experiment, uri, warn, log_model=config.log_model, known_params=known)


def _existing_run(client: Any, run_id: str, warn: Callable[[str], None]) -> Any:
    """The run to continue, or None (with a warning) when this server does not have it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        warn(f"tracking: MLflow run {run_id} of the interrupted run is not on this server; starting a new run")
        return None


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
