"""Make N sentence pairs for the score benchmark from WordNet's usage examples (real English).

References are WordNet example sentences (apt: wordnet-base, /usr/share/wordnet). Each
hypothesis is its reference with seeded, MT-like noise: a dropped word, two words swapped, a
word replaced by another from the corpus, a doubled word. Written side by side as JSONL (for
`llmtools score`) and as plain text files (for the sacrebleu CLI).

    python benchmarks/score/make_data.py OUTDIR [N]
"""

from __future__ import annotations

import json
import os
import random
import re
import sys

WORDNET = "/usr/share/wordnet"


def sentences() -> list[str]:
    seen, out = set(), []
    for part in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(WORDNET, f"data.{part}"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                for s in re.findall(r'"([^"]{20,200})"', line):
                    s = s.strip()
                    if s not in seen:
                        seen.add(s)
                        out.append(s[0].upper() + s[1:] + ("" if s[-1] in ".?!" else "."))
    return out


def perturb(words: list[str], vocab: list[str], rng: random.Random) -> list[str]:
    words = list(words)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        op = rng.random()
        i = rng.randrange(len(words))
        if op < 0.3 and len(words) > 2:
            del words[i]
        elif op < 0.55 and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op < 0.85:
            words[i] = rng.choice(vocab)
        else:
            words.insert(i, words[i])
    return words


def main() -> None:
    outdir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    rng = random.Random(1234)
    pool = sentences()
    rng.shuffle(pool)
    refs = pool[:n]
    vocab = sorted({w for s in refs for w in s.split()})
    hyps = [" ".join(perturb(r.split(), vocab, rng)) for r in refs]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "pairs.jsonl"), "w", encoding="utf-8") as js, \
         open(os.path.join(outdir, "ref.txt"), "w", encoding="utf-8") as rf, \
         open(os.path.join(outdir, "hyp.txt"), "w", encoding="utf-8") as hf:
        for i, (h, r) in enumerate(zip(hyps, refs)):
            js.write(json.dumps({"id": i, "prediction": h, "reference": r}, ensure_ascii=False) + "\n")
            rf.write(r + "\n")
            hf.write(h + "\n")
    print(f"{n} pairs in {outdir}")


if __name__ == "__main__":
    main()
