"""`finetune --search SPACE --trials N`: hyperparameter search with Optuna, each trial a real fine-tune.

    space = parse_space("lr=1e-5..1e-3:log lora_r=8,16,32 batch_size=2,4 epochs=1..3")
    search(job, settings, fields, output, SearchConfig(space, trials=8), eval_file=...) -> final record

Optuna does the searching: a seeded TPE sampler proposes each trial's settings, its median
pruner stops a trial whose intermediate eval perplexity is worse than the median of earlier
trials at the same step, and its storage (`--search-storage sqlite:///x.db` or a PostgreSQL URL)
lets several processes or machines work on one study. optuna is imported only here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from llmtools import errors, tracking
from llmtools.io import Job, get_field
from llmtools.ops.finetune import checkpoints as ckpt
from llmtools.ops.finetune import dataset as data
from llmtools.ops.finetune.distributed import Dist, dist_from_env
from llmtools.ops.finetune.settings import Settings

# What a search may vary: the hyperparameters of training itself.
TUNABLE = (
    "lr", "epochs", "max_steps", "batch_size", "grad_accum", "lora_r", "lora_alpha", "lora_dropout", "target_modules",
    "method", "warmup_steps", "warmup_ratio", "scheduler", "weight_decay", "max_grad_norm", "max_seq_len", "packing",
    "loss_on", "distill_weight", "distill_temperature",
)
INT_SETTINGS = {"epochs", "max_steps", "batch_size", "grad_accum", "lora_r", "warmup_steps", "max_seq_len"}
EVAL_OBJECTIVES = ("eval_perplexity", "eval_loss")
LOWER_IS_BETTER = {"eval_perplexity", "eval_loss", "perplexity", "ter"}
PRUNER_STARTUP_TRIALS = 2  # the median pruner waits for this many finished trials


@dataclass
class Dim:
    """One searched setting: a float or int range (optionally log-scaled), or a list of choices."""

    name: str
    kind: str  # "float" | "int" | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        if self.kind == "choice":
            return ",".join(str(c) for c in self.choices)
        return f"{self.low}..{self.high}{':log' if self.log else ''}"


def parse_space(spec: str) -> list[Dim]:
    """SPACE: a YAML file (`lr: 1e-5..1e-3:log`, `lora_r: [8, 16, 32]`) or an inline spec of
    NAME=VALUES separated by spaces or semicolons (`lr=1e-5..1e-3:log lora_r=8,16,32`)."""
    spec = spec.strip()
    if not spec:
        raise errors.UsageError("--search: the search space is empty")
    entries: list[tuple[Any, Any]] = []
    if os.path.isfile(spec) or spec.endswith((".yaml", ".yml", ".json")):
        entries = list(_read_space_file(spec).items())
    else:
        for part in spec.replace(";", " ").split():
            name, sep, value = part.partition("=")
            if not sep or not name or not value:
                raise errors.UsageError(f"--search: expected NAME=VALUES, got {part!r} (e.g. lr=1e-5..1e-3:log lora_r=8,16)")
            entries.append((name, value))
    dims = [_dim(str(name), value) for name, value in entries]
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise errors.UsageError("--search: a setting is named twice")
    for dim in dims:
        _check_dim(dim)
    return dims


def _read_space_file(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise errors.UsageError(f"--search: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise errors.UsageError(f"--search: {path}: {' '.join(str(exc).split())}") from None
    if isinstance(loaded.get("search") if isinstance(loaded, dict) else None, dict):
        loaded = loaded["search"]
    if not isinstance(loaded, dict) or not loaded:
        raise errors.UsageError(f"--search: {path}: expected a mapping of setting names to ranges or choices")
    return loaded


def _dim(raw_name: str, value: Any) -> Dim:
    name = raw_name.strip().replace("-", "_")
    if name not in TUNABLE:
        raise errors.UsageError(f"--search: {raw_name!r} cannot be searched (searchable: {', '.join(TUNABLE)})")
    if isinstance(value, (list, tuple)):
        return Dim(name, "choice", choices=tuple(_coerce(name, v) for v in value))
    if isinstance(value, dict):
        try:
            low, high = value["low"], value["high"]
        except KeyError:
            raise errors.UsageError(f"--search: {name}: a range needs low and high") from None
        return _range(name, str(low), str(high), bool(value.get("log", False)))
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return Dim(name, "choice", choices=(_coerce(name, value),))
    text = str(value).strip()
    if ".." in text:
        body, _, option = text.partition(":")
        low, _, high = body.partition("..")
        if option not in ("", "log"):
            raise errors.UsageError(f"--search: {name}: unknown range option {option!r} (only :log)")
        return _range(name, low, high, option == "log")
    return Dim(name, "choice", choices=tuple(_coerce(name, v.strip()) for v in text.split(",") if v.strip()))


def _range(name: str, low_text: str, high_text: str, log: bool) -> Dim:
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise errors.UsageError(f"--search: {name}: not a numeric range: {low_text}..{high_text}") from None
    if not low < high:
        raise errors.UsageError(f"--search: {name}: the range must go from low to high, got {low_text}..{high_text}")
    if log and low <= 0:
        raise errors.UsageError(f"--search: {name}: a log range must be above 0")
    if name in INT_SETTINGS:
        if low != int(low) or high != int(high):
            raise errors.UsageError(f"--search: {name} takes whole numbers, got {low_text}..{high_text}")
        return Dim(name, "int", int(low), int(high), log)
    return Dim(name, "float", low, high, log)


def _coerce(name: str, value: Any) -> Any:
    """A choice as the setting's own type: lora_r=8 is 8, packing=true is True, scheduler=cosine a string."""
    default = getattr(Settings(), name)
    if isinstance(value, str):
        text = value.strip()
        if isinstance(default, bool) or name == "packing":
            if text.lower() in ("true", "yes", "1", "on"):
                return True
            if text.lower() in ("false", "no", "0", "off"):
                return False
            raise errors.UsageError(f"--search: {name}: not a boolean: {text!r}")
        if name in INT_SETTINGS:
            try:
                return int(text)
            except ValueError:
                raise errors.UsageError(f"--search: {name} takes whole numbers, got {text!r}") from None
        if isinstance(default, float) or name == "lr":
            try:
                return float(text)
            except ValueError:
                raise errors.UsageError(f"--search: {name}: not a number: {text!r}") from None
        return text
    return value


