"""Gopher-style quality rules for `normalize --quality`, and the parsing of their options.

A rule returns None to keep a text or `(reason, detail)` to drop it (see filters.py).

The quality rules and their default thresholds follow Gopher's MassiveWeb filters (Rae et al.
2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher", appendix
A.1.1 and table A1), as also used by datatrove's GopherQualityFilter/GopherRepetitionFilter.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- quality rules

# name -> (threshold key(s), help). Thresholds are upper bounds unless named min_*.
QUALITY_RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "symbol-ratio": (("max_symbol_ratio",), "'#' and ellipses ('...', '…') per word"),
    "word-length": (("min_mean_word_length", "max_mean_word_length"), "mean word length in characters"),
    "ellipsis-lines": (("max_ellipsis_lines",), "fraction of lines ending in '...' or '…'"),
    "bullet-lines": (("max_bullet_lines",), "fraction of lines starting with a bullet"),
    "alpha-words": (("min_alpha_words",), "fraction of words with at least one letter"),
    "dup-lines": (("max_dup_lines", "max_dup_line_chars"), "duplicate lines: by count, by characters"),
    "dup-paragraphs": (("max_dup_paragraphs", "max_dup_paragraph_chars"), "duplicate paragraphs: by count, by characters"),
    "top-ngrams": (("max_top_2gram", "max_top_3gram", "max_top_4gram"), "characters in the most frequent 2/3/4-gram"),
    "dup-ngrams": (
        tuple(f"max_dup_{n}gram" for n in range(5, 11)),
        "characters in repeated 5..10-grams",
    ),
}

QUALITY_DEFAULTS: dict[str, float] = {
    "min_words": 50,  # rules apply from this many words; shorter texts pass (see docs)
    "max_symbol_ratio": 0.1,
    "min_mean_word_length": 3,
    "max_mean_word_length": 10,
    "max_ellipsis_lines": 0.3,
    "max_bullet_lines": 0.9,
    "min_alpha_words": 0.8,
    "max_dup_lines": 0.3,
    "max_dup_line_chars": 0.2,
    "max_dup_paragraphs": 0.3,
    "max_dup_paragraph_chars": 0.2,
    "max_top_2gram": 0.20,
    "max_top_3gram": 0.18,
    "max_top_4gram": 0.16,
    "max_dup_5gram": 0.15,
    "max_dup_6gram": 0.14,
    "max_dup_7gram": 0.13,
    "max_dup_8gram": 0.12,
    "max_dup_9gram": 0.11,
    "max_dup_10gram": 0.10,
}

_BULLETS = ("-", "*", "•", "‣", "◦", "⁃", "●", "▪", "–", "·")
_PARA_SPLIT = re.compile(r"\n\s*\n")
_ALPHA = re.compile(r"[^\W\d_]")


@dataclass
class QualityConfig:
    rules: tuple[str, ...] = tuple(QUALITY_RULES)
    thresholds: dict[str, float] = field(default_factory=lambda: dict(QUALITY_DEFAULTS))


def _dup_stats(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of characters in them)."""
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup / len(items), (dup_chars / total_chars if total_chars else 0.0)


def _top_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Characters covered by the most frequent n-gram, over all word characters (Gopher)."""
    if len(words) < n or not total_chars:
        return 0.0
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count <= 1:
        return 0.0
    return sum(len(w) for w in gram) * count / total_chars


def _dup_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Characters in n-grams that repeat an earlier n-gram, over all word characters.

    Like Gopher's duplicate n-gram fraction: the first occurrence is not counted, a repeat
    is counted once and the scan jumps past it, so overlapping repeats are not double counted.
    """
    if len(words) < 2 * n or not total_chars:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    i, last = 0, len(words) - n
    while i <= last:
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated / total_chars


