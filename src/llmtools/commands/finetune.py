"""Fine-tune a model (LoRA or full) on JSONL records.

Reads training records (stdin or FILES), trains, and writes the model to -o DIR: by default a
merged model in safetensors with its tokenizer and chat template, ready for score, quantize and
serve. stdout gets one JSON record per logging step (step, epoch, loss, lr, tokens_per_s, and
eval_loss/eval_perplexity when evaluated), then a `"type": "final"` record naming the artifacts.

Record shapes (auto-detected from the first record, or --format): {"text": ...};
{"prompt": ..., "completion": ...}; {"messages": [{"role": ..., "content": ...}, ...]} rendered
with the model's chat template. The loss is on completions / assistant turns only unless
--loss-on all. All training records are held in memory (they are shuffled every epoch).

\b
Examples:
    llmtools finetune --base smollm2 -o runs/v1 train.jsonl > log.jsonl
    llmtools finetune -o runs/v1 --eval-fraction 0.1 --epochs 2 --lr 1e-4 < train.jsonl
    llmtools finetune -o runs/v1 --config train.toml --lr 5e-5 train.jsonl   # flags win
    llmtools finetune -o runs/v1 --resume train.jsonl        # continue an interrupted run
    llmtools finetune -o runs/small --teacher runs/big --distill-weight 0.5 train.jsonl
    torchrun --nproc_per_node 2 -m llmtools finetune -o runs/v1 train.jsonl

\b
Work directory: training runs in DIR.partial/ (checkpoints in DIR.partial/checkpoints/);
DIR appears, complete, only when training ends. Ctrl-C saves a checkpoint and exits 130;
--resume continues from the newest checkpoint with the same result as an uninterrupted run.
Under torchrun or `accelerate launch` every process trains (DDP; gloo on CPU, NCCL on GPU)
and only rank 0 reads the input, writes records and writes the model.

\b
Search: --search SPACE --trials N runs an Optuna study; each trial is a real fine-tune with the
options given here (keep the budget short: --max-steps) and the trial's values of SPACE. SPACE
entries: NAME=LOW..HIGH (a range; :log for a log scale; whole numbers for integer settings) or
NAME=A,B,C (choices); names are finetune options (lr, lora_r, batch_size, epochs, ...). Trials
are scored on --eval-file / --eval-fraction; a trial whose intermediate eval perplexity is worse
than the median of earlier trials at that step is pruned (--eval-every, default --log-every).
stdout gets one "trial" record per trial, then a "search" record; the best settings go to
--best-config (DIR.best.yaml), which `finetune --config` takes, and the best model to DIR. With
the in-memory study, --seed makes the search reproducible; with --search-storage several
processes (or machines) run trials of one study, N trials in all. Trial models and logs are in
DIR.search/ (only the best model is kept).

\b
    llmtools finetune -o runs/best --search 'lr=1e-5..1e-3:log lora_r=8,16' --trials 8 \\
        --max-steps 50 --eval-file heldout.jsonl train.jsonl > trials.jsonl

\b
Tracking: with --track mlflow (or $MLFLOW_TRACKING_URI set) the run is logged to MLflow: every
resolved option, the base model identity and the data sha256 as params; each log record as
metrics at its step; the manifest and final record as artifacts (--track-model: the model too).
The run id goes into the manifest and the final record; --resume continues the same MLflow run.
An unreachable server is a warning, or exit 1 before training with --track-required.
"""

from __future__ import annotations

from typing import Any

import click

from llmtools import errors, options
from llmtools.ops.finetune import DEFAULT_PASS_TOKENS, FORMATS

SETTING_KEYS = (
    "format", "loss_on", "method", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "lr", "epochs",
    "max_steps", "batch_size", "grad_accum", "warmup_steps", "warmup_ratio", "scheduler", "weight_decay",
    "max_grad_norm", "max_seq_len", "packing", "padding_free", "max_pass_tokens", "seed", "distill_weight", "distill_temperature", "log_every",
    "eval_every", "save_every", "keep_checkpoints", "adapter_only", "gradient_checkpointing", "device",
)