def _check_dim(dim: Dim) -> None:
    """Each end of a range and each choice must be a valid setting on its own."""
    values = list(dim.choices) if dim.kind == "choice" else [dim.low, dim.high]
    if not values:
        raise errors.UsageError(f"--search: {dim.name}: no values")
    for value in values:
        trial = Settings(**{dim.name: value})
        if dim.name == "adapter_only":
            continue
        try:
            trial.check()
        except errors.UsageError as exc:
            raise errors.UsageError(f"--search: {dim.name}={value}: {exc.message}") from None


@dataclass
class SearchConfig:
    space: list[Dim]
    trials: int = 10
    storage: str | None = None  # None: in memory (one process)
    study_name: str | None = None
    metric: str = "eval_perplexity"
    best_config: str | None = None  # default: OUTPUT.best.yaml
    track: tracking.TrackConfig | None = None
    max_new_tokens: int = 64  # for a score metric: the longest generated answer
    extra: dict = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    @property
    def prunes(self) -> bool:
        """Intermediate points are eval perplexity/loss: they can prune only an objective of those."""
        return self.metric in EVAL_OBJECTIVES


def search_root(output: str) -> str:
    return os.path.abspath(output).rstrip(os.sep) + ".search"


def search(job: Job, settings: Settings, fields: data.Fields, output: str, cfg: SearchConfig, *,
           eval_file: str | None = None, eval_fraction: float | None = None, overwrite: bool = False) -> dict:
    """Run this process's share of the study's trials (streamed to `job` as JSONL), then write the
    best trial's settings as a config file and its model to `output`. Returns the final record."""
    from llmtools.ops.finetune.run import read_inputs

    optuna = errors.require("optuna", "track", "finetune --search")
    if cfg.trials < 1:
        raise errors.UsageError("--trials must be at least 1")
    if not (eval_file or eval_fraction is not None):
        raise errors.UsageError("--search needs held-out data to score trials: give --eval-file or --eval-fraction")
    if eval_file and eval_fraction is not None:
        raise errors.UsageError("give --eval-file or --eval-fraction, not both")
    dist = dist_from_env()
    if dist.enabled:
        raise errors.UsageError("--search runs its trials one after another; for several processes, start each "
                                "with the same --search-storage and --study-name instead of torchrun")
    if os.path.exists(output) and not overwrite:
        raise errors.UsageError(f"{output} already exists; pass --overwrite to replace it")
    if cfg.metric not in EVAL_OBJECTIVES:
        _check_score_metric(cfg.metric)
    if settings.eval_every is None:
        settings = dataclasses.replace(settings, eval_every=settings.log_every)  # the pruner's intermediate points

    with job:
        payload = read_inputs(job, fields, settings, eval_file, eval_fraction)
        if cfg.metric not in EVAL_OBJECTIVES and payload["format"] == "text":
            raise errors.UsageError(f"--search-metric {cfg.metric}: needs prompt/completion or chat records "
                                    "(a prediction to score); plain text records can use eval_perplexity")
        study = _study(optuna, cfg, settings, output)
        root = search_root(output)
        os.makedirs(root, exist_ok=True)
        parent = tracking.start_run(cfg.track, "finetune", warn=job.warn, run_name=f"search {os.path.basename(root)}",
                                    tags={"llmtools.search": study.study_name})
        with parent:
            parent.log_params({"search.space": {d.name: d.describe() for d in cfg.space}, "search.trials": cfg.trials,
                               "search.metric": cfg.metric, "search.direction": cfg.direction,
                               "search.study": study.study_name, "search.seed": settings.seed})
            mine = _optimize(optuna, study, cfg, payload, settings, fields, root, job, parent)
            final = _finish(optuna, study, cfg, settings, output, overwrite, mine, job)
            parent.log_metrics({"best_value": final["best"]["value"]} if final.get("best") else {})
            if parent.active:
                final["tracking"] = parent.info()
        job.write(final)
    return final


