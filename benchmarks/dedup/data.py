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
