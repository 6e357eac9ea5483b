"""Attention for padding-free micro-batches: PyTorch's sdpa run once per example.

A padding-free micro-batch (`dataset.collate(..., flat=True)`) is one sequence holding every
example end to end, positions restarting at each. Through transformers' own sdpa path that
sequence gets a dense block-diagonal mask, and the kernel computes every block of the
`tokens x tokens` square, most of it masked. Here each example's slice of queries, keys and
values goes through `scaled_dot_product_attention(is_causal=True)` on its own: the same result
(no attention across examples, causal within one), with the fused causal kernel and no wasted
blocks. Any call without the example lengths (evaluation, padded batches, generation) is plain
transformers sdpa.

The function is registered with transformers' AttentionInterface under `NAME`, with sdpa's mask
builder, and a model opts in with `model.set_attn_implementation(NAME)`.
"""

from __future__ import annotations

from typing import Any

NAME = "llmtools_varlen_sdpa"
LENGTHS_KWARG = "llmtools_seq_lens"  # the forward kwarg that carries the example lengths down to attention


def varlen_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lens = kwargs.pop(LENGTHS_KWARG, None)
    if lens is None or query.shape[0] != 1 or query.shape[2] != key.shape[2] or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    parts = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa)
        for q, k, v in zip(query.split(lens, dim=2), key.split(lens, dim=2), value.split(lens, dim=2))
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


_registered = False


def register() -> str:
    """Make `NAME` known to transformers (once per process); returns it."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(NAME, varlen_sdpa)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
        _registered = True
    return NAME


def use_varlen(model: Any) -> bool:
    """Switch a loaded model (or its peft wrapper) to per-example attention if it runs on sdpa;
    returns whether it did."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(base, "set_attn_implementation"):
        return False
    try:
        base.set_attn_implementation(register())
    except (ValueError, ImportError, AttributeError):
        return False
    return True