def _check_score_metric(metric: str) -> None:
    """A score metric to optimize: one text metric of `llmtools score`, by its summary name."""
    from llmtools.ops.score import ScoreConfig, parse_metrics

    try:
        parsed = parse_metrics([metric])
    except errors.UsageError as exc:
        raise errors.UsageError(f"--search-metric: {exc.message}, eval_perplexity, eval_loss") from None
    if parsed != [metric] or not ScoreConfig(metrics=parsed).uses_text_metrics or metric == "embedding_similarity":
        raise errors.UsageError(f"--search-metric {metric}: name one text metric of `llmtools score` as its summary "
                                "names it (rougeL, chrf, bleu, ter, exact_match, ...), or eval_perplexity / eval_loss")


def _study(optuna: Any, cfg: SearchConfig, settings: Settings, output: str) -> Any:
    import warnings

    # Our trial records say what Optuna's log would; a failed trial is our one-line error, not its traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # One process: --seed decides every proposal. Processes sharing a study each seed from
    # --seed and their pid, or they would all propose the same first trials.
    seed = settings.seed if cfg.storage is None else (settings.seed * 1_000_003 + os.getpid()) % 2**32
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0)
              if cfg.prunes else optuna.pruners.NopPruner())
    name = cfg.study_name or f"llmtools-finetune-{os.path.basename(os.path.abspath(output))}"
    for attempt in range(4):
        try:
            study = optuna.create_study(study_name=name, storage=cfg.storage, sampler=sampler, pruner=pruner,
                                        direction=cfg.direction, load_if_exists=True)
            break
        except (ImportError, ModuleNotFoundError) as exc:
            raise errors.MissingDependency(f"--search-storage {tracking.safe_uri(cfg.storage)}: {exc}") from None
        except Exception as exc:  # a bad URL, an unreachable database, another direction for an existing study
            # Processes that start together on a new database race to create its tables and the
            # study: the loser finds them made, and the next try loads them.
            if attempt < 3 and type(exc).__name__ in ("OperationalError", "IntegrityError", "DuplicatedStudyError"):
                time.sleep(0.5 + attempt)
                continue
            raise errors.UsageError(f"--search-storage {tracking.safe_uri(cfg.storage)}: {tracking.one_line(exc)}") from None
    if study.direction.name.lower() != cfg.direction:
        raise errors.UsageError(f"study {name!r} already exists and goes the other way ({study.direction.name.lower()}); "
                                f"--search-metric {cfg.metric} needs {cfg.direction}")
    return study


