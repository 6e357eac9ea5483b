"""PII redaction: emails, phone numbers, IPv4/IPv6 addresses, payment cards, IBANs.

Each match becomes a typed placeholder (`<EMAIL>`, `<PHONE>`, `<IPV4>`, `<IPV6>`,
`<CREDIT_CARD>`, `<IBAN>`). A cheap regex finds candidates; the standard's own judge decides:

- email: RFC 5321/5322 addresses as people write them (dot-atoms, quoted local parts, UTF-8
  local parts, IDN and punycode domains, address literals). A plain ASCII dot-atom address is
  checked here; anything else goes to `email-validator`'s syntax check (no DNS). The domain
  needs a dot and a TLD of letters (or a punycode A-label), or must be an address literal.
- ipv6 / ipv4: the standard library's `ipaddress` judges every candidate token whole (zone ids
  and IPv4-mapped forms included), so an invalid address is never partly redacted.
- iban: ISO 13616 with the SWIFT registry's country lengths and BBAN structures, ISO 7064
  mod 97-10, upper case only, grouped by spaces, dashes or nothing.
- credit_card: ISO/IEC 7812 issuer ranges the networks publish (UATP's 1 included), the
  network's lengths, the Luhn digit; grouped by spaces or dashes (one kind per number).
- phone: Google's libphonenumber (`phonenumbers`), see phones.py.

Kinds run in the order of PII_KINDS: an IPv4 inside an IPv6 address, or a number inside an
IBAN, belongs to the earlier kind. `email-validator` and `phonenumbers` are imported only when
their kind is on and a text could hold one.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Callable, Iterator

PII_KINDS = ("email", "ipv6", "ipv4", "iban", "credit_card", "phone")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "ipv4": "<IPV4>",
    "ipv6": "<IPV6>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
}
# Accepted spellings for `--redact` (singular/plural, the IP family as one word).
PII_ALIASES = {
    "email": ("email",), "emails": ("email",),
    "phone": ("phone",), "phones": ("phone",),
    "ip": ("ipv4", "ipv6"), "ips": ("ipv4", "ipv6"), "ipv4": ("ipv4",), "ipv6": ("ipv6",),
    "card": ("credit_card",), "cards": ("credit_card",), "credit_card": ("credit_card",),
    "credit-card": ("credit_card",),
    "iban": ("iban",), "ibans": ("iban",),
}

# --------------------------------------------------------------------------- email

_ATEXT = r"[\w!#$%&'*+/=?^`{|}~-]"  # RFC 5322 atext, widened to UTF-8 letters (RFC 6531)
_EMAIL = re.compile(
    r"(?<![\w!#$%&'*+/=?^`{|}~.\"\\\]@-])"
    r"(?:" + _ATEXT + r"+(?:\." + _ATEXT + r"+)*|\"(?:[^\"\\\r\n]|\\.)*\")"
    r"@(?:[\w-]+(?:\.[\w-]+)+|\[[^\]\s]+\])"
    r"(?![\w-]|\.[\w-])"
)
# The common case, checked without email-validator: an ASCII dot-atom at an ASCII host name.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)
_TLD = re.compile(r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})", re.IGNORECASE)
_validate_email: Callable | None = None


def email_ok(candidate: str) -> bool:
    """An address as RFC 5321/5322 (with RFC 6531/IDNA) allows and as mail systems deliver."""
    local, _, domain = candidate.rpartition("@")
    if len(local.encode()) > 64 or len(candidate.encode()) > 254:
        return False
    labels = domain.split(".")
    # A label with "--" at its 3rd and 4th characters is either Punycode ("xn--", which must
    # decode) or an R-LDH label RFC 5890 reserves: email-validator judges those.
    if _PLAIN_EMAIL.fullmatch(candidate) and not any(label[2:4] == "--" for label in labels):
        return all(len(label) <= 63 for label in labels)
    global _validate_email
    if _validate_email is None:
        from llmtools.errors import require

        _validate_email = require("email_validator", purpose="email redaction").validate_email
    try:
        _validate_email(candidate, check_deliverability=False, allow_quoted_local=True,
                        allow_domain_literal=True, globally_deliverable=False, allow_smtputf8=True)
    except Exception:  # EmailNotValidError, or anything idna raises on a malformed label
        return False
    if domain.startswith("["):
        return True
    return "." in domain and _TLD.fullmatch(domain.rsplit(".", 1)[1]) is not None


def _emails(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL.finditer(text):
        start, end = m.span()
        cand = m.group()
        # `'john@example.com'`: an apostrophe is atext, but one on both sides is quoting.
        if cand[0] in "'`" and text[end:end + 1] == cand[0]:
            start, cand = start + 1, cand[1:]
        if email_ok(cand):
            yield start, end


# --------------------------------------------------------------------------- IPs

# Whole tokens of hex digits, dots and colons (and a zone id): judged whole, never in part.
_IPV6 = re.compile(r"(?<![\w:.%-])[0-9A-Za-z]*:[0-9A-Za-z:.]*(?:%[0-9A-Za-z_.-]+)?(?![\w%-])")
_IPV4 = re.compile(r"(?<![\w.:%-])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![\w%]|\.[0-9])")
_HAS_DIGIT = re.compile(r"[0-9]")


def ipv6_ok(candidate: str) -> bool:
    if candidate.count(":") < 2:
        return False
    addr, pct, zone = candidate.partition("%")
    if pct and not zone:
        return False
    if candidate != "::" and not _HAS_DIGIT.search(addr):
        return False  # `abc::def`, `Foo::Bar`: code, not an address (`::` alone is one)
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _ipv6s(text: str) -> Iterator[tuple[int, int]]:
    for m in _IPV6.finditer(text):
        start, end = m.span()
        cand = m.group()
        # A sentence's full stop or colon after the address is not part of it.
        if cand.endswith("."):
            cand, end = cand[:-1], end - 1  # a full stop, even after a zone id
        if cand.endswith(":") and not cand.endswith("::") and not ipv6_ok(cand):
            cand, end = cand[:-1], end - 1  # `... ::1:` at a sentence's colon
        if start > 1 and text[start - 1] == "[" and (text[start - 2].isalnum() or text[start - 2] in "_)]"):
            continue  # `x[::2]`, `a[1::3]`: a slice in code, not an address
        if ipv6_ok(cand):
            yield start, end


def ipv4_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)  # rejects octets above 255 and leading zeros
    except ValueError:
        return False
    return True


def _ipv4s(text: str) -> Iterator[tuple[int, int]]:
    for m in _IPV4.finditer(text):
        if ipv4_ok(m.group()):
            yield m.span()


# --------------------------------------------------------------------------- IBAN

# ISO 13616 BBAN structures of the SWIFT IBAN registry (release 101): count + type, where
# n = digits, a = upper-case letters, c = upper-case letters or digits. IBAN length = 4 + BBAN.
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
_BBAN_CLASS = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Z0-9]"}


def _bban_pattern(structure: str) -> tuple[int, re.Pattern]:
    parts = re.findall(r"(\d+)([nac])", structure)
    regex = "".join(f"{_BBAN_CLASS[t]}{{{n}}}" for n, t in parts)
    return 4 + sum(int(n) for n, _ in parts), re.compile(regex)


IBAN_FORMATS = {country: _bban_pattern(s) for country, s in IBAN_BBAN.items()}
IBAN_LENGTHS = {country: n for country, (n, _) in IBAN_FORMATS.items()}

# Upper case only (ISO 13616); one kind of separator, anywhere between characters.
_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]){8,34}")


def iban_ok(candidate: str) -> bool:
    """Country, length, BBAN structure and mod-97 of an IBAN (separators ignored; upper case only)."""
    code = candidate.replace(" ", "").replace("-", "")
    fmt = IBAN_FORMATS.get(code[:2])
    if fmt is None or len(code) != fmt[0] or not code[2:4].isdigit() or not fmt[1].fullmatch(code[4:]):
        return False
    moved = code[4:] + code[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        start, cand = m.start(), m.group()
        length = IBAN_LENGTHS.get(cand[:2])
        if length is None:
            continue
        # Take exactly the country's length; what follows must not continue the token.
        seen = 0
        for i, ch in enumerate(cand):
            if ch not in " -":
                seen += 1
                if seen == length:
                    break
        if seen != length:
            continue
        body = cand[:i + 1]
        end = start + i + 1
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            continue
        if " " in body and "-" in body:
            continue
        if iban_ok(body):
            yield start, end


# --------------------------------------------------------------------------- cards

def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_ALL = frozenset(range(12, 20))
_L16_19 = frozenset(range(16, 20))
# (first prefix, last prefix, lengths): ISO/IEC 7812 issuer ranges as the networks publish them.
CARD_RANGES = (
    (1, 1, frozenset({15})),                      # UATP (MII 1: airlines)
    (1946, 1946, frozenset({16, 18, 19})),        # GPN (Indonesia)
    (2200, 2204, _L16_19),                        # Mir
    (2205, 2205, frozenset({16})),                # BORICA
    (2221, 2720, frozenset({16})),                # Mastercard 2-series
    (300, 305, frozenset(range(14, 20))),         # Diners Club International
    (3095, 3095, frozenset(range(14, 20))),       # Diners Club
    (34, 34, frozenset({15})),                    # American Express
    (37, 37, frozenset({15})),
    (36, 36, frozenset(range(14, 20))),           # Diners Club International
    (38, 39, frozenset(range(14, 20))),
    (3528, 3589, _L16_19),                        # JCB (and RuPay/LankaPay co-brands in it)
    (4, 4, frozenset({13, 16, 19})),              # Visa, Visa Electron
    (50, 50, _ALL),                               # Maestro, Dankort 5019, Verve 506099-, RuPay 508
    (51, 55, frozenset({16})),                    # Mastercard
    (56, 58, _ALL),                               # Maestro
    (60, 60, frozenset({16})),                    # RuPay
    (6011, 6011, _L16_19),                        # Discover
    (62, 62, _L16_19),                            # UnionPay (and Discover 622126-622925)
    (636, 636, _L16_19),                          # InterPayment
    (637, 639, _ALL),                             # InstaPayment 637-639, Maestro 639
    (644, 649, _L16_19),                          # Discover
    (65, 65, _L16_19),                            # Discover, RuPay, Verve 650002-650027
    (67, 67, _ALL),                               # Maestro (6759, 6761-6763, ...)
    (81, 81, _L16_19),                            # UnionPay, RuPay
    (82, 82, frozenset({16})),                    # RuPay
    (8600, 8600, frozenset({16})),                # UzCard
    (9792, 9792, frozenset({16})),                # Troy
    (9860, 9860, frozenset({16})),                # Humo
)


def card_issuer_ok(digits: str) -> bool:
    """An issuer range some network publishes, at one of its lengths (cuts Luhn's 1-in-10 false hits)."""
    n = len(digits)
    for lo, hi, lengths in CARD_RANGES:
        width = len(str(lo))
        if lo <= int(digits[:width]) <= hi and n in lengths:
            return True
    return False


_CARD = re.compile(r"(?<![\w.,-])[0-9](?:[ -]?[0-9]){11,18}(?![\w]|[.,-][0-9])")


def card_ok(candidate: str) -> bool:
    if " " in candidate and "-" in candidate:
        return False
    digits = candidate.replace(" ", "").replace("-", "")
    return card_issuer_ok(digits) and luhn_ok(digits)


_IBAN_BEFORE = re.compile(r"\b[A-Z]{2}[0-9]{2}(?:[ -][A-Z0-9]{4})*[ -]$")


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        if card_ok(m.group()) and not _IBAN_BEFORE.search(text, max(0, m.start() - 40), m.start()):
            yield m.span()


# --------------------------------------------------------------------------- the redactor

_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": _emails, "ipv6": _ipv6s, "ipv4": _ipv4s, "iban": _ibans, "credit_card": _cards,
}
# Cheap gates: a kind is looked for only when its tell-tale characters are in the text.
_DIGIT = re.compile(r"[0-9]")


