#!/usr/bin/env python3
"""Write the demo's raw sample: support-ticket triage instructions, messy on purpose.

    python make_sample.py > data/raw.jsonl

The data is written for this project (no third-party text), so it is under the project's own
licence. Each record asks the model to triage one customer message; the answer has a fixed shape
(category, urgency, one-line reply), which a small model can learn in a few LoRA steps. The raw
file is made realistic the way scraped or exported data is: exact and near duplicates, mojibake,
personal data (emails, phones, cards, IBANs, IPs), stray control characters, junk records and a
few lines that are not JSON at all. The generator is seeded, so the committed file is
reproducible byte for byte.
"""

from __future__ import annotations

import json
import random
import sys

SEED = 20261126

PRODUCTS = ["the Aurora kettle", "my Nimbus router", "the Vega headphones", "a Terra backpack", "the Orbit smart lamp",
            "my Pico camera", "the Atlas standing desk", "a Lumen e-reader", "the Zephyr fan", "my Comet bike lock"]
NAMES = ["Maria", "James", "Aisha", "Tom", "Chen", "Lucia", "Ravi", "Olga", "Kwame", "Sofia", "Ben", "Yuki"]
DOMAINS = ["example.com", "mail.test", "inbox.example.org"]

# category -> (issue templates, reply)
ISSUES = {
    "billing": (
        ["I was charged twice for {p} last week.",
         "My card was billed {amount} but the order total was lower.",
         "Why is there an extra fee on my invoice for {p}?",
         "The subscription renewed even though I cancelled it on {date}."],
        "We are sorry about the billing error; we have opened a review of the charge.",
    ),
    "shipping": (
        ["My order with {p} has not arrived and it is {days} days late.",
         "The tracking page for {p} has not updated since {date}.",
         "The parcel arrived damaged and {p} is scratched.",
         "I got the wrong colour of {p} in my delivery."],
        "We are sorry about the delivery problem; we have asked the carrier to investigate.",
    ),
    "account": (
        ["I cannot log in to my account since I changed my password.",
         "Please update the email on my account, the old one no longer works.",
         "My account was locked after too many attempts.",
         "How do I delete my account and all my data?"],
        "We have sent account recovery steps to the address on file.",
    ),
    "technical": (
        ["{P} stops working after a few minutes.",
         "{P} will not connect to Wi-Fi after the update.",
         "The app crashes whenever I open the settings for {p}.",
         "{P} makes a loud clicking noise when it starts."],
        "Please try a full reset; if the fault remains we will arrange a repair.",
    ),
    "refund": (
        ["I would like to return {p} and get my money back.",
         "{P} is not what I expected, can I get a refund?",
         "I returned {p} on {date} but the refund has not arrived.",
         "Can I get a partial refund because {p} was missing a part?"],
        "We have started your refund; it will reach your account within five working days.",
    ),
}

URGENT = ["This is urgent.", "I need this fixed today!", "Please help ASAP, I have a deadline.", "This is the third time I am writing."]
CALM = ["No rush.", "Thanks in advance.", "Whenever you get a chance.", ""]

MOJIBAKE = {"'": "â€™", "\u2019": "â€™", "é": "Ã©", "—": "â€”"}


def pii(rng: random.Random, name: str) -> str:
    kind = rng.choice(["email", "phone", "card", "iban", "ip"])
    if kind == "email":
        return f"You can reach me at {name.lower()}.{rng.randint(10, 99)}@{rng.choice(DOMAINS)}."
    if kind == "phone":
        return f"Call me on +1 (555) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}."
    if kind == "card":
        return "My card is 4111 1111 1111 1111."  # the standard Visa test number (Luhn-valid)
    if kind == "iban":
        return "Refund to IBAN GB82 WEST 1234 5698 7654 32."  # the IBAN registry's example
    return f"The router admin page is at 192.168.{rng.randint(0, 9)}.{rng.randint(2, 254)}."


def ticket(rng: random.Random, i: int) -> dict:
    category = rng.choice(sorted(ISSUES))
    templates, reply = ISSUES[category]
    product = rng.choice(PRODUCTS)
    name = rng.choice(NAMES)
    issue = rng.choice(templates).format(
        p=product, P=product[0].upper() + product[1:], amount=f"${rng.randint(20, 400)}.{rng.randint(0, 99):02d}",
        date=rng.choice(["March 5, 2024", "5 Mar 2024", "2024/3/5", "June 12, 2024"]), days=rng.randint(3, 20))
    urgent = rng.random() < 0.35
    tail = rng.choice(URGENT if urgent else CALM)
    parts = [f"Hi, I'm {name}.", issue, tail]
    if rng.random() < 0.3:
        parts.append(pii(rng, name))
    message = " ".join(p for p in parts if p)
    prompt = f"Triage this customer message. Give the category, the urgency and a one-line reply.\n\nMessage: {message}"
    completion = f"Category: {category}\nUrgency: {'high' if urgent else 'normal'}\nReply: {reply}"
    return {"id": f"t{i:04d}", "prompt": prompt, "completion": completion, "meta": {"channel": rng.choice(["email", "chat", "web"])}}


def messy(rng: random.Random, rec: dict) -> dict:
    rec = json.loads(json.dumps(rec))
    roll = rng.random()
    if roll < 0.08:  # mojibake from a cp1252 round trip
        for good, bad in MOJIBAKE.items():
            rec["prompt"] = rec["prompt"].replace(good, bad)
    elif roll < 0.14:  # stray whitespace and zero-width characters from copy and paste
        rec["prompt"] = "  " + rec["prompt"].replace(" ", "  ", 3).replace("Message:", "Message:\u200b") + " \t"
    elif roll < 0.18:  # curly quotes from a word processor
        rec["prompt"] = rec["prompt"].replace("I'm", "I\u2019m")
    return rec


def main() -> None:
    rng = random.Random(SEED)
    records = [ticket(rng, i) for i in range(1, 641)]
    out: list[str] = []
    for rec in records:
        out.append(json.dumps(messy(rng, rec), ensure_ascii=False))
        r = rng.random()
        if r < 0.10:  # exact duplicate (a re-export)
            out.append(json.dumps(rec, ensure_ascii=False))
        elif r < 0.18:  # near duplicate: same ticket, lightly edited
            near = dict(rec, id=rec["id"] + "b", prompt=rec["prompt"].replace("Hi, ", "Hello, ").replace(".", "!", 1))
            out.append(json.dumps(near, ensure_ascii=False))
    junk = [
        json.dumps({"id": "j1", "prompt": "", "completion": ""}),
        json.dumps({"id": "j2", "prompt": "asdf;;;### $$$ %%% ^^^ &&& *** ((( )))", "completion": "???"}),
        json.dumps({"id": "j3", "prompt": "lorem ipsum " * 60, "completion": "lorem"}),
        json.dumps({"id": "j4", "prompt": "Click here... \nBuy now... \nFree gift... \nLimited offer...", "completion": "spam"}),
        json.dumps({"id": "j5", "text": "a record from another export with no prompt field"}),
        '{"id": "j6", "prompt": "truncated export line',
        "<html><body>500 Internal Server Error</body></html>",
    ]
    for line in junk:
        out.insert(rng.randrange(len(out)), line)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
