"""Training data for `finetune`: record shapes, tokenization with loss masks, packing, batching.

Three record shapes are understood:

- ``text``: ``{"text": "..."}`` (the field is chosen with ``--field``), a plain causal-LM example;
  every token is trained on.
- ``prompt`` + ``completion``: the loss is on the completion tokens only, unless
  ``loss_on="all"``.
- ``messages``: a chat, rendered with the model's own chat template; the loss is on the
  assistant turns only (their content and end-of-turn marker), unless ``loss_on="all"``.

Everything here is deterministic: the order of examples in an epoch is a function of the seed and
the epoch number only, so a resumed run sees exactly the batches an uninterrupted run would.
Nothing here imports torch at module import time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from llmtools.errors import UsageError
from llmtools.io import get_field

FORMATS = ("auto", "text", "prompt-completion", "messages")
ROLES = ("system", "user", "assistant", "tool", "developer")
IGNORE = -100


@dataclass
class Fields:
    """Where each shape keeps its parts (all dotted paths)."""

    text: str = "text"
    prompt: str = "prompt"
    completion: str = "completion"
    messages: str = "messages"


def detect_format(record: Any, fields: Fields) -> str | None:
    """The shape of one record, or None when it has none of them."""
    if not isinstance(record, dict):
        return None
    if get_field(record, fields.messages) is not None:
        return "messages"
    if get_field(record, fields.prompt) is not None or get_field(record, fields.completion) is not None:
        return "prompt-completion"
    if get_field(record, fields.text) is not None:
        return "text"
    return None


def check_record(record: Any, fmt: str, fields: Fields) -> str | None:
    """None if `record` is a usable example of shape `fmt`, else the reason it is not."""
    if fmt == "text":
        value = get_field(record, fields.text)
        if value is None:
            return f"missing field '{fields.text}'"
        if not isinstance(value, str):
            return f"field '{fields.text}' is {type(value).__name__}, not a string"
        if not value.strip():
            return f"field '{fields.text}' is empty"
        return None
    if fmt == "prompt-completion":
        for path in (fields.prompt, fields.completion):
            value = get_field(record, path)
            if value is None:
                return f"missing field '{path}'"
            if not isinstance(value, str):
                return f"field '{path}' is {type(value).__name__}, not a string"
        if not get_field(record, fields.completion).strip():
            return f"field '{fields.completion}' is empty"
        return None
    if fmt == "messages":
        msgs = get_field(record, fields.messages)
        if msgs is None:
            return f"missing field '{fields.messages}'"
        if not isinstance(msgs, list) or not msgs:
            return f"field '{fields.messages}' must be a non-empty list of messages"
        for i, msg in enumerate(msgs):
            if not isinstance(msg, dict):
                return f"message {i} is {type(msg).__name__}, not an object"
            if msg.get("role") not in ROLES:
                return f"message {i} has role {msg.get('role')!r}; expected one of {', '.join(ROLES)}"
            if not isinstance(msg.get("content"), str):
                return f"message {i} has no string 'content'"
        if not any(m["role"] == "assistant" for m in msgs):
            return "no assistant message to train on"
        return None
    raise UsageError(f"unknown format {fmt!r}")


class RecordValidator:
    """The `validate` hook for io.Job: fixes the format on the first usable record (for `auto`).

    A record of another shape than the first one is bad input, so a mixed file fails loudly
    instead of training half on the wrong text.
    """

    def __init__(self, fmt: str, fields: Fields):
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
        self.fmt = None if fmt == "auto" else fmt
        self.fields = fields

    def __call__(self, record: dict) -> str | None:
        if self.fmt is None:
            found = detect_format(record, self.fields)
            if found is None:
                f = self.fields
                return f"no training fields: expected '{f.text}', '{f.prompt}'+'{f.completion}' or '{f.messages}'"
            reason = check_record(record, found, self.fields)
            if reason is None:
                self.fmt = found
            return reason
        return check_record(record, self.fmt, self.fields)


# --------------------------------------------------------------------------- tokenization


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _eos_id(tokenizer: Any) -> int | None:
    return tokenizer.eos_token_id


def _encode_text(tokenizer: Any, text: str, add_special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def tokenize_record(
    record: dict,
    fmt: str,
    tokenizer: Any,
    fields: Fields,
    loss_on: str = "completion",
    max_seq_len: int | None = None,
) -> Example:
    """One record -> token ids and labels (IGNORE where no loss is taken), truncated on the right."""
    eos = _eos_id(tokenizer)
    if fmt == "text":
        ids = _encode_text(tokenizer, get_field(record, fields.text), True)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        labels = list(ids)
    elif fmt == "prompt-completion":
        prompt_ids = _encode_text(tokenizer, get_field(record, fields.prompt), True)
        completion_ids = _encode_text(tokenizer, get_field(record, fields.completion), False)
        if eos is not None:
            completion_ids.append(eos)
        ids = prompt_ids + completion_ids
        masked = [IGNORE] * len(prompt_ids) if loss_on == "completion" else list(prompt_ids)
        labels = masked + completion_ids
    elif fmt == "messages":
        ids, labels = _tokenize_chat(get_field(record, fields.messages), tokenizer, loss_on)
    else:
        raise UsageError(f"unknown format {fmt!r}")
    if max_seq_len is not None and len(ids) > max_seq_len:
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    return Example(ids, labels)


def _render(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _tokenize_chat(messages: list[dict], tokenizer: Any, loss_on: str) -> tuple[list[int], list[int]]:
    """Render the chat once; mark the characters of each assistant turn, then map them to tokens.

    An assistant turn spans from the end of the rendering of the turns before it (with the
    generation prompt) to the end of the rendering that includes it, so the end-of-turn marker is
    trained too and the model learns to stop.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise UsageError("the base model's tokenizer has no chat template, so 'messages' records cannot be rendered; use prompt/completion records")
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    full = _render(tokenizer, msgs, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        before = _render(tokenizer, msgs[:i], add_generation_prompt=True) if i else ""
        through = _render(tokenizer, msgs[: i + 1], add_generation_prompt=False)
        if not full.startswith(through) or not through.startswith(before):
            raise UsageError(
                "the chat template does not render conversations incrementally, so assistant turns cannot be "
                "located; train with --loss-on all or use prompt/completion records"
            )
        spans.append((len(before), len(through)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if loss_on == "all":
        return ids, list(ids)
    labels = []
    for tok, (start, end) in zip(ids, enc["offset_mapping"]):
        inside = any(s <= start < e or (start == end and s < end <= e) for s, e in spans)
        labels.append(tok if inside else IGNORE)
    return ids, labels


# --------------------------------------------------------------------------- packing and order


@dataclass
class Sequence_:
    """One training row: a single example or several packed ones (positions restart per example)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None
    n_examples: int = 1

    @property
    def n_target(self) -> int:
        # The label at position t is predicted from position t-1, so the first label never counts.
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def pack(examples: Sequence[Example], max_seq_len: int) -> list[Sequence_]:
    """Best-fit-decreasing bin packing of whole examples into rows of at most `max_seq_len`.

    Examples are never split, so no completion is cut from its prompt; each example's positions
    restart at 0, which transformers turns into a block-diagonal mask (no attention across
    examples) when the model is called without an attention mask.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i].input_ids)
        best = -1
        for b, room in enumerate(free):
            if room >= n and (best < 0 or room < free[best]):
                best = b
        if best < 0:
            bins.append([i])
            free.append(max_seq_len - n)
        else:
            bins[best].append(i)
            free[best] -= n
    rows = []
    for members in bins:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for i in sorted(members):
            ex = examples[i]
            ids += ex.input_ids
            labels += [IGNORE] + ex.labels[1:]  # never predict an example's first token from the previous one
            pos += list(range(len(ex.input_ids)))
        rows.append(Sequence_(ids, labels, pos, len(members)))
    return rows


def as_rows(examples: Sequence[Example]) -> list[Sequence_]:
    return [Sequence_(ex.input_ids, ex.labels) for ex in examples]


def split_eval(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded split: the same records go to eval for the same seed and input."""
    if not 0 < fraction < 1:
        raise UsageError("--eval-fraction must be between 0 and 1")
    n_eval = max(1, round(len(records) * fraction))
    if n_eval >= len(records):
        raise UsageError(f"--eval-fraction {fraction} leaves no training records out of {len(records)}")
    idx = list(range(len(records)))
    random.Random(f"llmtools-eval-split:{seed}").shuffle(idx)
    chosen = set(idx[:n_eval])
    train = [r for i, r in enumerate(records) if i not in chosen]
    held = [r for i, r in enumerate(records) if i in chosen]
    return train, held


@dataclass
class Schedule:
    """Which rows make each micro-batch and optimizer step: a pure function of seed and epoch.

    With `world` processes, each epoch's permutation is padded (by repeating its head, as
    torch's DistributedSampler does) to a multiple of `world * batch_size` and rank r takes every
    world-th micro-batch, so every rank runs the same number of steps. A single process never
    repeats a row: its last micro-batch may be smaller.
    """

    n_rows: int
    batch_size: int
    grad_accum: int
    seed: int
    world: int = 1
    rank: int = 0
    shuffle: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def micro_per_epoch(self) -> int:
        per_step = self.batch_size * self.world
        return -(-self.n_rows // per_step)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.micro_per_epoch // self.grad_accum)

    def permutation(self, epoch: int) -> list[int]:
        if epoch in self._cache:
            return self._cache[epoch]
        idx = list(range(self.n_rows))
        if self.shuffle:
            random.Random(f"llmtools-finetune:{self.seed}:{epoch}").shuffle(idx)
        total = self.micro_per_epoch * self.batch_size * self.world if self.world > 1 else len(idx)
        while len(idx) < total:
            idx += idx[: total - len(idx)]
        self._cache = {epoch: idx}
        return idx

    def micro_batches(self, epoch: int, step_in_epoch: int, rank: int | None = None) -> list[list[int]]:
        """The micro-batches (lists of row indices) of one optimizer step for one rank."""
        rank = self.rank if rank is None else rank
        perm = self.permutation(epoch)
        first = step_in_epoch * self.grad_accum
        last = min(first + self.grad_accum, self.micro_per_epoch)
        out = []
        for m in range(first, last):
            start = (m * self.world + rank) * self.batch_size
            out.append(perm[start : start + self.batch_size])
        return out

    def all_ranks(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        batches = []
        for r in range(self.world):
            batches += self.micro_batches(epoch, step_in_epoch, r)
        return batches


def unpack(row: Sequence_) -> list[Sequence_]:
    """A packed row back into its records (split where the positions restart); other rows as they are.
    Each piece keeps the row's labels, whose first one per record is already IGNORE."""
    if row.position_ids is None or row.n_examples <= 1:
        return [row]
    starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.position_ids)]
    return [Sequence_(row.input_ids[a:b], row.labels[a:b], row.position_ids[a:b]) for a, b in zip(starts, starts[1:])]