def quality_check(text: str, words: list[str], cfg: QualityConfig) -> tuple[str, dict[str, Any]] | None:
    """Apply the enabled Gopher rules to one text; the first failing rule is the reason."""
    t = cfg.thresholds
    n_words = len(words)
    if n_words < t["min_words"]:
        return None
    rules = cfg.rules
    if "symbol-ratio" in rules:
        symbols = text.count("#") + text.count("...") + text.count("…")
        ratio = symbols / n_words
        if ratio > t["max_symbol_ratio"]:
            return "quality:symbol-ratio", {"value": round(ratio, 4), "limit": t["max_symbol_ratio"]}
    word_chars = sum(len(w) for w in words)
    if "word-length" in rules:
        mean = word_chars / n_words
        if mean < t["min_mean_word_length"]:
            return "quality:word-length", {"value": round(mean, 4), "limit": t["min_mean_word_length"]}
        if mean > t["max_mean_word_length"]:
            return "quality:word-length", {"value": round(mean, 4), "limit": t["max_mean_word_length"]}
    lines = None
    if "ellipsis-lines" in rules or "bullet-lines" in rules or "dup-lines" in rules:
        lines = [ln.strip() for ln in text.split("\n")]
        lines = [ln for ln in lines if ln] or [""]
    if "ellipsis-lines" in rules and lines is not None:
        frac = sum(ln.endswith(("...", "…")) for ln in lines) / len(lines)
        if frac > t["max_ellipsis_lines"]:
            return "quality:ellipsis-lines", {"value": round(frac, 4), "limit": t["max_ellipsis_lines"]}
    if "bullet-lines" in rules and lines is not None:
        frac = sum(ln.startswith(_BULLETS) for ln in lines) / len(lines)
        if frac > t["max_bullet_lines"]:
            return "quality:bullet-lines", {"value": round(frac, 4), "limit": t["max_bullet_lines"]}
    if "alpha-words" in rules:
        frac = sum(1 for w in words if _ALPHA.search(w)) / n_words
        if frac < t["min_alpha_words"]:
            return "quality:alpha-words", {"value": round(frac, 4), "limit": t["min_alpha_words"]}
    if "dup-lines" in rules and lines is not None and len(lines) > 1:
        frac, chars = _dup_stats(lines)
        if frac > t["max_dup_lines"]:
            return "quality:dup-lines", {"value": round(frac, 4), "limit": t["max_dup_lines"]}
        if chars > t["max_dup_line_chars"]:
            return "quality:dup-lines", {"value": round(chars, 4), "limit": t["max_dup_line_chars"], "by": "chars"}
    if "dup-paragraphs" in rules and "\n\n" in text:
        paras = [p.strip() for p in _PARA_SPLIT.split(text) if p.strip()]
        if len(paras) > 1:
            frac, chars = _dup_stats(paras)
            if frac > t["max_dup_paragraphs"]:
                return "quality:dup-paragraphs", {"value": round(frac, 4), "limit": t["max_dup_paragraphs"]}
            if chars > t["max_dup_paragraph_chars"]:
                return "quality:dup-paragraphs", {"value": round(chars, 4), "limit": t["max_dup_paragraph_chars"], "by": "chars"}
    if "top-ngrams" in rules:
        for n in (2, 3, 4):
            frac = _top_ngram_fraction(words, n, word_chars)
            if frac > t[f"max_top_{n}gram"]:
                return "quality:top-ngrams", {"value": round(frac, 4), "limit": t[f"max_top_{n}gram"], "n": n}
    if "dup-ngrams" in rules:
        for n in range(5, 11):
            frac = _dup_ngram_fraction(words, n, word_chars)
            if frac > t[f"max_dup_{n}gram"]:
                return "quality:dup-ngrams", {"value": round(frac, 4), "limit": t[f"max_dup_{n}gram"], "n": n}
    return None


def parse_quality_rules(skip: tuple[str, ...]) -> tuple[str, ...]:
    off: set[str] = set()
    for item in skip:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in QUALITY_RULES:
                raise ValueError(f"unknown quality rule '{name}' (choose from {', '.join(QUALITY_RULES)})")
            off.add(name)
    return tuple(r for r in QUALITY_RULES if r not in off)


def parse_quality_thresholds(items: tuple[str, ...]) -> dict[str, float]:
    out = dict(QUALITY_DEFAULTS)
    for item in items:
        for pair in item.split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in QUALITY_DEFAULTS:
                raise ValueError(f"--quality-set wants KEY=VALUE with KEY one of {', '.join(QUALITY_DEFAULTS)}; got '{pair}'")
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"--quality-set {key}: '{value}' is not a number") from None
    return out
