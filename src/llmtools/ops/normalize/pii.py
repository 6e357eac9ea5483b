"""PII redaction: emails, phone numbers, IPv4/IPv6 addresses, credit cards, IBANs.

Each match becomes a typed placeholder (`<EMAIL>`, `<PHONE>`, `<IPV4>`, `<IPV6>`,
`<CREDIT_CARD>`, `<IBAN>`). Candidates are found by regex and then validated where a checksum
or a parser exists (Luhn and issuer prefixes for cards, ISO 7064 mod-97 and country lengths for
IBANs, the `ipaddress` module for IPv6), so ordinary numbers are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

PII_KINDS = ("email", "ipv6", "ipv4", "iban", "credit_card", "phone")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "ipv4": "<IPV4>",
    "ipv6": "<IPV6>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
}
# Accepted spellings for `--pii` (singular/plural, the IP family as one word).
PII_ALIASES = {
    "email": ("email",), "emails": ("email",),
    "phone": ("phone",), "phones": ("phone",),
    "ip": ("ipv4", "ipv6"), "ips": ("ipv4", "ipv6"), "ipv4": ("ipv4",), "ipv6": ("ipv6",),
    "card": ("credit_card",), "cards": ("credit_card",), "credit_card": ("credit_card",),
    "credit-card": ("credit_card",),
    "iban": ("iban",), "ibans": ("iban",),
}

def _c(pattern: str, flags: int = 0) -> re.Pattern:
    # ASCII digits only: Luhn, mod-97 and digit counts are defined on 0-9, not on every Nd.
    return re.compile(pattern.replace(r"\d", "[0-9]"), flags)


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_IPV4 = _c(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
# Loose candidate; ipaddress decides. A digit is required so code like `abc::def` is left alone.
_IPV6 = _c(
    r"(?<![\w:.])(?=[0-9A-Fa-f:.]*\d)(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[0-9A-Za-z]+)?(?![\w:])"
)
_IBAN = _c(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])", re.IGNORECASE)
_CARD = _c(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w]|[.,-]\d)")
_PHONE = _c(
    r"(?<![\w+.,/-])(?:"
    # international: +CC then 1-6 groups, optional (0) trunk
    r"\+\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567
    r"|(?:\(\d{3}\)[ ]?|\d{3}[-. ])\d{3}[-. ]\d{4}"
    # national with a trunk 0: 020 7946 0958, 01 23 45 67 89, 030-123-4567
    r"|0\d{1,4}(?:[ -]\d{2,4}){2,4}"
    r")(?![\w]|[.,/-]\d)"
)

# ISO 13616 lengths of the countries that issue IBANs (the common ones; others need 15-34).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


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


def card_issuer_ok(digits: str) -> bool:
    """Issuer (IIN) prefixes and lengths of the major networks; cuts Luhn's 1-in-10 false hits."""
    n = len(digits)
    p2, p4, p6 = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return 14 <= n <= 19  # Diners Club
    if p2 == 62 or p2 == 81:
        return 16 <= n <= 19  # UnionPay
    if p2 in (50, 56, 57, 58, 63, 67) or p4 in (6759, 6761, 6762, 6763):
        return 12 <= n <= 19  # Maestro
    return False


def iban_ok(candidate: str) -> bool:
    code = candidate.replace(" ", "").upper()
    country = code[:2]
    expected = _IBAN_LENGTHS.get(country)
    if expected is not None and len(code) != expected:
        return False
    if expected is None and not 15 <= len(code) <= 34:
        return False
    moved = code[4:] + code[:4]
    digits = "".join(str(int(ch, 36)) for ch in moved)
    return int(digits) % 97 == 1


def _ipv6_ok(candidate: str) -> bool:
    addr = candidate.split("%", 1)[0]
    if addr.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


def _phone_ok(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15
    return 9 <= digits <= 12


_VALIDATORS = {
    "ipv6": _ipv6_ok,
    "iban": iban_ok,
    "credit_card": lambda c: (d := c.replace(" ", "").replace("-", "")) is not None
    and 13 <= len(d) <= 19
    and card_issuer_ok(d)
    and luhn_ok(d)
    and _consistent_separators(c),
    "phone": _phone_ok,
}
_PATTERNS = {
    "email": _EMAIL,
    "ipv6": _IPV6,
    "ipv4": _IPV4,
    "iban": _IBAN,
    "credit_card": _CARD,
    "phone": _PHONE,
}
# Cheap gates: a kind is searched for only when its tell-tale character is in the text.
_NEEDS = {"email": "@", "ipv6": ":", "ipv4": "."}


def _consistent_separators(candidate: str) -> bool:
    return not (" " in candidate and "-" in candidate)


class Redactor:
    """Redacts the chosen kinds, in the fixed order of PII_KINDS, and counts what it replaced."""

    def __init__(self, kinds: tuple[str, ...] = PII_KINDS):
        self.kinds = tuple(k for k in PII_KINDS if k in kinds)
        self.counts: Counter[str] = Counter()

    def __call__(self, text: str) -> str:
        has_digit = None
        for kind in self.kinds:
            need = _NEEDS.get(kind)
            if need is not None and need not in text:
                continue
            if kind != "email":
                if has_digit is None:
                    has_digit = _has_digit(text)
                if not has_digit:
                    continue
            text = self._sub(kind, text)
        return text

    def _sub(self, kind: str, text: str) -> str:
        pattern = _PATTERNS[kind]
        if not pattern.search(text):
            return text
        placeholder = PLACEHOLDERS[kind]
        valid = _VALIDATORS.get(kind)
        hits = 0

        def repl(m: re.Match) -> str:
            nonlocal hits
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            hits += 1
            return placeholder

        out = pattern.sub(repl, text)
        if hits:
            self.counts[kind] += hits
            return out
        return text


_DIGIT = re.compile(r"\d")


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


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
