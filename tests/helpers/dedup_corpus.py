"""Generated documents with known near-duplicate groups, for comparing dedup runs with the truth.

Text comes from the Python documentation shipped with CPython (`pydoc_data.topics`), so it is
real prose, offline. Each original is a random run of sentences (documents rarely share word
5-grams by chance); a share of them get copies in which one word in about `words_per_edit` is
replaced, at random places, so every member of a group is within Jaccard ~0.85-0.95 of every
other at word 5-grams. Groups are spread through the corpus in random order.

Used by tests/engines (20k documents) and benchmarks/spark (200k documents of ~1 KB).
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Iterable


def _sentences() -> list[str]:
    from pydoc_data.topics import topics

    text = " ".join(" ".join(topics[k].split()) for k in sorted(topics))
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


def grouped_docs(n: int, size: int = 1024, dup_share: float = 0.3, max_copies: int = 4, words_per_edit: int = 150,
                 seed: int = 11, tail: bool = False) -> tuple[list[str], list[int]]:
    """(texts, group label of each). About `dup_share` of the documents are copies (1 to
    `max_copies` per original) of an original with a word replaced per `words_per_edit` words
    (with `tail`, among its last three words: then every pair in a group is far above 0.9)."""
    rng = random.Random(seed)
    sentences = _sentences()
    vocab = sorted({w for s in sentences[:5000] for w in s.split()})
    originals = int(n * (1 - dup_share))
    docs: list[tuple[str, int]] = []
    for g in range(originals):
        buf, length = [], 0
        while length < size:
            s = sentences[rng.randrange(len(sentences))]
            buf.append(s)
            length += len(s) + 1
        docs.append((" ".join(buf), g))
    copies: list[tuple[str, int]] = []
    while originals + len(copies) < n:
        g = rng.randrange(originals)
        words = docs[g][0].split()
        for _ in range(rng.randint(1, max_copies)):
            if originals + len(copies) >= n:
                break
            changed = list(words)
            for _ in range(max(1, len(changed) // words_per_edit)):
                at = len(changed) - 1 - rng.randrange(3) if tail else rng.randrange(len(changed))
                changed[at] = rng.choice(vocab)
            copies.append((" ".join(changed), g))
    everything = docs + copies
    rng.shuffle(everything)
    return [t for t, _ in everything], [g for _, g in everything]


def pair_f1(truth: Iterable, predicted: Iterable) -> tuple[float, float, float]:
    """(precision, recall, F1) of the pairs put in one cluster, against the true groups."""
    def pairs(labels: Iterable) -> set[tuple[int, int]]:
        by: dict = {}
        for i, g in enumerate(labels):
            by.setdefault(g, []).append(i)
        return {p for members in by.values() for p in itertools.combinations(members, 2)}

    t, p = pairs(truth), pairs(predicted)
    tp = len(t & p)
    precision = tp / len(p) if p else 1.0
    recall = tp / len(t) if t else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