def pass_tokens(rows: Sequence[Sequence_], flat: bool) -> int:
    """Tokens a forward pass over `rows` computes: their sum laid end to end, else rows x the longest."""
    if not rows:
        return 0
    lens = [len(r.input_ids) for r in rows]
    return sum(lens) if flat else len(lens) * max(lens)


def split_passes(rows: Sequence[Sequence_], budget: int | None, flat: bool) -> list[list[Sequence_]]:
    """A micro-batch as consecutive forward/backward passes of at most `budget` tokens each.

    Activation memory grows with the tokens of one pass, so this is what bounds peak memory. The
    step's loss is a sum over target tokens divided by the step's target count, so running the
    micro-batch as several passes and accumulating their gradients gives the same gradients.
    Rows keep their order. In a padding-free batch (`flat`) a packed row longer than the budget is
    split into its records; one record (or, padded, one row) longer than the budget is a pass alone.
    `budget` None or 0: one pass.
    """
    if not budget or pass_tokens(rows, flat) <= budget:
        return [list(rows)]
    pieces: list[Sequence_] = []
    for r in rows:
        pieces += unpack(r) if flat and len(r.input_ids) > budget else [r]
    passes: list[list[Sequence_]] = []
    current: list[Sequence_] = []
    for piece in pieces:
        if current and pass_tokens(current + [piece], flat) > budget:
            passes.append(current)
            current = []
        current.append(piece)
    if current:
        passes.append(current)
    return passes


