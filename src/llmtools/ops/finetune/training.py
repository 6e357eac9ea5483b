"""Fine-tuning: LoRA or full, with distillation, exact resume, and DDP under torchrun/accelerate.

`train(...)` is a plain function: it takes records (already validated) and settings, calls
`emit(record)` once per logging step, and returns the final record. It never prints to stdout.
The training loop is our own (torch + peft) rather than transformers' Trainer so that data order,
loss normalisation and checkpoint contents are explicit: a resumed run replays exactly the
batches, dropout masks and learning rates that an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from llmtools.errors import ExitCode, LLMToolsError, UsageError
from llmtools.ops.finetune import checkpoints as ckpt
from llmtools.ops.finetune import dataset as data
from llmtools.ops.finetune.attention import use_varlen
from llmtools.ops.finetune.lean_lora import use_lean_lora
from llmtools.ops.finetune.losses import loss_module, target_losses, token_losses  # noqa: F401 (re-exported)
from llmtools.ops.finetune.distributed import Dist
from llmtools.ops.finetune.settings import Settings

# --------------------------------------------------------------------------- models


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, device: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        # sdpa: PyTorch's fused attention kernels (flash/memory-efficient on CPU and GPU); models
        # without it load with their default.
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        except ValueError as exc:
            if "sdpa" not in str(exc).lower():
                raise
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load a causal LM from {path}: {exc}") from None
    return model.to(device)


def check_same_vocab(student_tok: Any, teacher_tok: Any, teacher_ref: str) -> None:
    """Distillation compares logits token by token, so both models must use the same tokenizer."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s != t:
        only_s = len(set(s) - set(t))
        only_t = len(set(t) - set(s))
        moved = sum(1 for k in set(s) & set(t) if s[k] != t[k])
        raise UsageError(
            f"--teacher {teacher_ref} uses a different tokenizer (vocab {len(t)} vs {len(s)}; "
            f"{only_s} tokens only in the student, {only_t} only in the teacher, {moved} with other ids); "
            "distillation needs a teacher that shares the student's tokenizer"
        )


def apply_lora(model: Any, s: Settings) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: Any = s.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise UsageError(f"--target-modules {s.target_modules}: {exc}") from None


def pick_device(name: str, dist: Dist) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


# --------------------------------------------------------------------------- losses


def forward(model: Any, batch: dict, device: Any) -> Any:
    """Full logits of a (padded or packed) batch: the plain path, kept as the reference in tests."""
    kwargs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "seq_lens")}
    return model(**kwargs, use_cache=False).logits


def evaluate(model: Any, rows: list, pad_id: int, batch_size: int, device: Any, dist: Dist, teacher: Any = None, temperature: float = 1.0) -> dict:
    """Token-weighted loss over `rows` (sharded across processes); perplexity = exp(loss)."""
    import torch

    was_training = model.training
    model.eval()
    ce_sum, kl_sum, n_tok = 0.0, 0.0, 0
    mine = list(range(dist.rank, len(rows), dist.world))
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            batch = data.collate([rows[j] for j in mine[i : i + batch_size]], pad_id, packed=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            ce, kl, n = target_losses(model, batch, teacher, temperature)
            ce_sum += float(ce)
            kl_sum += float(kl) if kl is not None else 0.0
            n_tok += n
    if was_training:
        model.train()
    ce_sum, kl_sum, n_tok = dist.sum(ce_sum), dist.sum(kl_sum), int(dist.sum(n_tok))
    loss = ce_sum / max(n_tok, 1)
    out = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700.0)), "eval_tokens": n_tok}
    if teacher is not None:
        out["eval_kl"] = kl_sum / max(n_tok, 1)
    return out


# --------------------------------------------------------------------------- optimisation


