"""Training losses computed only where there is a label, never over the full vocabulary at every token.

A causal LM's logits are `batch x tokens x vocab` floats (49,152 words for smollm2): at batch 4 x
512 tokens that is 400 MB, and the cross-entropy keeps a softmax and a gradient of the same size.
Most positions do not need them: the label at t+1 decides whether position t is trained at all,
and with completion-only loss the whole prompt is not. So we run the decoder, pick the hidden
states of the positions that have a target, and apply the LM head to those alone, in chunks of
`CHUNK` positions. Training without a teacher goes through `linear_cross_entropy`: each chunk's
gradient (softmax minus one-hot, times the head) is worked out in the forward pass and the
chunk's logits freed at once, so peak memory is one chunk of logits whatever the batch and
vocabulary, and nothing is recomputed. With a teacher, chunks are checkpointed (their logits
recomputed in backward).

The sums are the same as cross-entropy over the full logits with `ignore_index` (tests prove it
on loss and gradients). Models whose logits are not simply `head(last hidden state)` (softcapped
or scaled logits) take the full-logits path.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

from typing import Any

from llmtools.ops.finetune.dataset import IGNORE

CHUNK = 256  # positions per LM-head chunk: 256 x 49,152 float32 logits = 50 MB
# Model types whose causal-LM forward is exactly `lm_head(decoder(...).last_hidden_state)`.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "gemma", "olmo", "olmo2"})


def shifted_targets(labels: Any) -> Any:
    """The label each position predicts: labels[t + 1] at t, IGNORE at the last position."""
    import torch.nn.functional as F

    return F.pad(labels, (0, 1), value=IGNORE)[:, 1:]


def token_losses(logits: Any, labels: Any, teacher_logits: Any = None, temperature: float = 1.0) -> tuple[Any, Any, int]:
    """Summed cross-entropy and (with a teacher) summed KL(teacher || student) over target tokens,
    from full logits: the plain path, used for models without a plain head and as the reference."""
    import torch.nn.functional as F

    # Shift the labels, not the logits: slicing the logits would copy the largest tensor of the step.
    logits = logits.float()
    shift_labels = shifted_targets(labels)
    mask = shift_labels != IGNORE
    n = int(mask.sum().item())
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), shift_labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    if teacher_logits is None:
        return ce, None, n
    return ce, _kl_sum(logits[mask], teacher_logits[mask], temperature), n


def _kl_sum(student: Any, teacher: Any, temperature: float) -> Any:
    import torch.nn.functional as F

    vocab = min(student.size(-1), teacher.size(-1))
    log_p_s = F.log_softmax(student[..., :vocab].float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher[..., :vocab].float() / temperature, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum()


def head_parts(model: Any) -> tuple[Any, Any] | None:
    """(decoder, lm_head) of a causal LM (or its peft wrapper) with a plain head, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder is not None else None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def _model_inputs(batch: dict) -> dict:
    from llmtools.ops.finetune.attention import LENGTHS_KWARG

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if batch.get(k) is not None}
    if batch.get("seq_lens") is not None:  # a padding-free batch: per-example attention (attention.py)
        inputs[LENGTHS_KWARG] = batch["seq_lens"]
    return inputs


def _chunk_losses(head: Any, hidden: Any, targets: Any, teacher: Any, temperature: float) -> tuple[Any, Any]:
    """Cross-entropy (and KL) sums over one chunk of target positions."""
    import torch.nn.functional as F

    logits = head(hidden).float()
    ce = F.cross_entropy(logits, targets, reduction="sum")
    if teacher is None:
        return ce, None
    return ce, _kl_sum(logits, teacher(), temperature)