def _optimize(optuna: Any, study: Any, cfg: SearchConfig, payload: dict, settings: Settings, fields: data.Fields,
              root: str, job: Job, parent: tracking.Run) -> list[int]:
    """Run trials until the study holds cfg.trials of them (this process's and others'); returns
    the numbers of the trials this process ran."""
    from optuna.study import MaxTrialsCallback

    mine: list[int] = []

    def objective(trial: Any) -> float:
        if trial.number >= cfg.trials:  # two processes asked at once: the budget is spent
            trial.set_user_attr("over_budget", True)
            study.stop()
            raise optuna.TrialPruned("the study has its trials")
        mine.append(trial.number)
        params = {d.name: d.suggest(trial) for d in cfg.space}
        trial.set_user_attr("host", socket.gethostname())
        try:
            record = _run_trial(optuna, trial, params, cfg, payload, settings, fields, root, job, parent)
        except errors.LLMToolsError as exc:
            if exc.exit_code != errors.ExitCode.INTERRUPTED:
                raise
            shutil.rmtree(ckpt.work_dir(os.path.join(root, f"trial-{trial.number:04d}")), ignore_errors=True)
            kept = ("the finished trials stay in the study: run the same command to go on" if cfg.storage
                    else "the study was in memory: give --search-storage to keep one across runs")
            raise errors.LLMToolsError(f"interrupted during trial {trial.number}; {kept}", errors.ExitCode.INTERRUPTED) from None
        job.write(record)
        parent.log_metrics({"trial_value": record["value"]} if record.get("value") is not None else {}, step=trial.number)
        if record["state"] == "PRUNED":
            raise optuna.TrialPruned(f"pruned at step {record['step']}")
        return record["value"]

    done = len(study.get_trials(deepcopy=False))
    if done < cfg.trials:
        # states=None counts running trials too, so processes sharing the study stop at N in all.
        study.optimize(objective, n_trials=cfg.trials, callbacks=[MaxTrialsCallback(cfg.trials, states=None)],
                       catch=(), gc_after_trial=True)
    return mine


def _run_trial(optuna: Any, trial: Any, params: dict, cfg: SearchConfig, payload: dict, settings: Settings,
               fields: data.Fields, root: str, job: Job, parent: tracking.Run) -> dict:
    """One fine-tune with the trial's settings; its log records go to ROOT/trial-N.jsonl. Returns
    the trial record (state COMPLETE or PRUNED)."""
    from llmtools.io import dumps_line
    from llmtools.ops.finetune.run import train_payload

    trial_settings = dataclasses.replace(settings, **params)
    trial_settings.check()
    out = os.path.join(root, f"trial-{trial.number:04d}")
    for stale in (out, ckpt.work_dir(out)):  # a trial number is never reused: anything here is from an older study
        shutil.rmtree(stale, ignore_errors=True)
    trial.set_user_attr("output", out)
    started = time.perf_counter()
    state = {"pruned_at": None, "last_eval": {}}

    log = open(os.path.join(root, f"trial-{trial.number:04d}.jsonl"), "wb")

    def on_record(record: dict) -> None:
        log.write(dumps_line(record))
        log.flush()
        if record.get("eval_loss") is None or not record.get("step"):
            return
        state["last_eval"] = record
        if cfg.prunes:
            trial.report(float(record[cfg.metric]), int(record["step"]))
            if trial.should_prune():
                state["pruned_at"] = int(record["step"])
                raise optuna.TrialPruned()

    run = tracking.start_run(cfg.track, "finetune", warn=job.warn, run_name=f"trial-{trial.number}",
                             tags={"mlflow.parentRunId": parent.run_id, "llmtools.trial": trial.number}, notice=lambda m: None) \
        if parent.active else tracking.Run()
    run_info = run.info()
    final = None
    try:
        with run:
            run.log_params({"trial": params})
            # no step-0 evaluation: every trial starts from the same base model
            final = train_payload(payload, trial_settings, fields, out, Dist(), run, on_record=on_record, warn=job.warn,
                                  initial_eval=False)
    except optuna.TrialPruned:
        shutil.rmtree(ckpt.work_dir(out), ignore_errors=True)
    finally:
        log.close()
    record: dict[str, Any] = {"type": "trial", "number": trial.number, "params": params}
    if final is None:
        last = state["last_eval"]
        record.update(state="PRUNED", step=state["pruned_at"], value=_num(last.get(cfg.metric)),
                      eval_loss=_num(last.get("eval_loss")), eval_perplexity=_num(last.get("eval_perplexity")),
                      output=None)
    else:
        value = final.get(cfg.metric) if cfg.metric in EVAL_OBJECTIVES else _score_trial(out, payload, fields, cfg)
        record.update(state="COMPLETE", step=final["step"], value=_num(value), eval_loss=final.get("eval_loss"),
                      eval_perplexity=final.get("eval_perplexity"), output=out)
        if record["value"] is None:
            raise errors.RuntimeFailure(f"trial {trial.number}: no {cfg.metric} to optimize")
    record["runtime_s"] = round(time.perf_counter() - started, 3)
    if run_info:
        record["tracking"] = run_info
    return record


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _score_trial(model_dir: str, payload: dict, fields: data.Fields, cfg: SearchConfig) -> float | None:
    """Generate an answer (greedy) for each eval record with the trial's model and score it
    against the record's own completion / last assistant turn with `llmtools score`'s metric."""
    from llmtools.models import GenerationParams, load_model
    from llmtools.ops.score import ScoreConfig, Scorer

    model = load_model(model_dir, backend="torch")
    try:
        prompts, references = [], []
        for rec in payload["eval_records"]:
            if payload["format"] == "messages":
                messages = list(get_field(rec, fields.messages))
                last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
                prompts.append(model.apply_chat_template(messages[:last], add_generation_prompt=True))
                references.append(messages[last]["content"])
            else:
                prompts.append(get_field(rec, fields.prompt))
                references.append(get_field(rec, fields.completion))
        answers = model.generate_batch(prompts, GenerationParams(max_tokens=cfg.max_new_tokens, temperature=0.0))
    finally:
        model.close()
    scorer = Scorer(ScoreConfig(metrics=[cfg.metric]))
    for _ in scorer.run({"prediction": a.text, "reference": r} for a, r in zip(answers, references)):
        pass
    return scorer.summary()["metrics"].get(cfg.metric)


