"""Real English text available offline: the Python documentation topics shipped with CPython
(`pydoc_data.topics`, ~465 KB of reference prose and code examples)."""

from __future__ import annotations

import re


def topic_paragraphs(min_words: int = 60) -> list[tuple[str, str]]:
    """(topic, paragraph) for every paragraph of at least `min_words` words."""
    from pydoc_data.topics import topics

    out, seen = [], []
    for name in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[name]):
            para = " ".join(para.split())
            if len(para.split()) < min_words:
                continue
            # The topics repeat passages across pages; a label set needs distinct sources, so
            # drop a paragraph sharing >= 10% of its word 5-grams with an earlier one.
            toks = para.lower().split()
            grams = {tuple(toks[i : i + 5]) for i in range(len(toks) - 4)}
            if any(len(grams & g) >= 0.1 * min(len(grams), len(g)) for g in seen):
                continue
            seen.append(grams)
            out.append((name, para))
    return out


def all_words() -> list[str]:
    from pydoc_data.topics import topics

    return " ".join(topics[k] for k in sorted(topics)).split()


def kb_docs(n: int, size: int = 1024) -> list[str]:
    """n documents of about `size` characters: consecutive word runs of the topics text,
    starting at shifted offsets so documents are distinct."""
    words = all_words()
    docs, i, step = [], 0, 37
    while len(docs) < n:
        start = (i * step) % (len(words) - 400)
        buf, length = [], 0
        for w in words[start:]:
            buf.append(w)
            length += len(w) + 1
            if length >= size:
                break
        docs.append(" ".join(buf))
        i += 1
    return docs


def mixed_docs(n: int, size: int = 1024, dup_share: float = 0.2, seed: int = 7) -> list[str]:
    """n documents of about `size` characters, mostly distinct: each is a random run of the
    topics' sentences (so documents rarely share 5-grams by chance), and `dup_share` of them
    are copies of an earlier document with a few words changed (near-duplicates), the kind of
    mix a web crawl has. Deterministic for a seed."""
    import random

    from pydoc_data.topics import topics

    text = " ".join(" ".join(topics[k].split()) for k in sorted(topics))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    rng = random.Random(seed)
    docs: list[str] = []
    while len(docs) < n:
        if docs and rng.random() < dup_share:
            words = rng.choice(docs).split()
            for _ in range(max(1, len(words) // 100)):
                words[rng.randrange(len(words))] = rng.choice(words)
            docs.append(" ".join(words))
            continue
        buf, length = [], 0
        while length < size:
            s = sentences[rng.randrange(len(sentences))]
            buf.append(s)
            length += len(s) + 1
        docs.append(" ".join(buf))
    return docs
