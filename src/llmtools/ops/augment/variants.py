"""Seeded, traceable data augmentation: WordNet synonyms, EDA and LLM-driven methods.

`augment(records, ...)` yields each original (unless keep_original=False) followed by its
variants. Every variant is a copy of its source record with the text field replaced and two
keys added: `augmented_from` (the source's id, or "source:line") and
`augmentation: {method, params, seed, similarity}`.

Randomness: each (record, method, variant) draws from its own random.Random seeded by a hash of
(--seed, record ordinal, method, variant index), so results do not depend on batch sizes or on
which other methods run.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Callable, Iterable, Iterator, Sequence

from llmtools.io import get_field, get_text, set_field, split_path
from llmtools.prompts import PromptTemplate, TemplateError

WORDNET_METHODS = ("synonym", "eda")
LLM_METHODS = ("paraphrase", "backtranslate", "synthesize")
METHODS = WORDNET_METHODS + LLM_METHODS
EDA_OPS = ("swap", "delete", "insert")

PIVOTS = {
    "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "nl": "Dutch",
    "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ar": "Arabic", "hi": "Hindi",
}

# Built-in prompt templates. {text}, {pivot} (language name), {examples} and {instruction} are
# filled in; replace any of them with --prompt-template NAME=FILE. A FILE.j2 is a Jinja2 template
# (llmtools.prompts): the record's fields are variables too, and it may render chat messages.
PROMPTS = {
    "paraphrase": (
        "Paraphrase the text below. Keep its meaning, its language and any placeholders such as "
        "<EMAIL> exactly as they are. Reply with the paraphrase only.\n\nText: {text}"
    ),
    "backtranslate_to": "Translate the text below into {pivot}. Reply with the translation only.\n\nText: {text}",
    "backtranslate_from": "Translate the text below into English. Reply with the translation only.\n\nText: {text}",
    "synthesize": (
        "Here are examples from a dataset:\n\n{examples}\n\nWrite one new example in the same style, "
        "format and length, on a similar but different topic. Reply with the new example only."
    ),
    "synthesize_instruction": "{instruction}\n\nExample of the style wanted:\n{text}\n\nReply with the new example only.",
}

_LABEL = re.compile(r"^\s*(?:paraphrase|translation|new example|example|text|answer|output)\s*:\s*", re.I)


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from --seed and the variant's coordinates (stable across runs and Pythons)."""
    digest = hashlib.blake2b(repr((seed,) + parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def similarity(a: str, b: str) -> float:
    """Word-sequence similarity in [0, 1]: difflib's ratio over lowercased word tokens.

    Order-aware, so a swap counts as a change; 1.0 means the same words in the same order.
    """
    wa, wb = re.findall(r"\w+", a.lower()), re.findall(r"\w+", b.lower())
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def clean_llm_output(text: str) -> str:
    """Strip what chat models wrap answers in: labels, surrounding quotes, trailing chatter lines."""
    text = text.strip()
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'\u201c":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == "\u201c" and text[-1] == "\u201d":
        text = text[1:-1].strip()
    return text


@dataclass
class AugmentConfig:
    methods: Sequence[str] = ("synonym",)
    n: int = 1
    seed: int = 0
    field: str = "text"
    keep_original: bool = True
    id_field: str | None = "id"
    synonym_rate: float = 0.1
    eda_ops: Sequence[str] = EDA_OPS
    swap_rate: float = 0.1
    delete_rate: float = 0.1
    insert_rate: float = 0.1
    min_similarity: float = 0.0
    max_similarity: float = 1.0
    # LLM methods
    pivot: str = "fr"
    instruction: str | None = None
    prompts: dict[str, str] = dc_field(default_factory=dict)
    templates: dict[str, PromptTemplate] = dc_field(default_factory=dict)  # NAME -> a .j2 template
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    batch_size: int = 8
    model_id: dict | None = None  # the loaded model's identity, recorded in params

    def prompt(self, name: str) -> str:
        return self.prompts.get(name, PROMPTS[name])

    def render(self, name: str, record: dict, **values: Any) -> str | list[dict]:
        """Prompt `name` for a record: a string, or chat messages from a .j2 template that renders
        them. Raises TemplateError when a .j2 template needs a field the record lacks."""
        template = self.templates.get(name)
        if template is None:
            return self.prompt(name).format(**values)
        kind, item = template.render(record, **values)
        return item

    def templates_for(self) -> list[str]:
        """The .j2 prompt names the chosen methods use."""
        names = {"paraphrase": ("paraphrase",), "backtranslate": ("backtranslate_to", "backtranslate_from"),
                 "synthesize": ("synthesize_instruction",) if self.instruction else ("synthesize",)}
        return [n for m in self.methods for n in names.get(m, ()) if n in self.templates]

    @property
    def uses_llm(self) -> bool:
        return any(m in LLM_METHODS for m in self.methods)


@dataclass
class Variant:
    text: str
    method: str
    index: int
    seed: int
    params: dict


class Guard:
    """Drops variants that are empty, identical to the source or outside the similarity bounds."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def check(self, source: str, variant: str) -> tuple[str | None, float]:
        if not variant.strip():
            return "variant is empty", 0.0
        if variant.strip() == source.strip():
            return "variant is identical to its source", 1.0
        sim = similarity(source, variant)
        if sim < self.cfg.min_similarity:
            return f"variant similarity {sim:.3f} below --min-similarity {self.cfg.min_similarity}", sim
        if sim > self.cfg.max_similarity:
            return f"variant similarity {sim:.3f} above --max-similarity {self.cfg.max_similarity}", sim
        return None, sim


def _wordnet_variants(aug: Any, text: str, ordinal: int, cfg: AugmentConfig) -> Iterator[Variant]:
    import random

    for method in cfg.methods:
        if method not in WORDNET_METHODS:
            continue
        for j in range(cfg.n):
            seed = derive_seed(cfg.seed, ordinal, method, j)
            rng = random.Random(seed)
            if method == "synonym":
                out, _ = aug.synonym_replace(text, rng, cfg.synonym_rate)
                params = {"rate": cfg.synonym_rate}
            else:
                # One operation per variant, cycling through the enabled ones (as in the EDA paper,
                # which makes n/4 variants per operation).
                op = cfg.eda_ops[j % len(cfg.eda_ops)]
                rate = {"swap": cfg.swap_rate, "delete": cfg.delete_rate, "insert": cfg.insert_rate}[op]
                fn = {"swap": aug.random_swap, "delete": aug.random_delete, "insert": aug.random_insert}[op]
                out, _ = fn(text, rng, rate)
                params = {"op": op, "rate": rate}
            yield Variant(out, method, j, seed, params)


def _llm_variants(model: Any, batch: list[tuple[int, str, dict]], cfg: AugmentConfig) -> dict[int, list[Variant]]:
    """LLM variants for a batch of (ordinal, text, record): one batched model call per (method,
    variant)."""
    from llmtools.models import GenerationParams

    out: dict[int, list[Variant]] = {o: [] for o, _, _ in batch}
    records = [r for _, _, r in batch]
    used = {name: cfg.templates[name].sha256 for name in cfg.templates_for()}
    for method in cfg.methods:
        if method not in LLM_METHODS:
            continue
        for j in range(cfg.n):
            seed = derive_seed(cfg.seed, method, j)
            params = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
            texts = [t for _, t, _ in batch]
            info: dict[str, Any] = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
            if used:
                info["prompt_templates"] = used
            if method == "paraphrase":
                results = _ask(model, [cfg.render("paraphrase", r, text=t) for t, r in zip(texts, records)], params)
            elif method == "backtranslate":
                pivot = PIVOTS.get(cfg.pivot, cfg.pivot)
                there = _ask(model, [cfg.render("backtranslate_to", r, text=t, pivot=pivot)
                                     for t, r in zip(texts, records)], params)
                results = _ask(model, [cfg.render("backtranslate_from", r, text=t, pivot=pivot)
                                       for t, r in zip(there, records)], params)
                info["pivot"] = cfg.pivot
            else:
                if cfg.instruction:
                    prompts = [cfg.render("synthesize_instruction", r, instruction=cfg.instruction, text=t)
                               for t, r in zip(texts, records)]
                    info["instruction"] = cfg.instruction
                else:
                    # The record itself plus up to two neighbours from the batch as style examples.
                    prompts = []
                    for k, t in enumerate(texts):
                        shots = [t] + [texts[(k + d) % len(texts)] for d in (1, 2) if len(texts) > d]
                        examples = "\n\n".join(f"Example {m + 1}:\n{s}" for m, s in enumerate(shots))
                        prompts.append(cfg.render("synthesize", records[k], examples=examples, text=t))
                results = _ask(model, prompts, params)
            if cfg.model_id:
                info["model"] = cfg.model_id
            for (ordinal, _, _), text in zip(batch, results):
                out[ordinal].append(Variant(text, method, j, seed, dict(info)))
    return out


def _ask(model: Any, prompts: list[str | list[dict]], params: Any) -> list[str]:
    conversations = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
    completions = model.chat_batch(conversations, params)
    return [clean_llm_output(c.text) for c in completions]


def augment(
    records: Iterable[dict],
    cfg: AugmentConfig,
    *,
    where: Callable[[dict], str] | None = None,
    on_drop: Callable[..., None] | None = None,
    wordnet_augmenter: Any = None,
    model: Any = None,
    stats: dict | None = None,
    on_bad: Callable[[dict, str], bool] | None = None,
    first: int = 0,
) -> Iterator[dict]:
    """Yield originals and their variants, in input order. See the module docstring.

    `first` is the number of records before these in the whole input (a partition's place, on
    an engine that splits the input): seeds use each record's global ordinal, and LLM batches
    are cut at global multiples of batch_size, so a part's variants are those of a whole run.

    `on_bad(record, reason)` applies --on-error to a record a .j2 prompt template cannot render
    (a missing field): True keeps it (unchanged, without variants), False drops it. Without it,
    such a record raises TemplateError."""
    stats = stats if stats is not None else {}
    guard = Guard(cfg)
    uses_llm = cfg.uses_llm
    uses_wordnet = any(m in WORDNET_METHODS for m in cfg.methods)
    if uses_wordnet and wordnet_augmenter is None:
        from llmtools.ops.augment.wordnet import WordNetAugmenter

        wordnet_augmenter = WordNetAugmenter()
    if uses_llm and model is None:
        raise ValueError("LLM methods need a model")
    batch_size = cfg.batch_size if uses_llm else 1
    pending: list[tuple[int, dict, str | None]] = []

    checked = cfg.templates_for() if uses_llm else []

    def renders(rec: dict, text: str) -> str | None:
        """Why a .j2 prompt cannot be rendered for this record, or None."""
        values = {"text": text, "pivot": PIVOTS.get(cfg.pivot, cfg.pivot), "examples": text,
                  "instruction": cfg.instruction or ""}
        for name in checked:
            try:
                cfg.templates[name].render(rec, **values)
            except TemplateError as exc:
                return exc.message
        return None

    def flush() -> Iterator[dict]:
        texts = [(o, t, r) for o, r, t in pending if t is not None]
        llm = _llm_variants(model, texts, cfg) if uses_llm and texts else {}
        for ordinal, rec, text in pending:
            source_ref = _source_ref(rec, cfg.id_field, where)  # before the original is written
            if cfg.keep_original:
                yield rec
            if text is None:
                continue  # a record passed through under --on-error keep
            variants = list(_wordnet_variants(wordnet_augmenter, text, ordinal, cfg)) if uses_wordnet else []
            variants += llm.get(ordinal, [])
            seen_texts: set[str] = set()
            for v in variants:
                reason, sim = guard.check(text, v.text)
                if reason is None and v.text.strip() in seen_texts:
                    reason = "variant duplicates an earlier variant of the same record"
                seen_texts.add(v.text.strip())
                key = f"{v.method}_dropped" if reason else v.method
                stats[key] = stats.get(key, 0) + 1
                out = _copy_along(rec, cfg.field)
                set_field(out, cfg.field, v.text)
                out["augmented_from"] = source_ref
                out["augmentation"] = {"method": v.method, "params": v.params, "seed": v.seed, "variant": v.index, "similarity": round(sim, 4)}
                if reason:
                    if on_drop:
                        on_drop(out, reason, variant=True)
                    continue
                yield out
        pending.clear()

    for ordinal, rec in enumerate(records, first + 1):
        text = get_text(rec, cfg.field)
        if checked and text is not None:
            reason = renders(rec, text)
            if reason is not None:
                if on_bad is None:
                    raise TemplateError(reason)
                if not on_bad(rec, reason):
                    continue
                text = None  # kept unchanged, without variants
        pending.append((ordinal, rec, text))
        if len(pending) >= batch_size or ordinal % batch_size == 0:
            yield from flush()
    if pending:
        yield from flush()


def _copy_along(rec: dict, path: str) -> dict:
    """A copy of `rec` in which the objects and lists on the way to `path` are new, so setting the
    field leaves `rec` as it was; every other value is shared. (copy.deepcopy would copy them
    all, recursing once per level: a record nested a few hundred levels deep, which is valid
    input, ran it out of stack.)"""
    out = dict(rec)
    cur: Any = out
    for key in split_path(path)[:-1]:
        if isinstance(cur, dict):
            child = cur.get(key)
        elif isinstance(cur, list) and key.lstrip("-").isdigit() and -len(cur) <= int(key) < len(cur):
            key, child = int(key), cur[int(key)]
        else:
            break
        if not isinstance(child, (dict, list)):
            break
        child = dict(child) if isinstance(child, dict) else list(child)
        cur[key] = child
        cur = child
    return out


def _source_ref(rec: dict, id_field: str | None, where: Callable[[dict], str] | None) -> Any:
    if id_field:
        value = get_field(rec, id_field)
        if value is not None:
            return value
    return where(rec) if where else None
