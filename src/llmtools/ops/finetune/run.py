"""One `llmtools finetune` run: read the records on rank 0, share them, train everywhere, publish.

Under torchrun or `accelerate launch` every process trains (DDP), and only rank 0 reads the
input, writes log records and writes the model. If rank 0 cannot read the input, it tells the
other processes before it fails, so that none waits forever for the records.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from llmtools import errors, provenance, tracking
from llmtools.io import Job, read_jsonl, source_name
from llmtools.ops.finetune import checkpoints as ckpt
from llmtools.ops.finetune import dataset as data
from llmtools.ops.finetune.distributed import Dist, dist_close, dist_from_env
from llmtools.ops.finetune.settings import Settings
from llmtools.ops.finetune.training import train


def finetune(
    job: Job,
    settings: Settings,
    fields: data.Fields,
    output: str,
    *,
    eval_file: str | None = None,
    eval_fraction: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    track: tracking.TrackConfig | None = None,
) -> dict | None:
    """Train on `job`'s records and write the model to `output`. `job` (its `validate` a
    dataset.RecordValidator) is opened on rank 0 only, and gets the log records and the final
    one; the final record is returned on rank 0, None on the other ranks. With `track`, rank 0
    logs the run to MLflow (a resumed run continues the MLflow run it started)."""
    if eval_file and eval_fraction is not None:
        raise errors.UsageError("give --eval-file or --eval-fraction, not both")
    dist = dist_from_env()
    settings.world_size = dist.world
    try:
        if not dist.main:
            _train(_shared(dist, None), None, settings, fields, output, dist, resume, overwrite, tracking.Run())
            return None
        with job:
            try:
                payload = read_inputs(job, fields, settings, eval_file, eval_fraction)
                run = _start_tracking(track, job, settings, output, resume, payload)
            except errors.LLMToolsError as exc:  # tell the other processes, so none waits forever
                dist.broadcast({"error": exc.message, "code": exc.exit_code})
                raise
            with run:
                final = _train(_shared(dist, payload), job, settings, fields, output, dist, resume, overwrite, run)
                job.write(final)
        return final
    finally:
        dist_close(dist)


def _shared(dist: Dist, payload: dict | None) -> dict:
    """Rank 0's payload, on every rank (or rank 0's error)."""
    payload = dist.broadcast(payload)
    if "error" in payload:
        raise errors.LLMToolsError(f"rank 0 could not read the input: {payload['error']}", payload["code"])
    return payload


TRACKING_FILE = "tracking.json"  # in DIR.partial: the MLflow run that --resume continues


def _start_tracking(track: tracking.TrackConfig | None, job: Job, settings: Settings, output: str, resume: bool,
                    payload: dict) -> tracking.Run:
    """The MLflow run of this fine-tune: the interrupted run's own with --resume, else a new one."""
    if track is None or not track.enabled:
        return tracking.Run()
    previous = None
    if resume and ckpt.latest_checkpoint(output) is not None:
        previous = (ckpt.read_json(os.path.join(ckpt.work_dir(output), TRACKING_FILE)) or {}).get("run_id")
    tags = {"llmtools.output": os.path.abspath(output), "llmtools.base": settings.base,
            "llmtools.train_sha256": payload["train"]["sha256"]}
    return tracking.start_run(track, "finetune", warn=job.warn, run_name=os.path.basename(os.path.abspath(output)),
                              resume_run_id=previous, tags=tags)


def _train(payload: dict, job: Job | None, settings: Settings, fields: data.Fields, output: str, dist: Dist,
           resume: bool, overwrite: bool, run: tracking.Run) -> dict:
    return train_payload(payload, settings, fields, output, dist, run, job=job, resume=resume, overwrite=overwrite)