def load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager: read TOML/YAML into click's default_map, so any flag given on the line wins."""
    if not value:
        return value
    try:
        with open(value, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    try:
        if value.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            conf = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml

            conf = yaml.safe_load(raw) or {}
    except Exception as exc:  # a parse error of either format: one line, exit 2
        raise click.BadParameter(f"{value}: {exc}") from None
    if not isinstance(conf, dict):
        raise click.BadParameter(f"{value}: expected a table/mapping of option names to values")
    if isinstance(conf.get("finetune"), dict):  # allow a [finetune] section in a shared file
        conf = conf["finetune"]
    names = {p.name: p for p in ctx.command.params if isinstance(p, click.Option) and p.name not in ("config", "help")}
    known, unknown = {}, []
    for key, val in conf.items():
        name = str(key).replace("-", "_")
        if name not in names:
            unknown.append(str(key))
        else:
            known[name] = val
    if unknown:
        raise click.BadParameter(f"{value}: unknown setting(s): {', '.join(sorted(unknown))}")
    ctx.default_map = {**(ctx.default_map or {}), **known}
    return value


@click.command("finetune", context_settings={"show_default": True})
@click.option("--config", "config", metavar="FILE", is_eager=True, expose_value=True, callback=load_config,
              help="Read settings from a TOML or YAML file (keys are option names, e.g. lora-r = 8); flags override it.")
@options.model_options("--base", dest="base", help="Model to start from: a HF directory, a .gguf file or a registry name.",
                       api_key=None, trust_pickle=False)
@options.io_options(field_help="Text field of `text` records (dotted path).", output_help="Directory to write the trained model to (required).",
                    output_metavar="DIR", format_flag=False, table_output=False, schema=True)
@click.option("--format", "format", type=click.Choice(FORMATS), default="auto", help="Record shape; auto detects it from the first record.")
@click.option("--prompt-field", default="prompt", metavar="PATH", help="Prompt field of prompt/completion records.")
@click.option("--completion-field", default="completion", metavar="PATH", help="Completion field of prompt/completion records.")
@click.option("--messages-field", default="messages", metavar="PATH", help="Messages field of chat records.")
@click.option("--loss-on", type=click.Choice(["completion", "all"]), default="completion", help="Train on completion/assistant tokens only, or on every token.")
@click.option("--eval-file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=False), help="Held-out records (same shape) for eval loss and perplexity.")
@click.option("--eval-fraction", type=float, default=None, help="Hold out this fraction of the input for evaluation (seeded by --seed).")
@click.option("--method", type=click.Choice(["lora", "full"]), default="lora", help="LoRA adapters, or update every weight.")
@click.option("--lora-r", type=int, default=16, help="LoRA rank.")
@click.option("--lora-alpha", type=float, default=32.0, help="LoRA scaling alpha (the update is scaled by alpha/r).")
@click.option("--lora-dropout", type=float, default=0.05, help="Dropout on the LoRA input.")
@click.option("--target-modules", default="all-linear", metavar="NAMES", help="Comma-separated module names to adapt, or all-linear.")
@click.option("--lr", type=float, default=None, show_default="2e-4 for lora, 2e-5 for full", help="Peak learning rate.")
@click.option("--epochs", type=int, default=3, help="Passes over the training data (ignored with --max-steps).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps.")
@click.option("--batch-size", type=int, default=4, help="Sequences per micro-batch, per process.")
@click.option("--grad-accum", type=int, default=1, help="Micro-batches per optimizer step.")
@click.option("--warmup-steps", type=int, default=None, help="Linear warmup steps (overrides --warmup-ratio).")
@click.option("--warmup-ratio", type=float, default=0.0, help="Warmup as a fraction of all steps.")
@click.option("--scheduler", type=click.Choice(["linear", "cosine", "constant"]), default="linear", help="Learning-rate decay after warmup.")
@click.option("--weight-decay", type=float, default=0.0, help="AdamW weight decay (not applied to biases and norms).")
@click.option("--max-grad-norm", type=float, default=1.0, help="Clip the gradient norm to this (0: no clipping).")
@click.option("--max-seq-len", type=int, default=None, show_default="min(1024, model context)", help="Longest sequence; longer records are cut on the right.")
@click.option("--packing", is_flag=True, help="Pack several records per sequence (whole records, no attention across them).")
@click.option("--padding-free/--padded", "padding_free", default=True, show_default=True,
              help="Lay each micro-batch's sequences end to end with no pad tokens, attention running per record "
                   "(sdpa models); --padded pads them to the longest.")
@click.option("--max-pass-tokens", type=click.IntRange(0), default=DEFAULT_PASS_TOKENS, metavar="N",
              help="Most tokens in one forward/backward pass: a micro-batch holding more runs as several passes "
                   "with the same gradients, which bounds peak memory (0: no limit).")
@click.option("--seed", type=int, default=42, help="Seed for initialisation, data order, dropout and the eval split.")
@click.option("--adapter-only", is_flag=True, help="Write only the LoRA adapter (plus tokenizer), not a merged model.")
@click.option("--teacher", metavar="MODEL", default=None, help="Distil from this model's logits (it must share the tokenizer).")
@click.option("--distill-weight", type=float, default=0.5, help="Weight of the KL term; the cross-entropy gets 1 - weight.")
@click.option("--distill-temperature", type=float, default=2.0, help="Softmax temperature for distillation.")
@click.option("--log-every", type=int, default=10, help="Write a log record every N optimizer steps.")
@click.option("--eval-every", type=int, default=None, show_default="at start and end", help="Evaluate every N steps.")
@click.option("--save-every", type=int, default=100, help="Checkpoint every N steps (0: only on interrupt).")
@click.option("--keep-checkpoints", type=int, default=2, help="How many recent checkpoints to keep.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in DIR.partial/.")
@click.option("--overwrite", is_flag=True, help="Replace an existing DIR, or discard an interrupted run.")
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in backward to save memory.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where to train.")
@options.track_options(model_help="Also log the trained model (or the adapter, with --adapter-only) as an MLflow artifact.")
@click.option("--search", "search_space", metavar="SPACE", default=None,
              help="Search hyperparameters with Optuna: a YAML file, or inline NAME=VALUES such as "
                   "'lr=1e-5..1e-3:log lora_r=8,16,32 epochs=1..3' (see Search below).")
@click.option("--trials", type=click.IntRange(1), default=10, help="With --search: trials in the study (shared by every process using it).")
@click.option("--search-metric", default="eval_perplexity", metavar="METRIC",
              help="With --search: what to optimize: eval_perplexity, eval_loss, or a `score` text metric "
                   "(rougeL, chrf, bleu, ter, exact_match, ...) of greedy answers to --eval-file's prompts.")
@click.option("--search-storage", metavar="URL", default=None, show_default="in memory",
              help="With --search: Optuna storage (sqlite:///study.db, postgresql://...), so several processes or machines share the study.")
@click.option("--study-name", metavar="NAME", default=None, show_default="llmtools-finetune-DIR",
              help="With --search: the study's name in the storage.")
@click.option("--best-config", metavar="FILE", default=None, show_default="DIR.best.yaml",
              help="With --search: where to write the best trial's settings (a --config file).")
def cli(io: options.IOConfig, model: options.ModelConfig, config: str | None, prompt_field: str, completion_field: str, messages_field: str,
        eval_file: str | None, eval_fraction: float | None, teacher: str | None, resume: bool, overwrite: bool,
        track: Any, search_space: str | None, trials: int, search_metric: str, search_storage: str | None,
        study_name: str | None, best_config: str | None, **kw: Any) -> None:
    """Fine-tune a model (LoRA or full) on JSONL records."""
    from llmtools.ops import finetune as ops

    errors.require("torch", "train", "finetune")
    errors.require("transformers", "train", "finetune")
    if kw["method"] == "lora":
        errors.require("peft", "train", "LoRA")
    if not io.output:
        raise errors.UsageError("finetune needs -o DIR for the trained model")
    settings = ops.Settings(base=model.ref, teacher=teacher, **{k: kw[k] for k in SETTING_KEYS})
    settings.check()
    fields = ops.Fields(text=io.field, prompt=prompt_field, completion=completion_field, messages=messages_field)
    if search_space is not None:
        if resume:
            raise errors.UsageError("--resume does not apply to --search (a study resumes from its --search-storage)")
        cfg = ops.SearchConfig(ops.parse_space(search_space), trials=trials, storage=search_storage, study_name=study_name,
                               metric=search_metric, best_config=best_config, track=track)
        job = io.job(output=None, unbuffered=True, validate=ops.RecordValidator(settings.format, fields))
        final = ops.search(job, settings, fields, io.output, cfg, eval_file=eval_file, eval_fraction=eval_fraction,
                           overwrite=overwrite)
        best = final.get("best") or {}
        job.summary({"trials": final["trials"], "complete": final["complete"], "pruned": final["pruned"],
                     "best trial": best.get("number"), search_metric: best.get("value"), "config": best.get("config"),
                     "output": final.get("output")}, title="searched", records=False)
        return
    # Log records are few and meant to be watched live (`| llmtools watch`): always flushed.
    job = io.job(output=None, unbuffered=True, validate=ops.RecordValidator(settings.format, fields))
    final = ops.finetune(job, settings, fields, io.output, eval_file=eval_file, eval_fraction=eval_fraction,
                        resume=resume, overwrite=overwrite, track=track)
    if final is not None:
        rows = {k: final.get(k) for k in ("step", "train_loss", "eval_loss", "eval_perplexity", "train_examples", "runtime_s", "output")}
        job.summary({k: v for k, v in rows.items() if v is not None}, title="trained", records=False)


# The module docstring is the full --help (and man page): formats, work directory, search, tracking.
cli.help = __doc__