def build_optimizer(model: Any, s: Settings, total_steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = _adamw([g for g in groups if g["params"]], s.resolved_lr)
    warmup = s.warmup_steps if s.warmup_steps is not None else int(math.ceil(s.warmup_ratio * total_steps))
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[s.scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=min(warmup, total_steps), num_training_steps=total_steps)
    return optimizer, scheduler


def _adamw(groups: list, lr: float) -> Any:
    """AdamW with its fused kernel (one kernel over all parameters, CPU and GPU), else foreach."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a dtype or device the fused kernel lacks
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the step and exits 130."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Interrupted(LLMToolsError):
    exit_code = ExitCode.INTERRUPTED


# --------------------------------------------------------------------------- the run


@dataclass
class Prepared:
    train_rows: list
    eval_rows: list
    n_train_examples: int
    n_eval_examples: int
    max_seq_len: int


def prepare_data(train_records: list, eval_records: list, fmt: str, tokenizer: Any, fields: data.Fields, s: Settings, model_max: int | None, on_drop: Callable | None) -> Prepared:
    max_len = s.max_seq_len or min(1024, model_max or 1024)
    if model_max and max_len > model_max:
        raise UsageError(f"--max-seq-len {max_len} is longer than the model's context ({model_max})")
    train_ex = data.tokenize_all(train_records, fmt, tokenizer, fields, s.loss_on, max_len, on_drop)
    eval_ex = data.tokenize_all(eval_records, fmt, tokenizer, fields, s.loss_on, max_len, on_drop)
    if not train_ex:
        raise UsageError("no training examples left to train on")
    rows = data.pack(train_ex, max_len) if s.packing else data.as_rows(train_ex)
    return Prepared(rows, data.as_rows(eval_ex), len(train_ex), len(eval_ex), max_len)


def train(
    train_records: list,
    eval_records: list,
    fmt: str,
    settings: Settings,
    base_dir: str,
    output: str,
    *,
    fields: data.Fields | None = None,
    teacher_dir: str | None = None,
    dist: Dist | None = None,
    resume: bool = False,
    overwrite: bool = False,
    run_info: dict | None = None,
    emit: Callable[[dict], None] = lambda r: None,
    on_drop: Callable | None = None,
    progress: Callable[[int], None] = lambda n=1: None,
    manifest_fn: Callable[[dict, dict], dict] | None = None,
    on_start: Callable[[dict], None] | None = None,
    initial_eval: bool = True,
) -> dict:
    """Train and write the model to `output`; returns the final record (rank 0; others get it too).
    `on_start(run_settings)` is called on rank 0 once the work directory is ready, before step one.
    `initial_eval=False` skips the step-0 evaluation (a search's trials all start from the same model)."""
    import torch

    s = settings
    s.check()
    quiet_libraries()
    dist = dist or Dist()
    device = pick_device(s.device, dist)
    torch.manual_seed(s.seed)
    random.seed(s.seed)
    m = _load_models(train_records, eval_records, fmt, s, base_dir, teacher_dir, fields or data.Fields(), device, dist,
                     on_drop if dist.main else None)
    prepared = m.prepared
    schedule = data.Schedule(len(prepared.train_rows), s.batch_size, s.grad_accum, s.seed, world=dist.world, rank=dist.rank)
    total_steps = s.max_steps or s.epochs * schedule.steps_per_epoch
    optimizer, scheduler = build_optimizer(m.core, s, total_steps)
    autocast = _autocast(device)

    run_settings = dict(asdict(s), lr=s.resolved_lr, max_seq_len=prepared.max_seq_len, total_steps=total_steps, **(run_info or {}))
    resume_from = None
    if dist.main:
        resume_from = ckpt.prepare_work_dir(output, run_settings, resume, overwrite)
        if on_start is not None:
            on_start(run_settings)
    resume_from = dist.broadcast(resume_from)
    start_step, local = 0, {"window_ce": 0.0, "window_tokens": 0, "window_input": 0, "window_kl": 0.0}
    if resume_from:
        start_step, local = ckpt.load_checkpoint(resume_from, m.core, optimizer, scheduler, dist.rank)

    pad_id = m.tokenizer.pad_token_id

    def evaluate_now() -> dict:
        return evaluate(m.core, prepared.eval_rows, pad_id, s.batch_size, device, dist, m.teacher, s.distill_temperature)

    last_eval: dict = {}
    if prepared.eval_rows and start_step == 0 and initial_eval:
        last_eval = evaluate_now()
        if dist.main:
            emit({"type": "eval", "step": 0, "epoch": 0.0, **_round(last_eval)})

    def checkpoint(step: int) -> str | None:
        return ckpt.save_checkpoint(
            output, step, m.core, optimizer, scheduler, dict(local), {"epoch": step / schedule.steps_per_epoch},
            rank=dist.rank, world=dist.world, barrier=dist.barrier, keep=s.keep_checkpoints,
        )

    t_window = time.perf_counter()
    t_start = time.perf_counter()
    tokens_seen = 0
    last_log: dict = {}
    with StopRequest() as stop:
        for step in range(start_step, total_steps):
            lr, grad_norm, n_input = _optimizer_step(m, s, step, schedule, optimizer, scheduler, autocast, device, dist, pad_id, local)
            tokens_seen += n_input
            done = step + 1
            progress(1)

            record: dict = {}
            if done % s.log_every == 0 or done == total_steps:
                record = _train_record(done, schedule, lr, grad_norm, t_window, local, dist, m.teacher is not None)
                t_window = time.perf_counter()
            if prepared.eval_rows and ((s.eval_every and done % s.eval_every == 0) or done == total_steps):
                last_eval = evaluate_now()
                record = record or {"type": "eval", "step": done, "epoch": round(done / schedule.steps_per_epoch, 4)}
                record.update(last_eval)
                t_window = time.perf_counter()  # evaluation time is not training throughput
            if record:
                last_log = record
                if dist.main:
                    emit(_round(record))
            stopping = dist.any(stop.signum is not None)
            if stopping or (s.save_every and done % s.save_every == 0 and done < total_steps):
                path = checkpoint(done)
                if stopping:
                    raise Interrupted(f"interrupted at step {done}; checkpoint saved in {path}; continue with --resume")

    runtime = time.perf_counter() - t_start
    final = _final_record(total_steps, schedule, last_log, last_eval, prepared, tokens_seen, runtime, output)
    if dist.main:
        final["artifacts"] = export(m.core, m.tokenizer, s, output, overwrite, lambda: manifest_fn(run_settings, final) if manifest_fn else None)
    dist.barrier()
    return final


@dataclass
class _Models:
    tokenizer: Any
    model: Any  # what a step runs: the loss module around the model (losses.loss_module), or its DDP wrapper
    core: Any  # the model itself: the optimizer, checkpoints and export use it
    teacher: Any
    prepared: Prepared
    trainable: list  # the parameters that get gradients (listed once, not every step)
    flat: bool  # padding-free micro-batches (dataset.collate(flat=True))


def _load_models(train_records: list, eval_records: list, fmt: str, s: Settings, base_dir: str, teacher_dir: str | None,
                 fields: data.Fields, device: Any, dist: Dist, on_drop: Callable | None) -> _Models:
    """The tokenizer, the data tokenized with it, the teacher, and the model ready to train."""
    import torch

    tokenizer = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, device)
    model_max = getattr(model.config, "max_position_embeddings", None)
    prepared = prepare_data(train_records, eval_records, fmt, tokenizer, fields, s, model_max, on_drop)

    teacher = None
    if teacher_dir is not None:
        check_same_vocab(tokenizer, load_tokenizer(teacher_dir), s.teacher or teacher_dir)
        teacher = load_causal_lm(teacher_dir, device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    torch.manual_seed(s.seed)  # LoRA initialisation depends only on the seed
    if s.method == "lora":
        model = apply_lora(model, s)
        use_lean_lora(model)  # same function as peft's LoRA forward, fewer passes over memory (lean_lora.py)
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Padding-free micro-batches need attention that runs per record; without it they would pay
    # for a dense tokens x tokens mask, so models not on sdpa keep padded batches.
    flat = s.padding_free and use_varlen(model)
    model.train()
    core = model
    model = loss_module(core, teacher, s.distill_temperature)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Models(tokenizer, model, core, teacher, prepared, [p for p in core.parameters() if p.requires_grad], flat)


def _optimizer_step(m: _Models, s: Settings, step: int, schedule: data.Schedule, optimizer: Any, scheduler: Any,
                    autocast: Any, device: Any, dist: Dist, pad_id: int, local: dict) -> tuple[float, Any, int]:
    """One optimizer step over this rank's micro-batches; returns (lr, grad norm, input tokens of all ranks)."""
    import torch

    rows = m.prepared.train_rows
    epoch, in_epoch = divmod(step, schedule.steps_per_epoch)
    micro = schedule.micro_batches(epoch, in_epoch)
    everyone = schedule.all_ranks(epoch, in_epoch)
    n_target = sum(rows[i].n_target for mb in everyone for i in mb)
    n_input = sum(len(rows[i].input_ids) for mb in everyone for i in mb)
    # Each micro-batch runs as passes of at most --max-pass-tokens tokens: that bounds the activations
    # kept for backward (peak memory), and the gradients stay the same (the loss is a sum over targets).
    passes = [p for idx in micro for p in data.split_passes([rows[i] for i in idx], s.max_pass_tokens, m.flat)]
    for k, piece in enumerate(passes):
        batch = data.collate(piece, pad_id, packed=s.packing, flat=m.flat)
        sync = k == len(passes) - 1 or not dist.enabled
        batch = {name: t.to(device, non_blocking=True) if hasattr(t, "to") else t for name, t in batch.items()}
        with _no_sync(m.model, sync), autocast:
            ce, kl, _ = m.model(**batch)  # the loss module: logits only at target positions
            objective = ce if kl is None else (1 - s.distill_weight) * ce + s.distill_weight * s.distill_temperature**2 * kl
            # Normalise by the step's target tokens on all ranks; DDP averages over ranks.
            (objective * dist.world / max(n_target, 1)).backward()
        local["window_ce"] += float(ce.detach())
        if kl is not None:
            local["window_kl"] += float(kl.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(m.trainable, s.max_grad_norm if s.max_grad_norm > 0 else float("inf"), foreach=True)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    local["window_tokens"] += n_target
    local["window_input"] += n_input
    return lr, grad_norm, n_input


def _train_record(done: int, schedule: data.Schedule, lr: float, grad_norm: Any, t_window: float, local: dict, dist: Dist,
                  distilling: bool) -> dict:
    """The log record of the steps since the last one (loss per target token, throughput); resets the window."""
    ce_total = dist.sum(local["window_ce"])
    elapsed = time.perf_counter() - t_window
    record = {
        "type": "train",
        "step": done,
        "epoch": round(done / schedule.steps_per_epoch, 4),
        "loss": ce_total / max(local["window_tokens"], 1),
        "lr": lr,
        "grad_norm": float(grad_norm),
        "tokens_per_s": local["window_input"] / elapsed if elapsed > 0 else None,
    }
    if distilling:
        record["distill_kl"] = dist.sum(local["window_kl"]) / max(local["window_tokens"], 1)
    local.update(window_ce=0.0, window_tokens=0, window_input=0, window_kl=0.0)
    return record


def _final_record(total_steps: int, schedule: data.Schedule, last_log: dict, last_eval: dict, prepared: Prepared,
                  tokens_seen: int, runtime: float, output: str) -> dict:
    final_metrics = {"train_loss": last_log.get("loss"), **{k: v for k, v in last_eval.items()}}
    return {
        "type": "final",
        "step": total_steps,
        "epoch": round(total_steps / schedule.steps_per_epoch, 4),
        **_round(final_metrics),
        "train_examples": prepared.n_train_examples,
        "train_rows": len(prepared.train_rows),
        "eval_examples": prepared.n_eval_examples,
        "tokens_seen": tokens_seen,
        "runtime_s": round(runtime, 3),
        "output": os.path.abspath(output),
    }


def export(model: Any, tokenizer: Any, s: Settings, output: str, overwrite: bool, manifest: Callable[[], dict | None]) -> dict:
    """Write the merged model (or the adapter) into DIR.partial/model, then rename it to DIR."""
    import shutil

    from llmtools import provenance

    work = ckpt.work_dir(output)
    staged = os.path.join(work, "model")
    if os.path.isdir(staged):
        shutil.rmtree(staged)
    if s.method == "lora" and not s.adapter_only:
        model = model.merge_and_unload()
    model.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    files = sorted(os.listdir(staged))
    data_manifest = manifest()
    if data_manifest is not None:
        data_manifest["artifacts"] = {"kind": "adapter" if s.adapter_only else "model", "files": files}
        provenance.write_manifest(staged, data_manifest)
    ckpt.publish(staged, output, overwrite)
    shutil.rmtree(work, ignore_errors=True)
    out = os.path.abspath(output)
    arts = {"model" if not s.adapter_only else "adapter": out, "files": files}
    if data_manifest is not None:
        arts["manifest"] = os.path.join(out, provenance.MANIFEST_NAME)
    return arts


def quiet_libraries() -> None:
    """Library progress bars and deprecation chatter would drown our own stderr lines."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _round(rec: dict) -> dict:
    def fmt(k: str, v: Any) -> Any:
        if not isinstance(v, float):
            return v
        return float(f"{v:.8g}") if k == "lr" else round(v, 6)

    return {k: fmt(k, v) for k, v in rec.items()}


def _autocast(device: Any) -> Any:
    import contextlib

    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _no_sync(model: Any, sync: bool) -> Any:
    import contextlib

    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()
