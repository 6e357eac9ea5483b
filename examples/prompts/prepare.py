"""Turn the bundled order-extraction task into an eval set and a few-shot pool for the example.

    python prepare.py OUT_DIR [LIMIT]

Reads src/llmtools/data/finetune/orders-{eval,train}.jsonl (prompt + completion records) and
writes OUT_DIR/eval.jsonl (`id`, `order`, `reference`, `meta.style`) and OUT_DIR/examples.jsonl
(`id`, `order`, `reference`, from the training split, so no example is an eval item).

`meta.style` is the way the order is phrased, found from the sentence itself; it is the slice
the fairness gate checks ("is the prompt worse for customers who write like this?").
"""

from __future__ import annotations

import json
import os
import re
import sys

import llmtools

STYLES = [
    ("bought-for", re.compile(r"\bbought \d+ .* for \$")),
    ("ordered-at", re.compile(r"\bordered \d+ .* at \$")),
    ("were-ordered-by", re.compile(r"\bwere ordered by\b")),
    ("order-from", re.compile(r"^Order from \w+:")),
    ("list", re.compile(r"\(\w+day\), unit price")),
]


def style(order: str) -> str:
    for name, pattern in STYLES:
        if pattern.search(order):
            return name
    return "other"


def convert(path: str, prefix: str, limit: int | None = None) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            rec = json.loads(line)
            order = rec["prompt"].split("Order: ", 1)[1].split("\nJSON:", 1)[0].strip()
            out.append({"id": f"{prefix}{i:03d}", "order": order, "reference": rec["completion"].strip(),
                        "meta": {"style": style(order)}})
            if limit and len(out) >= limit:
                break
    return out


def main() -> None:
    folder = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
    data = os.path.join(os.path.dirname(llmtools.__file__), "data", "finetune")
    os.makedirs(folder, exist_ok=True)
    for name, source, prefix, n in (("eval.jsonl", "orders-eval.jsonl", "e", limit),
                                    ("examples.jsonl", "orders-train.jsonl", "t", None)):
        records = convert(os.path.join(data, source), prefix, n)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
