"""Every fine-tuning hyperparameter, with its checks; all of it goes into the manifest."""

from __future__ import annotations

from dataclasses import dataclass

from llmtools.errors import UsageError
from llmtools.models.registry import DEFAULT_MODEL

SCHEDULERS = ("linear", "cosine", "constant")
METHODS = ("lora", "full")
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}
# The activations a forward pass keeps for backward grow with its tokens: about 2.6 MB per token for
# smollm2 (135M) with LoRA on every linear layer (benchmarks/finetune/pass_memory.py), so 512 tokens
# per pass keep a LoRA run of it near 2.5 GB whatever the batch size and sequence length.
DEFAULT_PASS_TOKENS = 512


@dataclass
class Settings:
    """Every hyperparameter; all of it goes into the manifest."""

    base: str = DEFAULT_MODEL
    format: str = "auto"
    loss_on: str = "completion"
    method: str = "lora"
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    lr: float | None = None
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    warmup_steps: int | None = None
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int | None = None
    packing: bool = False
    padding_free: bool = True
    max_pass_tokens: int | None = DEFAULT_PASS_TOKENS  # most tokens in one forward/backward pass (0 or None: no limit)
    seed: int = 42
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    log_every: int = 10
    eval_every: int | None = None
    save_every: int = 100
    keep_checkpoints: int = 2
    adapter_only: bool = False
    gradient_checkpointing: bool = False
    device: str = "auto"
    world_size: int = 1

    def check(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"--scheduler must be one of {', '.join(SCHEDULERS)}")
        if self.loss_on not in ("completion", "all"):
            raise UsageError("--loss-on must be 'completion' or 'all'")
        for name in ("batch_size", "grad_accum", "epochs", "log_every", "lora_r"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError("--max-steps must be at least 1")
        if self.adapter_only and self.method != "lora":
            raise UsageError("--adapter-only needs --method lora")
        if not 0 <= self.distill_weight <= 1:
            raise UsageError("--distill-weight must be between 0 and 1")
        if self.distill_temperature <= 0:
            raise UsageError("--distill-temperature must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError("--warmup-ratio must be in [0, 1)")
        if self.max_pass_tokens is not None and self.max_pass_tokens < 0:
            raise UsageError("--max-pass-tokens must be 0 (no limit) or more")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise UsageError("--max-seq-len must be at least 2")

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]