def _finish(optuna: Any, study: Any, cfg: SearchConfig, settings: Settings, output: str, overwrite: bool,
            mine: Sequence[int], job: Job) -> dict:
    """The search record; the best trial's settings as a config file; its model copied to OUTPUT."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("over_budget")]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    final: dict[str, Any] = {
        "type": "search", "study": study.study_name, "storage": tracking.safe_uri(cfg.storage) or "in memory",
        "metric": cfg.metric, "direction": cfg.direction, "trials": len(trials), "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials), "this_process": list(mine),
    }
    if not complete:
        raise errors.RuntimeFailure(f"no trial of study {study.study_name!r} completed; nothing to write")
    best = study.best_trial
    best_settings = dataclasses.replace(settings, **{d.name: best.params[d.name] for d in cfg.space if d.name in best.params})
    config_path = cfg.best_config or os.path.abspath(output).rstrip(os.sep) + ".best.yaml"
    write_config(config_path, best_settings, comment=f"best of {len(trials)} trials of study {study.study_name} "
                                                       f"(trial {best.number}, {cfg.metric} {best.value:.6g})")
    final["best"] = {"number": best.number, "value": best.value, "params": dict(best.params), "config": config_path}
    source = best.user_attrs.get("output")
    if source and os.path.isdir(source):
        _publish_copy(source, output, overwrite)
        final["output"] = os.path.abspath(output)
    else:
        job.warn(f"the best trial ({best.number}) ran on {best.user_attrs.get('host', 'another machine')}; its model is "
                 f"{source or 'not on this machine'}: train it here with --config {config_path}")
        final["output"] = None
    for number in mine:  # keep the disk: only the best model stays among this process's trials
        if number != best.number:
            shutil.rmtree(os.path.join(search_root(output), f"trial-{number:04d}"), ignore_errors=True)
    return final


# Settings written to the best config: the options `finetune --config` takes, not the bookkeeping.
CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Settings) if f.name not in ("world_size",))


def write_config(path: str, settings: Settings, comment: str = "") -> str:
    """A YAML file of finetune options (`finetune --config FILE` reads it)."""
    import yaml

    values = {k: getattr(settings, k) for k in CONFIG_KEYS}
    values["lr"] = settings.resolved_lr
    values = {k.replace("_", "-"): v for k, v in values.items() if v is not None}
    text = (f"# {comment}\n" if comment else "") + yaml.safe_dump(values, sort_keys=False)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def _publish_copy(source: str, output: str, overwrite: bool) -> None:
    out = os.path.abspath(output)
    staged = f"{out}.{os.getpid()}.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(source, staged)
    if os.path.exists(out):
        if not overwrite:
            shutil.rmtree(staged, ignore_errors=True)
            raise errors.UsageError(f"{output} already exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    os.replace(staged, out)

