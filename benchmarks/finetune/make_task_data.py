"""Generate the bundled `finetune` task data: order sentences -> one fixed-format JSON line.

A seeded, synthetic, clear task (information extraction into a fixed key order), so a short LoRA
run on smollm2 visibly lowers held-out perplexity. Re-running this reproduces the files exactly:

    .venv/bin/python benchmarks/finetune/make_task_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "src" / "llmtools" / "data" / "finetune"
NAMES = ["Maria", "Ken", "Aisha", "Tom", "Lena", "Ravi", "Sofia", "Omar", "Ines", "Jonas", "Mei", "Pablo", "Nora", "Yuki", "Emma", "Lucas"]
ITEMS = ["apples", "notebooks", "batteries", "candles", "mugs", "pencils", "lemons", "towels", "cables", "plates", "socks", "bulbs"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TEMPLATES = [
    "{name} ordered {qty} {item} at ${price} each on {day}.",
    "On {day}, {name} bought {qty} {item} for ${price} apiece.",
    "{qty} {item} were ordered by {name} on {day}, priced at ${price} each.",
    "Order from {name}: {qty} {item}, ${price} per unit, placed {day}.",
    "{name} wants {qty} {item} ({day}), unit price ${price}.",
]
INSTRUCTION = "Extract the order as JSON with keys customer, item, quantity, unit_price, day."


def make(rng: random.Random) -> dict:
    name, item, day = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(DAYS)
    qty = rng.randint(1, 24)
    price = f"{rng.randint(0, 19)}.{rng.choice(['00', '25', '50', '75', '99'])}"
    sentence = rng.choice(TEMPLATES).format(name=name, item=item, day=day, qty=qty, price=price)
    answer = json.dumps({"customer": name, "item": item, "quantity": qty, "unit_price": float(price), "day": day})
    return {"prompt": f"{INSTRUCTION}\nOrder: {sentence}\nJSON:", "completion": " " + answer}


def main() -> None:
    rng = random.Random(20240601)
    records = [make(rng) for _ in range(360)]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in (("orders-train.jsonl", records[:300]), ("orders-eval.jsonl", records[300:])):
        with open(OUT / name, "w", encoding="utf-8") as fh:
            for rec in part:
                fh.write(json.dumps(rec) + "\n")
    print(f"wrote {OUT}/orders-train.jsonl (300) and orders-eval.jsonl (60)")


if __name__ == "__main__":
    main()
