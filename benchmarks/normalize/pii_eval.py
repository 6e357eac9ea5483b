#!/usr/bin/env python3
"""Recall and precision of PII redaction per kind, for `llmtools normalize --redact` and a peer.

Run from the repository root:

    .venv/bin/python benchmarks/normalize/pii_eval.py                     # llmtools only
    .venv/bin/python benchmarks/normalize/pii_eval.py --peer-python benchmarks/normalize/out/peer-venv/bin/python
    .venv/bin/python benchmarks/normalize/pii_eval.py --src /path/to/other/checkout/src --errors

The cases are tests/data/pii/cases.jsonl (see tests/data/pii/README.md). For each kind, the
cases of that kind (positives and negatives) go through `llmtools normalize --redact KIND` as one
JSONL file; the redacted text is aligned with the input to recover which spans became which
placeholder. A gold span counts as found only when a placeholder replaced exactly that span,
up to brackets, quotes and punctuation at its ends (a partial or an over-long redaction is a
miss and a false positive). Precision counts every
redacted span, so a redaction in a negative case is a false positive. The `all` rows run
`--redact all` over every case and need the placeholder's type to match too.

The peer (`--peer-python`) is Microsoft Presidio's AnalyzerEngine with its pattern/library
recognizers only (see pii_peer_presidio.py), run in its own virtualenv because it pulls in spaCy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CASES = ROOT / "tests" / "data" / "pii" / "cases.jsonl"
KINDS = ("phone", "card", "email", "ip", "iban")
SPAN_KINDS = {"phone": {"phone"}, "card": {"credit_card"}, "email": {"email"}, "ip": {"ipv4", "ipv6"},
              "iban": {"iban"}}
PLACEHOLDER_KIND = {"EMAIL": "email", "PHONE": "phone", "IPV4": "ipv4", "IPV6": "ipv6",
                    "CREDIT_CARD": "credit_card", "IBAN": "iban"}
PLACEHOLDER = re.compile(r"<(EMAIL|PHONE|IPV4|IPV6|CREDIT_CARD|IBAN)>")


def load_cases(path: Path = CASES) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def align(original: str, redacted: str) -> list[tuple[int, int, str]] | None:
    """Spans of `original` that became placeholders in `redacted`, or None if it cannot align.

    The literal pieces between placeholders must appear in order in the original, each
    placeholder standing for at least one character; the leftmost alignment is taken."""
    pieces = PLACEHOLDER.split(redacted)
    literals, kinds = pieces[0::2], pieces[1::2]
    if not kinds:
        return [] if redacted == original else None
    if not original.startswith(literals[0]) or not original.endswith(literals[-1]):
        return None

    def walk(i: int, pos: int) -> list[tuple[int, int, str]] | None:
        # placeholder i starts at pos; literal i+1 follows it
        lit = literals[i + 1]
        if i + 1 == len(kinds):
            end = len(original) - len(lit)
            return [(pos, end, PLACEHOLDER_KIND[kinds[i]])] if end > pos else None
        start = pos + 1
        while True:
            at = original.find(lit, start) if lit else start
            if at < 0 or at >= len(original):
                return None
            rest = walk(i + 1, at + len(lit))
            if rest is not None:
                return [(pos, at, PLACEHOLDER_KIND[kinds[i]])] + rest
            start = at + 1

    return walk(0, len(literals[0]))


def run_llmtools(cases: list[dict], redact: str, src: str | None, extra: list[str]) -> dict[str, list]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_text("".join(json.dumps({"id": c["id"], "text": c["text"]}, ensure_ascii=False) + "\n"
                                for c in cases), encoding="utf-8")
        cmd = [sys.executable, "-m", "llmtools", "normalize", "-q", "--keep-empty", str(path)]
        if redact:
            # phone options are refused without phone redaction
            opts = extra if redact in ("phone", "all") or not any(a.startswith("--phone") for a in extra) else []
            cmd[4:4] = ["--redact", redact, *opts]
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"llmtools failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    out = {}
    for line in proc.stdout.decode().splitlines():
        rec = json.loads(line)
        out[rec["id"]] = rec["text"]
    return out


def llmtools_spans(cases: list[dict], redact: str, src: str | None, extra: list[str]) -> dict[str, list]:
    texts = run_llmtools(cases, redact, src, extra)
    spans = {}
    for c in cases:
        got = align(c["text"], texts[c["id"]])
        if got is None:
            sys.exit(f"{c['id']}: output does not align with the input: {texts[c['id']]!r}")
        spans[c["id"]] = got
    return spans


def peer_spans(cases: list[dict], python: str, kinds: str, extra: list[str]) -> dict[str, list]:
    payload = "".join(json.dumps({"id": c["id"], "text": c["text"]}, ensure_ascii=False) + "\n" for c in cases)
    proc = subprocess.run([python, str(HERE / "pii_peer_presidio.py"), "--kinds", kinds, *extra],
                          input=payload.encode(), capture_output=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"peer failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return {r["id"]: [tuple(s) for s in r["spans"]] for r in map(json.loads, proc.stdout.decode().splitlines())}


_TRIM = " ()[]<>{}\"'.,;!?"


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """A span without brackets, quotes or punctuation at its ends (so a detector that takes the
    `(` before a number, or leaves a quote out, is not counted wrong for it); `:` is kept."""
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def score(cases: list[dict], predicted: dict[str, list], wanted: set[str], typed: bool) -> dict:
    """Span matching after trim(). typed: the placeholder's kind must match the gold span's kind."""
    tp = fn = fp = 0
    misses, false_pos = [], []
    for c in cases:
        t = c["text"]
        gold = {(*trim(t, s, e), k) for s, e, k in c["spans"] if k in wanted}
        got = {(*trim(t, s, e), k) for s, e, k in predicted[c["id"]] if k in wanted}
        if not typed:
            gold_u, got_u = {(s, e) for s, e, _ in gold}, {(s, e) for s, e, _ in got}
        else:
            gold_u, got_u = gold, got
        hit = gold_u & got_u
        tp += len(hit)
        fn += len(gold_u - hit)
        fp += len(got_u - hit)
        for g in sorted(gold_u - hit):
            misses.append((c["id"], c["text"][g[0]:g[1]], c["text"]))
        for g in sorted(got_u - hit):
            false_pos.append((c["id"], c["text"][g[0]:g[1]], c["text"]))
    recall = tp / (tp + fn) if tp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    return {"cases": len(cases), "gold": tp + fn, "tp": tp, "fn": fn, "fp": fp, "recall": recall,
            "precision": precision, "misses": misses, "false_positives": false_pos}


def evaluate(cases: list[dict], runner, label: str) -> dict[str, dict]:
    results = {}
    for kind in KINDS:
        mine = [c for c in cases if c["kind"] == kind]
        # Per-kind runs see only their own kind, so any other span a case holds is not scored.
        results[kind] = score(mine, runner(mine, kind), SPAN_KINDS[kind], typed=False)
    every = runner(cases, "all")
    for kind in KINDS:
        results[f"all:{kind}"] = score(cases, every, SPAN_KINDS[kind], typed=True)
    results["all"] = score(cases, every, set().union(*SPAN_KINDS.values()), typed=True)
    return results


def check_invariance(cases: list[dict], src: str | None) -> list[str]:
    """Cases whose text the default steps change would not align; the set avoids them."""
    texts = run_llmtools(cases, "", src, [])
    return [c["id"] for c in cases if texts.get(c["id"]) != c["text"]]


def table(rows: dict[str, dict[str, dict]]) -> str:
    names = list(rows)
    head = "| kind | cases | gold spans | " + " | ".join(f"{n} recall | {n} precision | {n} FP" for n in names) + " |"
    sep = "|---|---:|---:|" + "---:|---:|---:|" * len(names)
    lines = [head, sep]
    first = rows[names[0]]
    for key in first:
        cells = [f"`{key}`", str(first[key]["cases"]), str(first[key]["gold"])]
        for n in names:
            r = rows[n][key]
            cells += [f"{r['recall']:.3f} ({r['tp']}/{r['gold']})", f"{r['precision']:.3f}", str(r["fp"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=CASES)
    ap.add_argument("--src", help="PYTHONPATH for llmtools (another checkout's src/); default: as installed")
    ap.add_argument("--llmtools-args", default="", help="extra normalize options, e.g. '--phone-regions all'")
    ap.add_argument("--label", default="llmtools")
    ap.add_argument("--peer-python", help="python of a virtualenv with presidio-analyzer (see README)")
    ap.add_argument("--peer-args", default="", help="extra options for pii_peer_presidio.py, e.g. '--regions all'")
    ap.add_argument("--errors", action="store_true", help="list every miss and false positive")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    cases = load_cases(args.cases)
    changed = check_invariance(cases, args.src)
    if changed:
        sys.exit(f"the default steps change {len(changed)} case(s), e.g. {changed[:5]}: fix the generator")
    extra = args.llmtools_args.split()
    rows = {args.label: evaluate(cases, lambda cs, k: llmtools_spans(cs, k, args.src, extra), args.label)}
    if args.peer_python:
        rows["presidio"] = evaluate(cases, lambda cs, k: peer_spans(cs, args.peer_python, k, args.peer_args.split()),
                                    "presidio")
    print(table(rows))
    if args.errors:
        for name, res in rows.items():
            for key, r in res.items():
                if ":" in key or key == "all":
                    continue
                for cid, span, text in r["misses"]:
                    print(f"{name} {key} MISS {cid}: {span!r} in {text!r}")
                for cid, span, text in r["false_positives"]:
                    print(f"{name} {key} FP   {cid}: {span!r} in {text!r}")
    if args.json:
        slim = {n: {k: {x: v for x, v in r.items() if x not in ("misses", "false_positives")} for k, r in res.items()}
                for n, res in rows.items()}
        args.json.write_text(json.dumps(slim, indent=1))


if __name__ == "__main__":
    main()