def target_losses(model: Any, batch: dict, teacher: Any = None, temperature: float = 1.0, chunk: int = CHUNK,
                  parts: Any = None, teacher_parts: Any = None) -> tuple[Any, Any, int]:
    """Like `token_losses(model(**batch).logits, batch["labels"], ...)`, with logits only at target
    positions, `chunk` positions at a time. `parts`/`teacher_parts` are `head_parts()` results (looked
    up when not given; pass False to force the full-logits path)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    parts = head_parts(model) if parts is None else parts
    if teacher is not None and teacher_parts is None:
        teacher_parts = head_parts(teacher)
    inputs = _model_inputs(batch)
    if not parts:
        logits = model(**inputs, use_cache=False).logits
        t_logits = None
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(**inputs, use_cache=False).logits
        return token_losses(logits, batch["labels"], t_logits, temperature)

    decoder, head = parts
    targets = shifted_targets(batch["labels"])
    mask = targets != IGNORE
    n = int(mask.sum().item())
    hidden = decoder(**inputs, use_cache=False).last_hidden_state[mask]
    targets = targets[mask]
    t_hidden = t_logits = None
    if teacher is not None:
        with torch.no_grad():
            if teacher_parts:
                t_hidden = teacher_parts[0](**inputs, use_cache=False).last_hidden_state[mask]
            else:
                t_logits = teacher(**inputs, use_cache=False).logits[mask]

    if teacher is None and torch.is_grad_enabled() and _fusable(head) and (hidden.requires_grad or head.weight.requires_grad):
        return linear_cross_entropy(hidden, head.weight, targets, chunk), None, n

    ce_sum: Any = hidden.new_zeros((), dtype=torch.float32) if n == 0 else None
    kl_sum: Any = None
    recompute = torch.is_grad_enabled() and n > chunk
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        t_fn = None
        if teacher is not None:
            t_fn = _teacher_chunk(teacher_parts, t_hidden, t_logits, sl)
        if recompute:  # keep only this chunk's logits alive; backward recomputes them
            ce, kl = checkpoint(_chunk_losses, head, hidden[sl], targets[sl], t_fn, temperature, use_reentrant=False)
        else:
            ce, kl = _chunk_losses(head, hidden[sl], targets[sl], t_fn, temperature)
        ce_sum = ce if ce_sum is None else ce_sum + ce
        if kl is not None:
            kl_sum = kl if kl_sum is None else kl_sum + kl
    if teacher is not None and kl_sum is None:
        kl_sum = ce_sum * 0.0
    return ce_sum, kl_sum, n


def _fusable(head: Any) -> bool:
    """A plain bias-free Linear head (not wrapped by an adapter): its logits are `hidden @ weight.T`."""
    import torch

    return type(head) is torch.nn.Linear and head.bias is None


def linear_cross_entropy(hidden: Any, weight: Any, targets: Any, chunk: int = CHUNK) -> Any:
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, `chunk` rows at a time, with
    the gradients for `hidden` and `weight` worked out in the same pass: each chunk's logits become
    its softmax in place, minus one at the target, and are gone before the next chunk. Backward
    only scales what forward kept (a `hidden`-sized tensor, and a `weight`-sized one if the head
    trains)."""
    global _LINEAR_CE
    if _LINEAR_CE is None:
        _LINEAR_CE = _linear_ce_class()
    return _LINEAR_CE.apply(hidden, weight, targets, chunk)


_LINEAR_CE: Any = None


def _linear_ce_class() -> Any:
    import torch

    class LinearCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, chunk: int) -> Any:  # type: ignore[override]
            want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            ctx.weight_dtype = weight.dtype
            w = weight.to(hidden.dtype)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(hidden) if want_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start:start + chunk]
                t = targets[start:start + chunk]
                logits = (h @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0  # d(summed CE)/d(logits)
                if want_h:
                    grad_h[start:start + chunk] = probs.to(w.dtype) @ w
                if want_w:
                    grad_w += probs.t() @ h.float()
                del logits, probs
            ctx.save_for_backward(grad_h, grad_w)
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:  # type: ignore[override]
            grad_h, grad_w = ctx.saved_tensors
            gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
            gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
            return gh, gw, None, None

    return LinearCE


def _teacher_chunk(teacher_parts: Any, t_hidden: Any, t_logits: Any, sl: slice) -> Any:
    import torch

    def logits() -> Any:
        with torch.no_grad():
            if t_hidden is not None:
                return teacher_parts[1](t_hidden[sl])
            return t_logits[sl]

    return logits


def loss_module(model: Any, teacher: Any = None, temperature: float = 1.0, chunk: int = CHUNK) -> Any:
    """`model` wrapped in a module whose forward returns (ce sum, kl sum or None, target count), so
    DDP can wrap the whole loss computation (its hooks need the forward to run through it)."""
    import torch

    class TargetLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model
            # Plain attributes, not submodules: DDP must neither sync the teacher nor see modules twice.
            object.__setattr__(self, "_teacher", teacher)
            object.__setattr__(self, "_parts", head_parts(model) or False)
            object.__setattr__(self, "_teacher_parts", (head_parts(teacher) or False) if teacher is not None else None)

        def forward(self, input_ids: Any, labels: Any, attention_mask: Any = None, position_ids: Any = None,
                    seq_lens: list | None = None) -> tuple:
            batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "position_ids": position_ids,
                     "seq_lens": seq_lens}
            return target_losses(self.lm, batch, self._teacher, temperature, chunk, self._parts, self._teacher_parts)

    return TargetLoss()