def train_payload(payload: dict, settings: Settings, fields: data.Fields, output: str, dist: Dist, run: tracking.Run, *,
                  job: Job | None = None, resume: bool = False, overwrite: bool = False,
                  on_record: Callable[[dict], None] | None = None, warn: Callable[[str], None] | None = None,
                  initial_eval: bool = True) -> dict:
    """Train on read_inputs' payload and write the model to `output`. Log records go to `job`
    (when given), to the tracking run and to `on_record` (which may raise to stop the run)."""
    from llmtools.models import hf_dir, identity_of

    base_dir = hf_dir(settings.base)
    teacher_dir = hf_dir(settings.teacher) if settings.teacher else None
    run_info = {"train_sha256": payload["train"]["sha256"], "eval_sha256": payload["eval"]["sha256"] if payload["eval"] else None}

    def on_start(run_settings: dict) -> None:
        base_id = identity_of(settings.base).to_dict()
        run.log_params({**run_settings, "base_model": base_id or {"name": settings.base}})
        if run.active:
            ckpt.write_json(os.path.join(ckpt.work_dir(output), TRACKING_FILE), run.info())

    def manifest(run_settings: dict, final: dict) -> dict:
        base_id = identity_of(settings.base).to_dict()
        return provenance.build_manifest(
            "finetune",
            inputs={"train": payload["train"], "eval": payload["eval"]},
            base_model=base_id,
            params=run_settings,
            metrics={k: v for k, v in final.items() if k not in ("type", "output", "artifacts")},
            extra={"teacher": identity_of(settings.teacher).to_dict() if settings.teacher else None,
                   "format": payload["format"], "parent": base_id.get("name") if base_id else None,
                   **({"tracking": run.info()} if run.active else {})},
        )

    if resume and job is not None and ckpt.latest_checkpoint(output) is None:
        job.warn(f"--resume: no checkpoint in {ckpt.checkpoints_dir(output)}; starting from scratch")

    def emit(record: dict) -> None:
        if job is not None:
            job.write(record)
        run.log_record(record)
        if on_record is not None:
            on_record(record)

    if job is not None:
        reject: Callable | None = lambda rec, reason: job.reject(rec, reason)
    elif warn is not None:
        reject = lambda rec, reason: warn(f"dropped a record: {reason}")
    else:
        reject = None
    with (job.progress("finetune steps") if job is not None else _no_progress()) as advance:
        final = train(
            payload["train_records"], payload["eval_records"], payload["format"], settings, base_dir, output,
            fields=fields, teacher_dir=teacher_dir, dist=dist, resume=resume, overwrite=overwrite, run_info=run_info,
            emit=emit, on_drop=reject, progress=advance, manifest_fn=manifest, on_start=on_start, initial_eval=initial_eval,
        )
    if run.active:
        _log_final(run, final, settings)
    return final


def _log_final(run: tracking.Run, final: dict, settings: Settings) -> None:
    """The run's closing figures and artifacts; the final record names the run."""
    final["tracking"] = run.info()
    totals = {k: final[k] for k in ("train_loss", "tokens_seen", "runtime_s", "train_examples", "train_rows", "eval_examples") if k in final}
    run.log_metrics(tracking.numeric_metrics(totals), step=final["step"])
    arts = final.get("artifacts") or {}
    if arts.get("manifest"):
        run.log_artifact(arts["manifest"])
    run.log_dict(final, "final.json")
    if run.log_model:
        kind = "adapter" if settings.adapter_only else "model"
        run.log_artifact(arts[kind], kind)


def _no_progress() -> Any:
    import contextlib

    return contextlib.nullcontext(lambda n=1: None)


def read_inputs(job: Job, fields: data.Fields, settings: Settings, eval_file: str | None, eval_fraction: float | None) -> dict:
    """Every training record (held in memory: they are shuffled each epoch), the eval records
    (from `eval_file`, or split off by `eval_fraction`), and where each set came from."""
    records = list(job.records())
    validator = job.validate
    if not records:
        names = ", ".join(source_name(p) for p in job.inputs)
        if job.counts["bad"]:  # every line was bad and skipped: bad input, as under keep below
            raise errors.BadInputError(f"no valid training record in {names} ({job.counts['bad']} bad lines skipped)")
        raise errors.UsageError(f"no training records in {names}: the input is empty")
    fmt = validator.fmt or "text"
    if validator.fmt is None:  # only --on-error keep can get here with no valid record
        raise errors.BadInputError("no valid training record in the input")
    eval_split = None
    if eval_file:
        eval_records = []
        for i, rec in enumerate(read_jsonl(eval_file), 1):
            reason = data.check_record(rec, fmt, fields)
            problem = job.schema(rec) if reason is None and job.schema is not None else None
            if problem is not None:
                reason = f"schema: {problem[0] or 'the record'}: {problem[1]}"
            if reason:
                raise errors.BadInputError(reason, where=f"{eval_file}:{i}")
            eval_records.append(rec)
    elif eval_fraction is not None:
        records, eval_records = data.split_eval(records, eval_fraction, settings.seed)
        eval_split = {"from": "train input", "fraction": eval_fraction, "seed": settings.seed}
    else:
        eval_records = []
    bad = [r for r in records if data.check_record(r, fmt, fields) is not None]
    if bad:  # kept under --on-error keep: still cannot be trained on, so drop them (to --rejects)
        for rec in bad:
            job.reject(rec, data.check_record(rec, fmt, fields) or "bad record")
        records = [r for r in records if data.check_record(r, fmt, fields) is None]
    return {
        "format": fmt,
        "train_records": records,
        "eval_records": eval_records,
        "train": _data_info(records, list(job.inputs)),
        "eval": dict(_data_info(eval_records, [eval_file] if eval_file else []), split=eval_split) if eval_records else None,
    }


def _data_info(records: list[dict], paths: list[str]) -> dict:
    h = provenance.HashingReader()
    for rec in records:
        h.add(rec)
    files = {p: provenance.sha256_file(p) for p in paths if p != "-" and os.path.isfile(p)}
    return {"sha256": h.hexdigest, "records": h.count, "files": files, "sources": [p if p != "-" else "<stdin>" for p in paths]}
