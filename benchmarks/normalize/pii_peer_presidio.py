#!/usr/bin/env python3
"""The peer for pii_eval.py: Microsoft Presidio's AnalyzerEngine, pattern recognizers only, offline.

Reads {"id", "text"} JSONL on stdin, writes {"id", "spans": [[start, end, kind], ...]} on stdout.
Run with the python of a virtualenv that has presidio-analyzer (it needs spaCy, which this
project does not depend on):

    python3 -m venv benchmarks/normalize/out/peer-venv
    benchmarks/normalize/out/peer-venv/bin/pip install presidio-analyzer

Presidio normally loads a downloaded spaCy model (en_core_web_lg) for its NER recognizers and
for context words. None of the five kinds measured here needs NER: Presidio finds them with
its own regex + checksum recognizers (CreditCardRecognizer: regex + Luhn; IbanRecognizer: regex
+ mod-97 + country formats; IpRecognizer: regex + ipaddress; EmailRecognizer: regex + tldextract)
and phonenumbers (PhoneRecognizer: PhoneNumberMatcher, its default regions, leniency 1 = VALID).
So the NLP engine here is a blank spaCy pipeline (tokenizer only): nothing is downloaded, and
the context-word boost, which needs lemmas, does nothing. Everything else is Presidio's
defaults, including score_threshold 0 (every result counts, as AnonymizerEngine would use it).

--kinds phone|card|email|ip|iban|all picks the recognizers. With `all`, overlapping results of
different recognizers are resolved as an anonymizer would: higher score first, then longer.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

ENTITY = {"PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card", "EMAIL_ADDRESS": "email",
          "IP_ADDRESS": "ip", "IBAN_CODE": "iban"}
BY_KIND = {"phone": ["PHONE_NUMBER"], "card": ["CREDIT_CARD"], "email": ["EMAIL_ADDRESS"], "ip": ["IP_ADDRESS"],
           "iban": ["IBAN_CODE"]}


def build(regions: list[str] | None):
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
    )

    class BlankSpacy(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    phone = PhoneRecognizer(supported_regions=regions) if regions else PhoneRecognizer()
    registry = RecognizerRegistry(recognizers=[phone, CreditCardRecognizer(), EmailRecognizer(), IpRecognizer(),
                                               IbanRecognizer()])
    nlp = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])


def resolve(results, text: str) -> list[list]:
    chosen: list = []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if all(r.end <= c.start or r.start >= c.end for c in chosen):
            chosen.append(r)
    out = []
    for r in sorted(chosen, key=lambda r: r.start):
        kind = ENTITY[r.entity_type]
        if kind == "ip":
            kind = "ipv6" if ":" in text[r.start:r.end] else "ipv4"
        out.append([r.start, r.end, kind])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="all", choices=[*BY_KIND, "all"])
    ap.add_argument("--regions", help="phone regions, comma-separated, or `all` (default: Presidio's own list)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    regions = None
    if args.regions == "all":
        import phonenumbers

        regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    elif args.regions:
        regions = args.regions.split(",")
    engine = build(regions)
    entities = [e for k in BY_KIND for e in BY_KIND[k]] if args.kinds == "all" else BY_KIND[args.kinds]
    for line in sys.stdin:
        rec = json.loads(line)
        results = engine.analyze(rec["text"], language="en", entities=entities)
        sys.stdout.write(json.dumps({"id": rec["id"], "spans": resolve(results, rec["text"])}) + "\n")


if __name__ == "__main__":
    main()
