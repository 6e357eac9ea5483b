"""Work directory, checkpoints and the final rename for `finetune`.

Layout, for ``-o runs/v1``::

    runs/v1.partial/                 the work directory of a run that has not finished
        run.json                     the settings the run started with (checked on --resume)
        checkpoints/step-00000040/   one complete checkpoint (written to a temp dir, then renamed)
            trainable.safetensors    every trainable parameter (the adapter, or the whole model)
            trainer.pt               optimizer, scheduler, step, rank-0 RNG and log window
            rng-rank1.pt ...         the RNG state and log window of every other process
            meta.json                step, epoch, time
        model/                       the final model, being written
    runs/v1/                         appears only when everything above is complete

The output directory is therefore complete or absent; `--resume` finds the newest checkpoint in
``DIR.partial/checkpoints``; a finished run removes ``DIR.partial``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from typing import Any

from llmtools.errors import UsageError

PARTIAL_SUFFIX = ".partial"
CKPT_PREFIX = "step-"

# Settings that change what is trained: a resumed run must use the same values.
TRAINING_KEYS = (
    "base", "format", "loss_on", "method", "lora_r", "lora_alpha", "lora_dropout", "target_modules",
    "lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_steps", "warmup_ratio", "scheduler",
    "weight_decay", "max_grad_norm", "max_seq_len", "packing", "seed", "teacher", "distill_weight",
    "distill_temperature", "world_size", "train_sha256", "eval_sha256",
)


def work_dir(output: str) -> str:
    return os.path.abspath(output).rstrip(os.sep) + PARTIAL_SUFFIX


def checkpoints_dir(output: str) -> str:
    return os.path.join(work_dir(output), "checkpoints")


def list_checkpoints(output: str) -> list[tuple[int, str]]:
    """Complete checkpoints, oldest first, as (step, path)."""
    folder = checkpoints_dir(output)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(CKPT_PREFIX) and name[len(CKPT_PREFIX):].isdigit() and os.path.isfile(os.path.join(path, "meta.json")):
            found.append((int(name[len(CKPT_PREFIX):]), path))
    return sorted(found)


def latest_checkpoint(output: str) -> str | None:
    found = list_checkpoints(output)
    return found[-1][1] if found else None


def prepare_work_dir(output: str, settings: dict, resume: bool, overwrite: bool) -> str | None:
    """Create or check DIR.partial; returns the checkpoint to resume from, if any.

    Refuses to start over an existing output or an interrupted run unless told what to do, so
    no finished model and no hours of training are lost by a repeated command.
    """
    out = os.path.abspath(output)
    work = work_dir(output)
    if os.path.exists(out) and not overwrite:
        raise UsageError(f"{output} already exists; pass --overwrite to replace it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{output} exists and is not a directory")
    ckpt = latest_checkpoint(output) if resume else None
    if os.path.isdir(work) and not resume:
        if list_checkpoints(output) and not overwrite:
            raise UsageError(
                f"{work} holds an interrupted run; pass --resume to continue it or --overwrite to start over"
            )
        shutil.rmtree(work)
    if ckpt is not None:
        saved = read_json(os.path.join(work, "run.json")) or {}
        diffs = [k for k in TRAINING_KEYS if saved.get(k) != settings.get(k)]
        if diffs:
            detail = ", ".join(f"{k}: {saved.get(k)!r} then, {settings.get(k)!r} now" for k in diffs[:4])
            raise UsageError(f"cannot resume from {ckpt}: settings differ ({detail}); use the same options and data, or --overwrite")
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    write_json(os.path.join(work, "run.json"), settings)
    return ckpt


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- state


def rng_state() -> dict:
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])


def trainable_state(model: Any) -> dict:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, path: str) -> None:
    import torch
    from safetensors.torch import load_file

    saved = load_file(path)
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in saved]
    if missing:
        raise UsageError(f"checkpoint {path} lacks {len(missing)} trainable tensors (e.g. {missing[0]}); was it made with other options?")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def save_checkpoint(
    output: str,
    step: int,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    local: dict,
    meta: dict,
    rank: int = 0,
    world: int = 1,
    barrier: Any = None,
    keep: int = 2,
) -> str | None:
    """Write one checkpoint atomically (temp dir, then rename); prune to the newest `keep`."""
    import torch
    from safetensors.torch import save_file

    barrier = barrier or (lambda: None)
    folder = checkpoints_dir(output)
    final = os.path.join(folder, f"{CKPT_PREFIX}{step:08d}")
    tmp = os.path.join(folder, f".{CKPT_PREFIX}{step:08d}.tmp")
    if rank == 0:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    barrier()
    payload = {"rng": rng_state(), "local": local}
    if rank != 0:
        torch.save(payload, os.path.join(tmp, f"rng-rank{rank}.pt"))
    barrier()
    if rank == 0:
        save_file(trainable_state(model), os.path.join(tmp, "trainable.safetensors"))
        payload.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), step=step)
        torch.save(payload, os.path.join(tmp, "trainer.pt"))
        write_json(os.path.join(tmp, "meta.json"), dict(meta, step=step, world_size=world, saved=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        for _, old in list_checkpoints(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: str, model: Any, optimizer: Any, scheduler: Any, rank: int = 0) -> tuple[int, dict]:
    """Restore weights, optimizer, scheduler and this process's RNG; returns (step, local state)."""
    import torch

    load_trainable(model, os.path.join(path, "trainable.safetensors"))
    # Our own file, written by save_checkpoint; it holds Python RNG tuples, hence weights_only=False.
    trainer = torch.load(os.path.join(path, "trainer.pt"), map_location="cpu", weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    mine = trainer if rank == 0 else torch.load(os.path.join(path, f"rng-rank{rank}.pt"), map_location="cpu", weights_only=False)
    set_rng_state(mine["rng"])
    return int(trainer["step"]), mine["local"]


def publish(staged: str, output: str, overwrite: bool) -> None:
    """Move the finished model into place (replacing an old one only with --overwrite)."""
    out = os.path.abspath(output)
    old = None
    if os.path.exists(out):
        if not overwrite:
            raise UsageError(f"{output} appeared while training; the model is kept in {staged}")
        old = f"{out}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(staged, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)