class Redactor:
    """Redacts the chosen kinds, in the fixed order of PII_KINDS, and counts what it replaced.

    phone_regions / phone_leniency: see phones.py (None = its defaults). phonenumbers
    is imported here, when "phone" is among the kinds, so a bad region fails before any output."""

    def __init__(self, kinds: tuple[str, ...] = PII_KINDS, phone_regions: tuple[str, ...] | None = None,
                 phone_leniency: str | None = None):
        self.kinds = tuple(k for k in PII_KINDS if k in kinds)
        self.counts: Counter[str] = Counter()
        self._finders = dict(_FINDERS)
        if "phone" in self.kinds:
            from llmtools.ops.normalize import phones as P

            self._finders["phone"] = P.PhoneFinder(phone_regions or P.DEFAULT_REGIONS,
                                                   phone_leniency or P.DEFAULT_LENIENCY)

    def __call__(self, text: str) -> str:
        has_digit = None
        for kind in self.kinds:
            if kind == "email":
                if "@" not in text:
                    continue
            else:
                if kind == "ipv6" and ":" not in text:
                    continue
                if has_digit is None:
                    has_digit = _DIGIT.search(text) is not None
                if not has_digit and not (kind == "ipv6" and "::" in text):
                    continue
                if kind == "ipv4" and "." not in text:
                    continue
            spans = list(self._finders[kind](text))
            if spans:
                text = self._replace(text, spans, PLACEHOLDERS[kind])
                self.counts[kind] += len(spans)
        return text

    @staticmethod
    def _replace(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
        out, pos = [], 0
        for start, end in spans:
            out.append(text[pos:start])
            out.append(placeholder)
            pos = end
        out.append(text[pos:])
        return "".join(out)


def parse_kinds(spec: str | None) -> tuple[str, ...]:
    """`email,phone,ip,card,iban` (any order, aliases allowed) -> kinds; None or 'all' -> all."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return PII_KINDS
    kinds: list[str] = []
    for raw in spec.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in PII_ALIASES:
            raise ValueError(f"unknown PII kind '{name}' (choose from email, phone, ip, ipv4, ipv6, card, iban)")
        kinds.extend(PII_ALIASES[name])
    return tuple(k for k in PII_KINDS if k in kinds)
