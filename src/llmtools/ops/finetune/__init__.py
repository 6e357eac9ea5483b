"""finetune: LoRA or full fine-tuning, with distillation, exact resume and DDP.

    finetune(job, Settings(...), Fields(...), output) -> final record (rank 0)

The modules: settings (every hyperparameter), dataset (record shapes, validation, tokenizing,
packing, the eval split, the batch schedule), training (the loop, evaluation, export), losses (cross-entropy and
distillation with logits only at target positions),
checkpoints (the work directory, checkpoints and publishing the model), distributed (DDP under
torchrun / accelerate), run (one command run: input, sharing it between ranks, the manifest,
tracking), search (--search: an Optuna study whose trials are fine-tunes).
torch, transformers and peft are imported only by the functions that train.
"""

from __future__ import annotations

from llmtools.ops.finetune.dataset import FORMATS, Fields, RecordValidator, tokenize_record
from llmtools.ops.finetune.distributed import Dist
from llmtools.ops.finetune.run import finetune, read_inputs
from llmtools.ops.finetune.search import SearchConfig, parse_space, search, write_config
from llmtools.ops.finetune.settings import DEFAULT_PASS_TOKENS, Settings
from llmtools.ops.finetune.losses import target_losses, token_losses
from llmtools.ops.finetune.training import evaluate, forward, train

__all__ = [
    "DEFAULT_PASS_TOKENS", "FORMATS", "Dist", "Fields", "RecordValidator", "SearchConfig", "Settings", "evaluate", "finetune", "forward",
    "parse_space", "read_inputs", "search", "target_losses", "token_losses", "tokenize_record", "train", "write_config",
]