def collate(rows: Sequence[Sequence_], pad_id: int, packed: bool, flat: bool = False) -> dict:
    """Pad a micro-batch on the right. Packed rows carry position_ids and no attention mask.

    `flat`: no padding at all: the rows are laid end to end in one sequence, positions restart
    at each row (and at each example of a packed row), and each row's first label is dropped so
    that no row is predicted from the one before it. `seq_lens` then lists the pieces that attend
    only within themselves (one per example), for attention that runs per piece.
    """
    import torch

    if flat:
        ids: list[int] = []
        labels_: list[int] = []
        pos: list[int] = []
        for r in rows:
            ids += r.input_ids
            labels_ += [IGNORE] + r.labels[1:]
            pos += r.position_ids if r.position_ids is not None else list(range(len(r.input_ids)))
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels_], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "seq_lens": [b - a for a, b in zip(starts, starts[1:])],
        }

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    batch: dict[str, Any] = {}
    if packed:
        pos = torch.zeros((len(rows), width), dtype=torch.long)
    else:
        mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        if packed:
            pos[i, :n] = torch.tensor(r.position_ids if r.position_ids is not None else list(range(n)))
            pos[i, n:] = torch.arange(width - n)  # padding becomes its own tiny "document"
        else:
            mask[i, :n] = 1
    batch["input_ids"] = ids
    batch["labels"] = labels
    if packed:
        batch["position_ids"] = pos
    else:
        batch["attention_mask"] = mask
    return batch


def tokenize_all(
    records: Iterable[dict],
    fmt: str,
    tokenizer: Any,
    fields: Fields,
    loss_on: str,
    max_seq_len: int,
    on_drop: Callable[[dict, str], None] | None = None,
) -> list[Example]:
    """Tokenize every record; a record left with no target token after truncation is dropped."""
    out = []
    for rec in records:
        ex = tokenize_record(rec, fmt, tokenizer, fields, loss_on=loss_on, max_seq_len=max_seq_len)
        if sum(1 for x in ex.labels[1:] if x != IGNORE) == 0:
            if on_drop is not None:
                on_drop(rec, f"no target tokens within --max-seq-len {max_seq_len}")
            continue
        out.append(ex)
    return out
