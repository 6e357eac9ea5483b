"""Quality of `llmtools dedup` at its DEFAULT settings on labelled sets built from real text.

Source: the Python documentation topics shipped with CPython (pydoc_data.topics), split into
paragraphs of >= 60 words. Nothing here was used to choose the defaults (0.8 / 128 perms /
word 5-grams were fixed before this set existed).

1. Duplicate pairs: 120 paragraphs each get a group of variants (see VARIANTS); the other
   paragraphs are singletons (hard negatives: same documentation, same vocabulary). Pairs in
   one predicted cluster are predicted duplicates; pairs in one group are true duplicates.
2. Containment (--against): 100 reference paragraphs; a positive is ~300 words of other
   documentation with a contiguous half of one reference paragraph lifted into the middle; a
   negative is the same construction around a different paragraph of the SAME topic page.

Run: .venv/bin/python benchmarks/dedup/bench_quality.py
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from data import topic_paragraphs  # noqa: E402

from llmtools.ops.dedup import DedupOptions, dedup  # noqa: E402

RNG = random.Random(2024)


def sentences(text):
    return re.split(r"(?<=[.!?])\s+", text)


def v_format(p, pool):  # same words, different case and whitespace
    return "  ".join(p.upper().split(" ")) if RNG.random() < 0.5 else p.replace(". ", ".\n\n")


def v_drop_sentence(p, pool):
    s = sentences(p)
    if len(s) < 3:
        return " ".join(p.split()[:-8])
    del s[RNG.randrange(len(s))]
    return " ".join(s)


def v_boilerplate(p, pool):
    return p + " " + RNG.choice(["See also the reference manual for details.", "Changed in version 3.12.", "(Contributed by a volunteer.)"])


def v_typos(p, pool, rate=0.03):
    toks = p.split()
    for _ in range(max(1, int(len(toks) * rate))):
        toks[RNG.randrange(len(toks))] = RNG.choice(pool)
    return " ".join(toks)


def v_paraphrase(p, pool):  # light paraphrase: sentence order swapped and ~8% words replaced
    s = sentences(p)
    if len(s) >= 2:
        i = RNG.randrange(len(s) - 1)
        s[i], s[i + 1] = s[i + 1], s[i]
    return v_typos(" ".join(s), pool, rate=0.08)


VARIANTS = {"format": v_format, "drop_sentence": v_drop_sentence, "boilerplate": v_boilerplate, "typos_3pct": v_typos, "paraphrase": v_paraphrase}


def pair_scores(groups_true, clusters_pred):
    def pairs(labels):
        by = {}
        for i, g in enumerate(labels):
            by.setdefault(g, []).append(i)
        return {p for members in by.values() for p in itertools.combinations(members, 2)}

    t, p = pairs(groups_true), pairs(clusters_pred)
    tp = len(t & p)
    prec = tp / len(p) if p else 1.0
    rec = tp / len(t) if t else 1.0
    return prec, rec, 2 * prec * rec / (prec + rec) if prec + rec else 0.0, len(t), len(p)


def duplicate_quality(paras):
    pool = " ".join(p for _, p in paras).split()
    recs, truth, kinds = [], [], []
    for g, (_, para) in enumerate(paras[:120]):
        recs.append({"text": para}); truth.append(g); kinds.append("original")
        for name, fn in VARIANTS.items():
            recs.append({"text": fn(para, pool)}); truth.append(g); kinds.append(name)
    for g, (_, para) in enumerate(paras[120:], start=120):
        recs.append({"text": para}); truth.append(g); kinds.append("singleton")
    order = list(range(len(recs)))
    RNG.shuffle(order)
    recs = [dict(recs[i], _i=i) for i in order]
    truth = [truth[i] for i in order]
    kinds = [kinds[i] for i in order]
    lines = []
    for label, opts in (("default (estimate)", DedupOptions(mark=True)), ("--verify", DedupOptions(mark=True, verify=True))):
        out = list(dedup([dict(r) for r in recs], opts))
        pred = [r["dup_cluster"] for r in out]
        prec, rec, f1, nt, npred = pair_scores(truth, pred)
        lines.append(f"| {label} | {prec:.3f} | {rec:.3f} | {f1:.3f} | {nt} | {npred} |")
        if label.startswith("default"):
            orig_cluster = {g: c for g, k, c in zip(truth, kinds, pred) if k == "original"}
            found = {}
            for g, k, c, r in zip(truth, kinds, pred, out):
                if k == "singleton":
                    found.setdefault(k, []).append(int(r["is_duplicate"]))
                elif k != "original":
                    found.setdefault(k, []).append(int(c == orig_cluster[g]))
            per_kind = {k: sum(v) / len(v) for k, v in found.items()}
    print(f"Duplicate pairs: {len(recs)} records, 120 groups of 6 + {len(paras) - 120} singletons")
    print("| settings | precision | recall | F1 | true pairs | predicted pairs |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    print("\nShare of each variant put in the same cluster as its original (default settings; for singletons: share wrongly marked duplicate):")
    print("| variant | share |")
    print("|---|---:|")
    for k, v in per_kind.items():
        print(f"| {k} | {v:.3f} |")


def containment_quality(paras):
    by_topic = {}
    for i, (topic, _) in enumerate(paras):
        by_topic.setdefault(topic, []).append(i)
    refs = [members[0] for members in by_topic.values() if len(members) >= 2]  # one per topic
    ref_set = set(refs)
    filler = [p for i, (_, p) in enumerate(paras) if i not in ref_set and len(by_topic[paras[i][0]]) < 2]
    filler_words = " ".join(filler).split()
    pos, neg = [], []
    for k, i in enumerate(refs):
        words = paras[i][1].split()
        half = len(words) // 2
        start = RNG.randrange(len(words) - half + 1)
        lifted = " ".join(words[start : start + half])
        a = RNG.randrange(len(filler_words) - 400)
        pos.append({"text": " ".join(filler_words[a : a + 150]) + " " + lifted + " " + " ".join(filler_words[a + 150 : a + 300]), "label": 1})
        same_topic = [j for j in by_topic[paras[i][0]] if j not in ref_set]
        if same_topic:
            other = paras[RNG.choice(same_topic)][1].split()
            b = RNG.randrange(len(filler_words) - 400)
            neg.append({"text": " ".join(filler_words[b : b + 150]) + " " + " ".join(other[: len(other) // 2]) + " " + " ".join(filler_words[b + 150 : b + 300]), "label": 0})
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = os.path.join(tmp, "refs.jsonl")
        with open(ref_path, "w") as fh:
            for i in refs:
                fh.write(json.dumps({"text": paras[i][1]}) + "\n")
        print(f"\nContainment: {len(refs)} reference paragraphs, {len(pos)} partial copies, {len(neg)} same-topic negatives")
        print("| method | recall on partial copies | false positives on same-topic texts |")
        print("|---|---:|---:|")
        for label, opts in (  # noqa
            ("--against (Jaccard >= 0.8)", DedupOptions(against=(ref_path,), mark=True)),
            ("--containment 0.5 --window 0 (whole record)", DedupOptions(against=(ref_path,), containment=0.5, window=0, mark=True)),
            ("--containment 0.5 (default --window 32)", DedupOptions(against=(ref_path,), containment=0.5, mark=True)),
            ("--containment 0.8 (default --window 32)", DedupOptions(against=(ref_path,), containment=0.8, mark=True)),
        ):
            out = list(dedup([dict(r) for r in pos + neg], opts))
            hit = ["contaminated" in r for r in out]
            recall = sum(h for h, r in zip(hit, out) if r["label"]) / len(pos)
            fp = sum(h for h, r in zip(hit, out) if not r["label"])
            print(f"| {label} | {recall:.3f} | {fp}/{len(neg)} |")


def main():
    paras = topic_paragraphs()
    duplicate_quality(paras)
    containment_quality(paras)


if __name__ == "__main__":
    main()
