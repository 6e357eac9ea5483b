#!/usr/bin/env python3
"""Generate tests/data/pii/cases.jsonl: a labelled PII test set built from published formats.

    python tests/data/pii/generate.py            # rewrites cases.jsonl beside this file
    python tests/data/pii/generate.py --check    # exit 1 if cases.jsonl differs from a fresh run

Deterministic (fixed seed, no clock, no network). Needs `phonenumbers` only to check that every
phone number written into the tables below is a valid number of the country it is listed under
(so the labels are right); it does not decide what a case's label is. Nothing here imports
llmtools: the set measures the redactor, it is not derived from it.

One JSON object per line:

    {"id": "phone-0007", "kind": "phone", "label": "pos", "text": "Call me at 020 7946 0958.",
     "spans": [[11, 24, "phone"]], "note": "GB national, spaces", "source": "Ofcom ..."}

- kind: the class the case is about (phone, card, email, ip, iban).
- label: "pos" (the case holds at least one span of its kind) or "neg" (it holds none).
- spans: every piece of PII in the text, of any kind, as [start, end, kind] in code points
  (kind one of phone, credit_card, email, ipv4, ipv6, iban). A negative of one kind may hold a
  span of another (a phone-negative that is an IPv4 address), so a run that redacts all kinds
  can be scored on the same cases.
- note: what the case tests; source: where the format comes from.

Sources (formats and reserved example ranges, all public):
- Phones: ITU-T E.164 and the national numbering plans as published by the regulators (Ofcom's
  drama ranges 020 7946 0xxx / 0113 496 0xxx, NANP's 555-01xx, ACMA's 02 5550 xxxx / 0491 570
  xxx, and ordinary area-code + subscriber lengths elsewhere); RFC 3966 for `tel:`.
- Cards: ISO/IEC 7812-1 (major industry identifier, Luhn check digit) and the issuer ranges the
  networks publish (UATP 1, Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Diners 300-305,
  36, 38-39, Discover 6011/644-649/65/622126-622925, JCB 3528-3589, UnionPay 62/81, Maestro,
  Mir 2200-2204, RuPay, Troy, Verve, Dankort, InstaPayment, BORICA, UzCard, Humo, GPN). Card
  numbers are random digits under those prefixes with a computed Luhn digit.
- Emails: RFC 5321/5322 syntax, RFC 3696 section 3's examples, RFC 6531 (UTF-8 local parts),
  RFC 5890-5891 (IDNA: U-labels and their punycode A-labels), RFC 2606 example domains.
- IPs: RFC 791 dotted quads, RFC 4291 section 2.2 text forms, RFC 5952, RFC 4007 zone ids,
  RFC 6052 (64:ff9b::/96), documentation ranges of RFC 5737 and RFC 3849.
- IBANs: ISO 13616 and the SWIFT IBAN registry (release 101): each country's BBAN structure
  (n digits, a upper-case letters, c upper-case alphanumerics) and length; check digits by
  ISO 7064 mod 97-10, computed here. Plus the registry's own example IBANs for a few countries.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "cases.jsonl"

CASES: list[dict] = []
_counters: dict[str, int] = {}


def add(kind: str, template: str, values: list[tuple[str, str | None]], note: str, source: str) -> None:
    """template has one `{}` per value; each value is (string, span kind or None for no span)."""
    parts = template.split("{}")
    assert len(parts) == len(values) + 1, (template, values)
    text, spans = parts[0], []
    for (value, span_kind), tail in zip(values, parts[1:]):
        if span_kind is not None:
            spans.append([len(text), len(text) + len(value), span_kind])
        text += value + tail
    own = {"phone": {"phone"}, "card": {"credit_card"}, "email": {"email"}, "ip": {"ipv4", "ipv6"}, "iban": {"iban"}}[kind]
    label = "pos" if any(s[2] in own for s in spans) else "neg"
    _counters[kind] = _counters.get(kind, 0) + 1
    CASES.append({"id": f"{kind}-{_counters[kind]:04d}", "kind": kind, "label": label, "text": text,
                  "spans": spans, "note": note, "source": source})


# =========================================================================== phones
# National numbers as written in each country (trunk prefix included), checked against the
# country's plan by phonenumbers below. Regions of the default --phone-regions list and others.
PHONES = {
    "US": ["(201) 555-0123", "415-555-0132", "212.555.0187", "646 555 0199", "(312) 555-0148", "1-202-555-0161"],
    "CA": ["416-555-0134", "(604) 555-0171"],
    "GB": ["020 7946 0958", "0113 496 0123", "0161 496 0451", "07400 123456", "0131 496 0777", "029 2018 0123",
           "0117 496 0456"],
    "IE": ["01 555 1234", "087 123 4567", "021 481 2345"],
    "DE": ["030 12345678", "089 1234567", "040 1234567", "0171 2345678", "0221 1234567", "069 12345678", "030/1234567"],
    "FR": ["01 23 45 67 89", "06 12 34 56 78", "04 91 23 45 67", "09 87 65 43 21", "01.23.45.67.89"],
    "ES": ["912 345 678", "612 345 678", "934 56 78 90"],
    "IT": ["06 1234 5678", "02 1234 5678", "312 345 6789", "055 123 4567"],
    "NL": ["020 123 4567", "06 12345678", "010-1234567"],
    "BE": ["02 512 34 56", "0470 12 34 56"],
    "CH": ["044 668 18 00", "079 123 45 67", "021 123 45 67"],
    "AT": ["01 234 5678", "0664 1234567"],
    "SE": ["08-123 456 78", "070-123 45 67"],
    "NO": ["22 12 34 56", "412 34 567"],
    "DK": ["32 12 34 56", "20 12 34 56"],
    "FI": ["09 1234 567", "040 123 4567"],
    "PL": ["22 123 45 67", "512 345 678"],
    "PT": ["21 234 5678", "912 345 678"],
    "IL": ["09-7625400", "03-1234567", "052-345-6789", "02-6234567"],
    "IN": ["022 2345 6789", "98765 43210", "011 2345 6789"],
    "CN": ["138 1234 5678", "13812345678", "010 1234 5678", "021-12345678"],
    "JP": ["03-1234-5678", "090-1234-5678", "06-6123-4567"],
    "KR": ["02-312-3456", "010-1234-5678"],
    "AU": ["(02) 5550 1234", "0491 570 156", "03 5550 4321"],
    "NZ": ["09 301 0123", "021 123 4567"],
    "BR": ["(11) 91234-5678", "(21) 2345-6789"],
    "MX": ["55 1234 5678", "33 1234 5678"],
    "AR": ["011 4123-4567"],
    "ZA": ["021 123 4567", "082 123 4567"],
    "NG": ["0803 123 4567"],
    "EG": ["02 2345 6789", "010 1234 5678"],
    "RU": ["8 (495) 123-45-67", "8 912 345-67-89"],
    "TR": ["0212 345 67 89", "0532 123 45 67"],
    "SG": ["6123 4567", "8123 4567"],
    "HK": ["2123 4567", "9123 4567"],
    "AE": ["04 234 5678", "050 123 4567"],
    "SA": ["011 234 5678", "050 123 4567"],
}
PHONE_SOURCE = "ITU-T E.164 and the national numbering plan of {}"
PHONE_TEMPLATES = [
    "Call me at {}.", "My number is {}", "{}", "Phone: {}", "Reach her on {}, any time after 6.",
    "Mobile ({}) - text first", "tel {} / fax none", "You can ring {} tomorrow morning.",
    "\"{}\" is the office line", "Contact: {}\nThanks",
]


def _valid_somehow(pn, number: str, region: str) -> bool:
    """Valid as written from `region`, or with a `+` put before a country code written without it."""
    tries = [(number, region)]
    if number[0].isdigit():
        tries.append(("+" + number, None))
    for text, reg in tries:
        try:
            if pn.is_valid_number(pn.parse(text, reg)):
                return True
        except pn.NumberParseException:
            pass
    return False


def phone_cases(rng: random.Random) -> None:
    import phonenumbers as pn

    for region, numbers in PHONES.items():
        for i, national in enumerate(numbers):
            num = pn.parse(national, region)
            assert pn.is_valid_number(num) and pn.region_code_for_number(num) == region, (region, national)
            src = PHONE_SOURCE.format(region)
            add("phone", rng.choice(PHONE_TEMPLATES), [(national, "phone")], f"{region} national format", src)
            intl = pn.format_number(num, pn.PhoneNumberFormat.INTERNATIONAL)
            variant = i % 4
            if variant == 0:
                add("phone", rng.choice(PHONE_TEMPLATES), [(intl, "phone")], f"{region} international, spaces", src)
            elif variant == 1:
                add("phone", rng.choice(PHONE_TEMPLATES), [(intl.replace(" ", "-"), "phone")],
                    f"{region} international, dashes", src)
            elif variant == 2:
                e164 = pn.format_number(num, pn.PhoneNumberFormat.E164)
                add("phone", rng.choice(PHONE_TEMPLATES), [(e164, "phone")], f"{region} E.164, no separators", src)
            else:
                idd = "00" + intl[1:] if region != "US" else "011 " + intl[1:]
                if region in ("US", "CA"):
                    idd = "+" + intl[1:].replace(" ", ".").replace("-", ".")
                add("phone", rng.choice(PHONE_TEMPLATES), [(idd, "phone")],
                    f"{region} international, IDD prefix or dots", src)
    # Shapes the field meets in running text (each listed in issue #21's failures or common).
    special = [
        ("My number is{}.", "415-555-0132", None, "glued to the word before (`is415-...`)"),
        ("Call {} now", "91-415-555-0132", "IN", "country code without + (91), dashes"),
        ("Call {} now", "44 20 7946 0958", "GB", "country code without + (44), spaces"),
        ("Call {} now", "49 30 12345678", "DE", "country code without + (49)"),
        ("Call {} now", "33 1 23 45 67 89", "FR", "country code without + (33)"),
        ("Call {} now", "86 138 1234 5678", "CN", "country code without + (86)"),
        ("UK office: {}", "+44 (0)20 7946 0958", "GB", "+CC (0) trunk in brackets"),
        ("Berlin: {}", "+49 (0)30 12345678", "DE", "+CC (0) trunk in brackets"),
        ("Zurich: {}", "+41 (0)44 668 18 00", "CH", "+CC (0) trunk in brackets"),
        ("Link: tel:{}", "+1-201-555-0123", "US", "RFC 3966 tel: URI"),
        ("<a href=\"tel:{}\">call</a>", "+442079460958", "GB", "tel: link in HTML"),
        ("Tel.{}", "+49 30 12345678", "DE", "glued to `Tel.`"),
        ("ph:{}", "020 7946 0958", "GB", "glued to `ph:`"),
        ("From the US dial {}", "011 44 20 7946 0958", "US", "US exit code 011"),
        ("From Europe dial {}", "0049 30 12345678", "GB", "exit code 00"),
        ("Call {} (toll free)", "1-800-555-0199", "US", "NANP 1- prefix, toll free"),
        ("Call {}", "+1 (415) 555-0132", "US", "+1 with area code in brackets"),
        ("Call {}", "+86 138 1234 5678", "CN", "Chinese mobile, international"),
        ("Call {}", "+81 3-1234-5678", "JP", "mixed separators"),
        ("Numbers: {}, {} and {}.", None, None, "three numbers in a list"),
        ("Hotline {} or {}", None, None, "two numbers"),
    ]
    for template, number, region, note in special:
        if number is None:
            vals = ["020 7946 0958", "+33 1 23 45 67 89", "(201) 555-0123"] if template.count("{}") == 3 else \
                ["09-7625400", "+972 3-123-4567"]
            add("phone", template, [(v, "phone") for v in vals], note, "several national plans")
            continue
        if region is not None:
            assert _valid_somehow(pn, number, region), number
        add("phone", template, [(number, "phone")], note, "ITU-T E.164; RFC 3966" if "tel" in template else "ITU-T E.164")

    # Negatives: numbers that are not phone numbers (dates, versions, codes, amounts, ids).
    negatives = [
        ("Released on {}.", "2024-03-05", "ISO 8601 date"),
        ("Due {}", "05/03/2024", "dd/mm/yyyy date"),
        ("Am {} eingegangen", "12.03.2024", "German date"),
        ("Timestamp {}", "2024-03-05T12:30:45Z", "ISO 8601 timestamp"),
        ("At {} sharp", "12:30:45", "time"),
        ("Upgrade to {} now", "v10.15.7", "version"),
        ("Python {} is out", "3.11.7", "version"),
        ("ISBN {}", "978-3-16-148410-0", "ISBN-13 (hyphens)"),
        ("ISBN {}", "0-306-40615-2", "ISBN-10"),
        ("ISSN {}", "0317-8471", "ISSN"),
        ("doi:{}", "10.1000/182", "DOI"),
        ("Total: {}", "$1,234,567.89", "amount"),
        ("Es kostet {} EUR", "12.345.678,90", "amount, European separators"),
        ("Population {}", "1,234,567,890", "count with thousands separators"),
        ("Located at {}", "48.8566, 2.3522", "coordinates"),
        ("Between {}", "1990-2000", "year range"),
        ("pages {}", "123-456", "page range"),
        ("Final score {}", "3-1", "score"),
        ("Screen {}", "1920x1080", "resolution"),
        ("pi is {}", "3.14159265358979", "decimal"),
        ("Hash {}", "3f786850e387550fdab836ed7e6dc881de23001b", "git SHA-1"),
        ("UUID {}", "123e4567-e89b-12d3-a456-426614174000", "UUID"),
        ("Mask {}", "0x7fffffff", "hex constant"),
        ("Avogadro {}", "6.022e23", "scientific notation"),
        ("Section {}", "4.2.1", "section number"),
        ("ZIP {}", "94105", "US ZIP"),
        ("Order #{} shipped", "A-2024-000123", "order id with letters"),
        ("Room {}, floor 12", "1204", "room number"),
        ("The answer is {}", "42", "small number"),
        ("Temperature {}", "-40.5", "signed decimal"),
        ("Build {}", "20240305.1", "build number"),
        ("Between {} and 7 pm", "5", "time of day"),
        ("Sort code {}", "12-34-56", "UK sort code (6 digits)"),
        ("Ratio {}", "16:9", "ratio"),
        ("Equation {}", "3 + 4 = 7", "arithmetic"),
        ("Flight {}", "LH 400", "flight number"),
        ("Server {} is down", "192.168.1.1", "IPv4 address, not a phone"),
        ("Measured {}", "1.23 4.56 7.89", "numbers in a row"),
        ("Chapter {}", "12-3", "chapter"),
        ("Invoice {}", "INV-00042", "invoice id"),
    ]
    for template, value, note in negatives:
        kind = "ipv4" if note.startswith("IPv4") else None
        add("phone", template, [(value, kind)], note, "not a phone number (other formats)")
    # Written the ways people write them, beyond the tables above.
    more = [("+33 (0)1 23 45 67 89", "FR"), ("(+44) 20 7946 0958", "GB"), ("+49-30-12345678", "DE"),
            ("0049 (0)30 12345678", "GB"), ("020-7946-0958", "GB"), ("+91-9876543210", "IN"), ("98765-43210", "IN"),
            ("+86-10-12345678", "CN"), ("+7 495 123 45 67", "RU"), ("+61 2 5550 1234", "AU"), ("0171/2345678", "DE"),
            ("(0221) 1234567", "DE"), ("+972-9-7625400", "IL"), ("+81-90-1234-5678", "JP"), ("+55 11 91234-5678", "BR"),
            ("+52 55 1234 5678", "MX")]
    for number, region in more:
        assert _valid_somehow(pn, number, region), number
        add("phone", rng.choice(PHONE_TEMPLATES), [(number, "phone")], f"{region}, another common spelling",
            PHONE_SOURCE.format(region))
    more_neg = [("in {}", "2019-2020", "year range"), ("open {}", "10:00-18:00", "opening hours"),
                ("on {}", "2023/12/31", "date, year first"), ("ORCID {}", "0000-0002-1825-0097", "ORCID iD"),
                ("{}", "arXiv:2101.00001", "arXiv id"), ("ISBN {}", "978 0 306 40615 7", "ISBN-13 with spaces"),
                ("IDs {}", "1234567, 2345678 and 3456789", "ids in a list"), ("SSN {}", "078-05-1120", "US SSN shape"),
                ("EIN {}", "12-3456789", "US employer id"), ("PO {}", "4500012345", "purchase order number"),
                ("ticket {}", "2023-1234567", "ticket number"), ("at {}", "37.7749, -122.4194", "coordinates"),
                ("Sum: {}", "12 345 678", "number with space thousands separators"),
                ("{} people", "10 000 000", "number with space thousands separators"),
                ("price {}", "1.234.567,89", "amount")]
    for template, value, note in more_neg:
        add("phone", template, [(value, None)], note, "not a phone number (other identifiers)")
    # Digit strings that are too short or too long to be a number in any plan.
    for value, note in [("12345", "5 digits"), ("123456", "6 digits"), ("1234567890123456789", "19 digits"),
                        ("00000", "zeros"), ("999", "emergency-style short code"),
                        ("2021 2022 2023", "years in a row")]:
        add("phone", "Number {} here", [(value, None)], note, "not a phone number (length)")


# =========================================================================== cards
def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


# network, prefix, lengths; one case per (prefix, length) pair
CARD_RANGES = [
    ("UATP", "1", [15]),
    ("Visa", "4", [13, 16, 19]),
    ("Visa Electron", "4026", [16]),
    ("Mastercard", "51", [16]), ("Mastercard", "53", [16]), ("Mastercard", "55", [16]),
    ("Mastercard", "2221", [16]), ("Mastercard", "2500", [16]), ("Mastercard", "2720", [16]),
    ("American Express", "34", [15]), ("American Express", "37", [15]),
    ("Diners Club International", "300", [14]), ("Diners Club International", "305", [14]),
    ("Diners Club International", "36", [14]), ("Diners Club International", "38", [16]),
    ("Diners Club International", "39", [16]),
    ("Discover", "6011", [16, 19]), ("Discover", "644", [16]), ("Discover", "649", [16]), ("Discover", "65", [16]),
    ("Discover", "622126", [16]), ("Discover", "622925", [16]),
    ("JCB", "3528", [16]), ("JCB", "3589", [16, 19]),
    ("UnionPay", "62", [16, 17, 18, 19]), ("UnionPay", "81", [16]),
    ("Maestro", "50", [16]), ("Maestro", "56", [16]), ("Maestro", "57", [12]), ("Maestro", "58", [19]),
    ("Maestro", "6759", [16]), ("Maestro", "6761", [16]), ("Maestro", "6763", [18]), ("Maestro", "639", [16]),
    ("Maestro", "67", [13]),
    ("Mir", "2200", [16]), ("Mir", "2204", [19]),
    ("RuPay", "60", [16]), ("RuPay", "508", [16]), ("RuPay", "82", [16]),
    ("Troy", "9792", [16]),
    ("Verve", "506099", [16]), ("Verve", "650002", [19]), ("Verve", "507865", [18]),
    ("Dankort", "5019", [16]),
    ("InstaPayment", "637", [16]),
    ("BORICA", "2205", [16]),
    ("UzCard", "8600", [16]),
    ("Humo", "9860", [16]),
    ("GPN", "1946", [16]),
    ("LankaPay", "357111", [16]),
]
CARD_TEMPLATES = [
    "Card number: {}", "I paid with {} yesterday.", "{}", "cc={}", "Use card {}, exp 12/27.",
    "Charge ({}) declined", "Visa/MC: {}\nCVV on back",
]


def group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for s in sizes:
        out.append(digits[i:i + s])
        i += s
    if i < len(digits):
        out.append(digits[i:])
    return sep.join(p for p in out if p)


def groupings(n: int, network: str) -> list[int]:
    if network == "UATP":
        return [4, 5, 6]
    if network == "American Express":
        return [4, 6, 5]
    if n == 14:
        return [4, 6, 4]
    return [4] * (n // 4)


def card_number(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)


def card_cases(rng: random.Random) -> None:
    src = "ISO/IEC 7812-1 (MII, Luhn) and the issuer range the network publishes"
    k = 0
    for network, prefix, lengths in CARD_RANGES:
        for n in lengths:
            digits = card_number(rng, prefix, n)
            sep = ["", " ", "-"][k % 3]
            k += 1
            shown = group(digits, groupings(n, network), sep) if sep else digits
            add("card", rng.choice(CARD_TEMPLATES), [(shown, "credit_card")],
                f"{network} {prefix}, {n} digits, {'no' if not sep else repr(sep)} separators", src)
    # Well-known test numbers printed by the networks' documentation.
    for digits, network in [("4111111111111111", "Visa"), ("5555555555554444", "Mastercard"),
                            ("378282246310005", "American Express"), ("6011111111111117", "Discover"),
                            ("3530111333300000", "JCB"), ("30569309025904", "Diners"),
                            ("6200000000000005", "UnionPay"), ("2223003122003222", "Mastercard 2-series"),
                            ("135410014004955", "UATP")]:
        add("card", "Test card {} works.", [(group(digits, groupings(len(digits), "American Express" if network ==
             "American Express" else ("UATP" if network == "UATP" else "")), " "), "credit_card")],
            f"{network} published test number", "the network's test-card list")
    # Negatives: Luhn failures, lengths a network does not issue, unassigned or non-card MIIs,
    # Luhn-valid numbers of other kinds (IMEI), and digit runs a card sits inside of.
    for network, prefix, lengths in CARD_RANGES[::3]:
        digits = card_number(rng, prefix, lengths[0])
        bad = digits[:-1] + str((int(digits[-1]) + 1) % 10)
        add("card", rng.choice(CARD_TEMPLATES), [(group(bad, groupings(len(bad), network), " "), None)],
            f"{network}: Luhn check fails", "ISO/IEC 7812-1 (Luhn)")
    for prefix, n, note in [("4", 15, "Visa prefix, 15 digits"), ("4", 14, "Visa prefix, 14 digits"),
                            ("34", 16, "Amex prefix, 16 digits"), ("1", 16, "UATP prefix, 16 digits"),
                            ("1", 13, "UATP prefix, 13 digits"), ("0", 16, "MII 0 (not a card industry)"),
                            ("7", 16, "MII 7 (petroleum, no network here)"), ("99", 16, "MII 9, no network"),
                            ("51", 15, "Mastercard prefix, 15 digits"), ("3528", 15, "JCB prefix, 15 digits"),
                            ("4", 12, "12 digits")]:
        digits = card_number(rng, prefix, n)
        add("card", rng.choice(CARD_TEMPLATES), [(digits, None)], f"Luhn-valid, {note}", "ISO/IEC 7812-1")
    imei = [card_number(rng, tac, 15) for tac in ("35693803", "01234500", "86012345", "35209900")]
    for v in imei:
        add("card", "IMEI {}", [(v, None)], "IMEI (15 digits, Luhn-valid, not a card)", "3GPP TS 23.003")
    inside = card_number(rng, "4", 16)
    add("card", "Ref {} end", [(inside + "7777", None)], "20 digits holding a valid card: no partial redaction",
        "ISO/IEC 7812-1 (max 19 digits)")
    add("card", "Ref {} end", [("12" + inside, None)], "18 digits, card at the end: no partial redaction",
        "ISO/IEC 7812-1")
    add("card", "token {}", [("tok" + inside + "x", None)], "card digits glued inside a token", "ISO/IEC 7812-1")
    add("card", "Order {}", [("4111.1111.1111.1111", None)], "dots are not card separators", "card printing")
    add("card", "Amount {}", [("4,111,111,111,111,111", None)], "thousands separators", "not a card")
    add("card", "Serial {}", [("1234 5678 9012 3456", None)], "Luhn fails, sequential digits", "ISO/IEC 7812-1")
    add("card", "Tracking {}", [("1Z999AA10123456784", None)], "UPS tracking number", "not a card")
    add("card", "Call {}", [("+1 415-555-0132", "phone")], "a phone number is not a card", "ITU-T E.164")


# =========================================================================== emails
EMAILS_POS = [
    ("john.doe@example.com", "dot-atom local part"),
    ("jane+newsletter@example.org", "plus tag"),
    ("first_last-99@mail.example.co.uk", "underscore, hyphen, digits, 4 labels"),
    ("x@example.museum", "long TLD"),
    ("support@sub.domain-with-hyphen.example.net", "hyphenated label"),
    ("John.Smith@Example.COM", "upper case"),
    ("a@b.co", "shortest common shape"),
    ("user%host@example.com", "percent in local part (RFC 5322 atext)"),
    ("!#$%&'*+/=?^_`{|}~-@example.org", "every RFC 5322 atext special"),
    ("o'reilly@example.com", "apostrophe in local part"),
    ("customer/department=shipping@example.com", "RFC 3696 example"),
    ("$A12345@example.com", "RFC 3696 example"),
    ("!def!xyz%abc@example.com", "RFC 3696 example"),
    ("_somename@example.com", "RFC 3696 example"),
    ("\"Abc@def\"@example.com", "quoted local part with @ (RFC 3696)"),
    ("\"Fred Bloggs\"@example.com", "quoted local part with a space (RFC 3696)"),
    ("\"Joe.\\\\Blow\"@example.com", "quoted local part with an escaped backslash (RFC 3696)"),
    ("\"john..doe\"@example.com", "quoted local part with two dots"),
    ("a@xn--d1acufc.xn--p1ai", "punycode IDN domain (домен.рф)"),
    ("info@xn--bcher-kva.de", "punycode IDN label (bücher.de)"),
    ("info@bücher.de", "IDN U-label domain"),
    ("пример@пример.рф", "UTF-8 local part and domain (RFC 6531)"),
    ("用户@例子.广告", "UTF-8 local part and domain (RFC 6531)"),
    ("josé@example.es", "UTF-8 local part"),
    ("user@[192.0.2.1]", "IPv4 address literal"),
    ("user@[IPv6:2001:db8::1]", "IPv6 address literal"),
    ("test.email.with+symbol@example.photography", "new gTLD"),
    ("12345@example.com", "numeric local part"),
    ("x_y.z-w@e-x.a-m.example", "RFC 2606 .example TLD"),
    ("admin@mailserver1.example.edu", "digit in label"),
    ("noreply@123.example.com", "numeric label"),
    ("very.common@example.com", "common"),
    ("disposable.style.email.with+symbol@example.com", "common with +"),
    ("other.email-with-hyphen@example.com", "hyphen in local part"),
    ("fully-qualified-domain@example.com", "hyphens"),
    ("user.name+tag+sorting@example.com", "two tags"),
    ("example-indeed@strange-example.com", "hyphenated domain"),
    ("mailhost!username@example.org", "bang path style"),
    ("user-@example.org", "local part ending with hyphen"),
    ("a.b.c.d.e.f.g@example.com", "many dots"),
]
EMAIL_TEMPLATES = [
    "Write to {}.", "Email: {}", "{}", "<{}>", "mailto:{}", "Contact ({}) for help", "cc {}, bcc none",
    "Send it to {} by Friday!", "From: Jane <{}>", "Her address is {}; his is unknown.",
]


def email_cases(rng: random.Random) -> None:
    src = "RFC 5321/5322, RFC 3696 sec. 3, RFC 6531, RFC 5890"
    for addr, note in EMAILS_POS:
        add("email", rng.choice(EMAIL_TEMPLATES), [(addr, "email")], note, src)
        # Every other one again in a second context (sentence end, parentheses, lists).
        if len(CASES) % 2 == 0:
            add("email", rng.choice(EMAIL_TEMPLATES), [(addr, "email")], note + ", second context", src)
    add("email", "Mail {} or {}.", [("a@example.com", "email"), ("b@example.org", "email")], "two addresses", src)
    add("email", "Contact:{}", [("jane@example.com", "email")], "glued to a colon", src)
    add("email", "see {}'s inbox", [("bob@example.com", "email")], "possessive after the address", src)
    add("email", "({}).", [("x@example.com", "email")], "bracket and full stop after the TLD", src)
    add("email", "Reply to {}...", [("y@example.com", "email")], "ellipsis after the TLD", src)
    negatives = [
        ("Abc.example.com", "no @ (RFC 3696)"),
        ("A@b@c@example.com", "several @ outside quotes (RFC 3696)"),
        ("a\"b(c)d,e:f;g<h>i[j\\k]l@example.com", "specials unquoted (RFC 3696)"),
        ("john..doe@example.com", "two dots in a row in the local part"),
        (".john@example.com", "local part starts with a dot"),
        ("john.@example.com", "local part ends with a dot"),
        ("user@example..com", "empty domain label"),
        ("user@-example.com", "label starts with a hyphen"),
        ("user@example-.com", "label ends with a hyphen"),
        ("user@.example.com", "domain starts with a dot"),
        ("@example.com", "no local part"),
        ("user@", "no domain"),
        ("user@localhost", "single-label domain"),
        ("user@example", "no TLD"),
        ("user@example.c", "one-letter TLD"),
        ("user@123.123.123.123", "bare IP as domain without brackets"),
        ("user@exa mple.com", "space in the domain"),
        ("@username", "social media handle"),
        ("@property", "Python decorator"),
        ("foo @ bar", "spaced @"),
        ("x@y", "too short to be an address"),
        ("1234567890123456789012345678901234567890123456789012345678901234+x@example.com",
         "local part longer than 64 octets (RFC 5321)"),
        ("user@" + "a" * 64 + ".com", "label longer than 63 octets (RFC 1035)"),
        ("git@github", "no TLD"),
        ("price @ $5", "at sign in prose"),
        ("a@b.c.d.e.f.123", "numeric TLD"),
        ("user@xn--.com", "empty punycode label"),
        ("name[at]example[dot]com", "obfuscated: not an address"),
    ]
    for value, note in negatives:
        template = rng.choice(["Address {} here", "value: {}", "{} is wrong"])
        if value == "user@123.123.123.123":  # not an address, but an IPv4 address all the same
            template, vals = template.replace("{}", "user@{}"), [("123.123.123.123", "ipv4")]
        else:
            vals = [(value, None)]
        add("email", template, vals, note, "RFC 5321/5322, RFC 3696")


# =========================================================================== IPs
IPV4_POS = ["192.0.2.1", "198.51.100.42", "203.0.113.255", "0.0.0.0", "255.255.255.255", "10.0.0.1",
            "127.0.0.1", "172.16.254.3", "8.8.8.8", "100.64.0.1", "169.254.10.20", "224.0.0.251",
            "192.168.1.20", "1.1.1.1", "9.9.9.9"]
IPV6_POS = [
    ("2001:db8::1", "compressed"), ("2001:0db8:0000:0000:0000:ff00:0042:8329", "full form"),
    ("2001:db8:0:0:1:0:0:1", "zeros not compressed"), ("2001:db8::ff00:42:8329", "compressed"),
    ("::", "unspecified address `::`"), ("::1", "loopback `::1`"), ("::ffff:192.0.2.128", "IPv4-mapped"),
    ("::ffff:c000:0280", "IPv4-mapped, hex"), ("64:ff9b::192.0.2.33", "NAT64 (RFC 6052)"),
    ("fe80::1%eth0", "link-local with zone id (RFC 4007)"), ("fe80::1ff:fe23:4567:890a%3", "numeric zone id"),
    ("2001:DB8::8:800:200C:417A", "upper case (RFC 4291)"), ("FF01::101", "multicast (RFC 4291)"),
    ("1::", "trailing ::"), ("1:2:3:4:5:6:7::", "seven groups then ::"), ("::2:3:4:5:6:7:8", ":: then seven"),
    ("2001:db8::", "prefix only"), ("fd12:3456:789a:1::1", "unique local"), ("2001:db8:85a3::8a2e:370:7334", "common"),
    ("::192.0.2.1", "IPv4-compatible (deprecated, still valid)"), ("0:0:0:0:0:0:0:1", "loopback, full"),
    ("2001:db8:1234:ffff:ffff:ffff:ffff:ffff", "all-f groups"), ("ff02::1:ff00:1234", "solicited-node multicast"),
]
IP_TEMPLATES = ["Server {} is down", "from {}:", "{}", "host={}", "Blocked ({}) again", "ping {} -c 3",
                "Her IP was {}.", "allow {}, deny all"]


def ip_cases(rng: random.Random) -> None:
    src4, src6 = "RFC 791, RFC 5737", "RFC 4291 sec. 2.2, RFC 5952, RFC 4007, RFC 3849"
    for a in IPV4_POS:
        add("ip", rng.choice(IP_TEMPLATES), [(a, "ipv4")], "IPv4 dotted quad", src4)
    add("ip", "Listening on {}:8080", [("192.0.2.10", "ipv4")], "IPv4 with a port", src4)
    add("ip", "http://{}/index.html", [("198.51.100.7", "ipv4")], "IPv4 in a URL", "RFC 3986")
    add("ip", "Route {}/24 via {}", [("192.0.2.0", "ipv4"), ("192.0.2.254", "ipv4")], "CIDR prefix and gateway",
        "RFC 4632")
    add("ip", "{},{},{}", [("10.1.1.1", "ipv4"), ("10.1.1.2", "ipv4"), ("10.1.1.3", "ipv4")], "comma list", src4)
    add("ip", "The address is {}.", [("203.0.113.9", "ipv4")], "sentence end", src4)
    # (not "from {}:": a colon after an IPv6 address that ends in `::` or a group is ambiguous)
    v6_templates = [t for t in IP_TEMPLATES if not t.endswith(":")]
    for a, note in IPV6_POS:
        add("ip", rng.choice(v6_templates), [(a, "ipv6")], f"IPv6 {note}", src6)
    add("ip", "https://[{}]:8443/", [("2001:db8::7", "ipv6")], "IPv6 in a URL with a port", "RFC 3986")
    add("ip", "Route {}/32", [("2001:db8::", "ipv6")], "IPv6 prefix", "RFC 4291 sec. 2.3")
    add("ip", "bind to {} and {}", [("::", "ipv6"), ("0.0.0.0", "ipv4")], "`::` beside an IPv4", src6)
    add("ip", "Localhost is {} or {}.", [("::1", "ipv6"), ("127.0.0.1", "ipv4")], "both loopbacks", src6)
    negatives = [
        ("256.1.1.1", "octet above 255"), ("192.168.1", "three octets"), ("1.2.3.4.5", "five octets"),
        ("192.168.01.1", "leading zero (ambiguous octal, rejected by ipaddress)"), ("300.300.300.300", "all octets too big"),
        ("1.3.6.1.4.1.311", "SNMP OID"), ("::ffff:256.0.0.1", "IPv4-mapped with an invalid octet"),
        ("2001:db8::g1", "non-hex digit"), ("1:2:3:4:5:6:7:8:9", "nine groups"), ("2001:db8:::1", "three colons"),
        ("1::2::3", "two `::`"), ("12345::1", "group of five hex digits"), ("00:1a:2b:3c:4d:5e", "MAC address"),
        ("12:30:45", "time"), ("std::vector", "C++ scope"), ("Foo::Bar", "Ruby constant"),
        ("p::before", "CSS pseudo-element"), ("a::b::c", "scoped name"), ("2001:db8:0:0:0:0:0:0:1", "too many groups"),
        ("1.2.3.256", "last octet above 255"), ("10.0.0.1.5", "trailing extra octet"),
        ("fe80::1%", "empty zone id"), ("2001:db8::1::", "two `::` at the end"), ("3.14159", "a decimal"),
        ("2024.03.05", "dotted date"), ("1.2.3", "version"), ("::ffff:1.2.3", "IPv4-mapped with three octets"),
        ("abcd:ef01:2345:6789:abcd:ef01:2345:6789:1", "nine groups, full"), ("0x7f.0.0.1", "hex octet"),
    ]
    for value, note in negatives:
        add("ip", rng.choice(["Value {} here", "addr: {}", "{} is invalid"]), [(value, None)], note,
            "RFC 791 / RFC 4291 (invalid forms)")


# =========================================================================== IBANs
# ISO 13616 BBAN structures from the SWIFT IBAN registry (release 101): count + type, where
# n = digits, a = upper-case letters, c = upper-case letters or digits.
IBAN_BBAN = {
    "AD": "4n4n12c", "AE": "3n16n", "AL": "8n16c", "AT": "5n11n", "AZ": "4a20c", "BA": "3n3n8n2n", "BE": "3n7n2n",
    "BG": "4a4n2n8c", "BH": "4a14c", "BI": "5n5n11n2n", "BR": "8n5n10n1a1c", "BY": "4c4n16c", "CH": "5n12c",
    "CR": "4n14n", "CY": "3n5n16c", "CZ": "4n16n", "DE": "8n10n", "DJ": "5n5n11n2n", "DK": "4n9n1n",
    "DO": "4c20n", "EE": "2n14n", "EG": "4n4n17n", "ES": "4n4n1n1n10n", "FI": "3n11n", "FK": "2a12n",
    "FO": "4n9n1n", "FR": "5n5n11c2n", "GB": "4a6n8n", "GE": "2a16n", "GI": "4a15c", "GL": "4n9n1n",
    "GR": "3n4n16c", "GT": "4c20c", "HN": "4a20n", "HR": "7n10n", "HU": "3n4n1n15n1n", "IE": "4a6n8n",
    "IL": "3n3n13n", "IQ": "4a3n12n", "IS": "4n2n6n10n", "IT": "1a5n5n12c", "JO": "4a4n18c", "KW": "4a22c",
    "KZ": "3n13c", "LB": "4n20c", "LC": "4a24c", "LI": "5n12c", "LT": "5n11n", "LU": "3n13c", "LV": "4a13c",
    "LY": "3n3n15n", "MC": "5n5n11c2n", "MD": "2c18c", "ME": "3n13n2n", "MK": "3n10c2n", "MN": "4n12n",
    "MR": "5n5n11n2n", "MT": "4a5n18c", "MU": "4a2n2n12n3n3a", "NI": "4a20n", "NL": "4a10n", "NO": "4n6n1n",
    "OM": "3n16c", "PK": "4a16c", "PL": "8n16n", "PS": "4a21c", "PT": "4n4n11n2n", "QA": "4a21c", "RO": "4a16c",
    "RS": "3n13n2n", "RU": "9n5n15c", "SA": "2n18c", "SC": "4a2n2n16n3a", "SD": "2n12n", "SE": "3n16n1n",
    "SI": "5n8n2n", "SK": "4n6n10n", "SM": "1a5n5n12c", "SO": "4n3n12n", "ST": "4n4n11n2n", "SV": "4a20n",
    "TL": "3n14n2n", "TN": "2n3n13n2n", "TR": "5n1n16c", "UA": "6n19c", "VA": "3n15n", "VG": "4a16n",
    "XK": "4n10n2n", "YE": "4a4n18c",
}
# Example IBANs printed in the registry for a few countries (checked by mod-97 below).
IBAN_REGISTRY_EXAMPLES = ["DE89370400440532013000", "GB29NWBK60161331926819", "FR1420041010050500013M02606",
                          "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957",
                          "AT611904300234573201", "ES9121000418450200051332", "IT60X0542811101000000123456",
                          "NO9386011117947", "LC55HEMM000100010012001200023015", "MT84MALT011000012345MTLCAST001S"]
IBAN_TEMPLATES = ["IBAN: {}", "Please transfer to {} by Friday.", "{}", "Account {}, BIC below",
                  "Konto ({}) bei der Bank", "pay into {}\nref 42", "Our bank details: IBAN {}."]


def bban_random(rng: random.Random, structure: str) -> str:
    import re

    out = []
    for count, typ in re.findall(r"(\d+)([nac])", structure):
        pool = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                "c": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}[typ]
        out.append("".join(rng.choice(pool) for _ in range(int(count))))
    return "".join(out)


def mod97(s: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in s)) % 97


def iban_for(country: str, bban: str) -> str:
    check = 98 - mod97(bban + country + "00")
    return f"{country}{check:02d}{bban}"


def iban_print(iban: str, sep: str = " ") -> str:
    return sep.join(iban[i:i + 4] for i in range(0, len(iban), 4))


def iban_cases(rng: random.Random) -> None:
    src = "ISO 13616, SWIFT IBAN registry r101 (BBAN structure, length), ISO 7064 mod 97-10"
    for i, (country, structure) in enumerate(IBAN_BBAN.items()):
        iban = iban_for(country, bban_random(rng, structure))
        assert mod97(iban[4:] + iban[:4]) == 1
        add("iban", rng.choice(IBAN_TEMPLATES), [(iban_print(iban), "iban")], f"{country}, print format (spaces)", src)
        other = iban_for(country, bban_random(rng, structure))
        shape = i % 2
        shown = other if shape == 0 else iban_print(other, "-")
        add("iban", rng.choice(IBAN_TEMPLATES), [(shown, "iban")],
            f"{country}, {'electronic format (no separators)' if shape == 0 else 'dashes'}", src)
    for iban in IBAN_REGISTRY_EXAMPLES:
        assert mod97(iban[4:] + iban[:4]) == 1, iban
        add("iban", "Example: {} (from the registry)", [(iban_print(iban), "iban")], f"{iban[:2]} registry example",
            "SWIFT IBAN registry r101, the country's example")
    add("iban", "Send {} and {} the money", [(iban_print(IBAN_REGISTRY_EXAMPLES[0]), "iban"),
                                             (IBAN_REGISTRY_EXAMPLES[1], "iban")], "two IBANs in a sentence", src)
    # Negatives: lower case, bad check digits, wrong length, unknown country, structure violations.
    for country in ["DE", "GB", "FR", "LV", "NL", "IT", "ES", "CH", "PL", "SE"]:
        iban = iban_for(country, bban_random(rng, IBAN_BBAN[country]))
        add("iban", rng.choice(IBAN_TEMPLATES), [(iban_print(iban).lower(), None)], f"{country} all lower case",
            "ISO 13616 (upper case only)")
        letters = [j for j in range(4, len(iban)) if iban[j].isalpha()]
        if letters:
            j = letters[0]
            mixed = iban[:j] + iban[j].lower() + iban[j + 1:]
            add("iban", rng.choice(IBAN_TEMPLATES), [(iban_print(mixed), None)], f"{country} one lower-case letter",
                "ISO 13616 (upper case only)")
        bad = iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
        add("iban", rng.choice(IBAN_TEMPLATES), [(iban_print(bad), None)], f"{country} wrong check digits",
            "ISO 7064 mod 97-10")
        longer = iban_for(country, bban_random(rng, IBAN_BBAN[country]) + "1")
        add("iban", rng.choice(IBAN_TEMPLATES), [(iban_print(longer), None)], f"{country} one character too many",
            "IBAN registry (country length)")
    add("iban", "IBAN {}", [("LV80 bANK 0000 4351 9500 1", None)], "lower-case letter (issue #21's case)",
        "ISO 13616 (upper case only)")
    for country, bban in [("XX", "370400440532013000"), ("US", "370400440532013000"), ("ZZ", "NWBK60161331926819")]:
        add("iban", "IBAN {}", [(iban_print(iban_for(country, bban)), None)], f"{country}: no IBAN country",
            "IBAN registry (countries)")
    de_letter = iban_for("DE", "37040044053201300A")
    add("iban", "IBAN {}", [(iban_print(de_letter), None)], "DE with a letter where the BBAN has digits only",
        "IBAN registry (BBAN structure 8n10n)")
    gb_digit = iban_for("GB", "1234" + "601613" + "31926819")
    add("iban", "IBAN {}", [(iban_print(gb_digit), None)], "GB with digits where the bank code has letters",
        "IBAN registry (BBAN structure 4a6n8n)")
    inside = IBAN_REGISTRY_EXAMPLES[0]
    add("iban", "ref {}", [("X" + inside + "9", None)], "IBAN inside a longer token: no partial redaction",
        "ISO 13616")
    add("iban", "code {}", [(inside + "12", None)], "IBAN followed by more digits", "ISO 13616")
    add("iban", "Word {} here", [("DEAR SIRS AND MADAMS", None)], "capitalised words", "not an IBAN")
    add("iban", "Serial {}", [("AB12 3456 7890 1234", None)], "IBAN-like serial, no such country", "not an IBAN")


def build() -> list[dict]:
    CASES.clear()
    _counters.clear()
    rng = random.Random(21)
    phone_cases(rng)
    card_cases(rng)
    email_cases(rng)
    ip_cases(rng)
    iban_cases(rng)
    return list(CASES)


def dump(cases: list[dict]) -> str:
    return "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if cases.jsonl is not what this script writes")
    args = ap.parse_args()
    text = dump(build())
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT} is out of date: run {Path(__file__).name}")
        return
    OUT.write_text(text, encoding="utf-8")
    counts: dict[tuple[str, str], int] = {}
    for c in CASES:
        counts[(c["kind"], c["label"])] = counts.get((c["kind"], c["label"]), 0) + 1
    print(f"{len(CASES)} cases -> {OUT}: " + ", ".join(f"{k}/{lab} {n}" for (k, lab), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
