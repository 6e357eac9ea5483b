"""Phone numbers in running text, found by Google's libphonenumber (`phonenumbers`).

`PhoneFinder(regions, leniency)(text)` returns the (start, end) spans of the phone numbers in
a text. The judge is `phonenumbers.PhoneNumberMatcher`, run once per region with the chosen
leniency; this module only decides where it is worth running:

- A cheap regex finds *candidates*: runs of at least 7 digits with the separators numbers are
  written with (spaces, `-`, `.`, `/`, brackets, a leading `+`). Text without one costs a
  regex scan; the matcher (~0.2-0.4 ms per region and call) never sees it.
- Each candidate goes to the matcher on its own (with the characters around it that the
  matcher's leniency looks at), not the whole text: the matcher's cost grows with the text.
- Regions whose numbering plan cannot hold the candidate's digits (by the region's own
  metadata: its general number pattern, after the national prefix or country code) are
  skipped; a `+`/`00` number is region-independent and is tried once.
- Results are cached per candidate (dates and ranges repeat a lot in a corpus).

Rules on top of the matcher, each for a way numbers are written that it does not take:
- A formatted number glued to the word before it (`is415-555-0132`, `Tel.+49 30 ...`) is
  judged without that word; an unformatted digit run glued to letters (`ID12345678`) is not
  a phone.
- A country code written without `+` (`91-415-555-0132`, `44 20 7946 0958`): when no region
  reads the whole candidate as one number, it is tried with a `+` in front.
- When one match covers the whole candidate it wins over partial matches from other regions,
  so `91-415-555-0132` is never redacted as `91-<PHONE>`; a match needs 7 digits.

And what a number is not, whatever some region's plan would allow (with VALID leniency and many
regions, most 8-11 digit strings are a valid number somewhere):
- dates written with separators (`2024-03-05`, `12.03.2024`), year ranges (`1990-2000`), the
  US social security number shape (`078-05-1120`), and decimals (`1.23`, `20240305.1`);
- the tail of a longer number or code (`1,234,567`, `A-2024-000123`, the digits after an
  IBAN-shaped `NL44 OXLF`), and unformatted digit runs longer than 12 digits;
- a number right after an identifier's label: ISBN, ISSN, DOI, ORCID, SKU, SSN, EIN, PO, ID,
  Order, Invoice, Ticket, Ref, No., `#` and the like.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache

from llmtools.errors import UsageError, require

# The regions tried for numbers written without a country code, by default: the G20 economies
# and the rest of the 40 countries with the most Internet users, plus the EU/EFTA members with
# the largest populations, so national formats of most of the world's text are read. A number
# written with `+` or `00` + country code is found whatever this list holds.
DEFAULT_REGIONS = (
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "PL", "PT", "IE", "GR", "CZ", "RO",
    "HU", "DK", "FI", "NO", "UA", "RU", "TR", "IL", "SA", "AE", "EG", "NG", "ZA", "IN", "PK", "BD", "CN",
    "JP", "KR", "ID", "PH", "VN", "TH", "MY", "SG", "HK", "TW", "AU", "NZ", "BR", "MX", "AR", "CO", "CL",
    "PE", "CA",
)
LENIENCIES = ("possible", "valid", "strict-grouping", "exact-grouping")
DEFAULT_LENIENCY = "valid"

# At least 7 digits, written as numbers are: an optional `+`, brackets around a group, single
# separators (`-`, `.`, `/`, a space), and the `(0)` some countries put after the code.
# (It starts with a character class, `(+` or `+(` or `(` or `+` then a digit, so that re can
# skip to candidate characters: 7-8x faster than an optional group first.)
_CANDIDATE = re.compile(r"[(+0-9][(+]?[0-9]?(?:(?:\) ?|[ .\-/]\(?|[ .\-/]?\(0\)[ .\-/]?|\()?[0-9])*")
_DIGIT = re.compile(r"[0-9]")
_SEPARATED = re.compile(r"[0-9][ .\-/()][0-9(]|\)")
# Written like a date (year first or last, one kind of separator), a range of years or a US
# social security number: never a phone here.
_DATE = re.compile(
    r"(?:19|20)[0-9]{2}([-./])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12][0-9]|3[01])"
    r"|(?:0?[1-9]|[12][0-9]|3[01])([-./])(?:0?[1-9]|[12][0-9]|3[01])\2(?:19|20)?[0-9]{2}"
    r"|(?:1[5-9]|20)[0-9]{2} ?[-/] ?(?:1[5-9]|20)[0-9]{2}"
    r"|[0-9]{3}-[0-9]{2}-[0-9]{4}"
)
# A decimal point: a one-digit group beside a dot (`1.23 4.56`, `20240305.1`).
_DECIMAL = re.compile(r"(?<![0-9])[0-9]\.|\.[0-9](?![0-9])")
# What comes right before the number says it is another identifier.
_ID_BEFORE = re.compile(
    r"(?:\b(?:ISBN(?:-1[03])?|ISSN|DOI|PMID|arXiv|ORCID|EAN|UPC|GTIN|SKU|ASIN|SSN|EIN|TIN|VAT|PO|ID|Order|Invoice"
    r"|Ticket|Ref|Case|Serial)|#|\bNo\.?|\bNr\.?)[: ]*$", re.IGNORECASE
)
# ... or that it continues an account-like code (an IBAN that did not pass its checks).
_CODE_BEFORE = re.compile(r"\b[A-Za-z]{2}[0-9]{2}(?:[ -][A-Za-z0-9]{4})*[ -]$")


def parse_phone_regions(spec: str | None) -> tuple[str, ...]:
    """`US,GB,de` -> ('US', 'GB', 'DE'); None -> DEFAULT_REGIONS; `all` -> every region phonenumbers knows."""
    if spec is None:
        return DEFAULT_REGIONS
    phonenumbers = require("phonenumbers", purpose="phone redaction")
    known = phonenumbers.SUPPORTED_REGIONS
    names = [p.strip().upper() for p in spec.split(",") if p.strip()]
    if names == ["ALL"]:
        return tuple(sorted(known))
    if names[:1] == ["DEFAULT"]:
        names = list(DEFAULT_REGIONS) + names[1:]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"--phone-regions: unknown region(s) {', '.join(unknown) or '(none given)'} "
                         f"(ISO 3166 alpha-2 codes such as US, GB, DE, or `all`)")
    return tuple(dict.fromkeys(names))


class PhoneFinder:
    """Spans of phone numbers in a text, judged by phonenumbers.PhoneNumberMatcher."""

    def __init__(self, regions: tuple[str, ...] = DEFAULT_REGIONS, leniency: str = DEFAULT_LENIENCY):
        if leniency not in LENIENCIES:
            raise UsageError(f"--phone-leniency: '{leniency}' is not one of {', '.join(LENIENCIES)}")
        if importlib.util.find_spec("phonenumbers") is None:
            require("phonenumbers", purpose="phone redaction")  # raises MissingDependency (exit 4)
        self.regions = tuple(regions)
        self.leniency = leniency
        self._pn = None  # phonenumbers and the regions' metadata load with the first candidate
        self.find_in = lru_cache(maxsize=4096)(self._find_in)

    def _load(self) -> None:
        pn = require("phonenumbers", purpose="phone redaction")
        self._leniency = getattr(pn.Leniency, self.leniency.upper().replace("-", "_"))
        self._plans = [(r, *_plan(pn, r)) for r in self.regions]
        self._pn = pn

    def __call__(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for m in _CANDIDATE.finditer(text):
            start, end = m.span()
            cand = m.group()
            while cand[:1] == "(" and cand.count("(") > cand.count(")"):
                start, cand = start + 1, cand[1:]  # `(040 1234567)`: that bracket is the text's
            if not cand or cand.startswith("++"):
                continue
            digits = sum(1 for _ in _DIGIT.finditer(cand))
            if digits < 7 or (digits > 12 and cand.isdigit()) or _DATE.fullmatch(cand) or (
                    cand[0] != "+" and _DECIMAL.search(cand)):
                continue
            if end < len(text) and (text[end].isalnum() or text[end] == "_" or (
                    text[end] in ".," and text[end + 1:end + 2].isdigit())):
                continue  # glued to what follows (`415-555-0132abc`, `12.345.678,90`)
            if start > 1 and text[start - 1] in ".," and text[start - 2].isdigit():
                continue  # the tail of a longer number (`1,234,567`)
            if start > 1 and cand[0] != "+" and text[start - 1] in "-/." and text[start - 2].isalnum():
                continue  # the tail of a code (`A-2024-000123`)
            head = text[max(0, start - 40):start]
            if _ID_BEFORE.search(head) or _CODE_BEFORE.search(head):
                continue
            if start and (text[start - 1].isalnum() or text[start - 1] == "_") and not (
                    cand[0] == "+" or _SEPARATED.search(cand)):
                continue  # an unformatted digit run inside a word or code
            before = text[start - 1] if start and not text[start - 1].isalnum() else " "
            after = text[end] if end < len(text) else " "
            for s, e in self.find_in(before + cand + after):
                if sum(1 for _ in _DIGIT.finditer(cand, s - 1, e - 1)) >= 7:
                    spans.append((start + s - 1, start + e - 1))
        return spans

    def _find_in(self, window: str) -> tuple[tuple[int, int], ...]:
        """Matches in `window` (one candidate with one character of context on each side)."""
        if self._pn is None:
            self._load()
        pn = self._pn
        cand_start, cand_end = 1, len(window) - 1
        found: dict[tuple[int, int], None] = {}
        regions = self._regions_for(window[cand_start:cand_end])
        for region in regions:
            for m in pn.PhoneNumberMatcher(window, region, leniency=self._leniency):
                s, e = max(m.start, cand_start), min(m.end, cand_end)
                if s <= cand_start and e >= cand_end:
                    return ((s, e),)
                found[(s, e)] = None
        cand = window[cand_start:cand_end]
        if cand[0].isdigit() and cand[0] != "0" and _SEPARATED.search(cand):
            # a country code written without `+`: the whole candidate, read as +CC ...
            for m in pn.PhoneNumberMatcher(window[0] + "+" + cand + window[-1], "ZZ", leniency=self._leniency):
                if m.start <= 1 and m.end >= len(cand) + 2:
                    return ((cand_start, cand_end),)
        return tuple(_outermost(found))

    def _regions_for(self, cand: str) -> list[str]:
        digits = "".join(ch for ch in cand if "0" <= ch <= "9")
        if cand.startswith("+"):
            return [self.regions[0] if self.regions else "US"]  # +CC: the region is not used
        out = []
        if digits.startswith("00"):
            out.append("GB")  # a region whose exit code is 00, as most of the world's
        elif digits.startswith("011"):
            out.append("US")  # the NANP exit code
        for region, code, prefix, general in self._plans:
            if general is None:
                out.append(region)
                continue
            for nsn in _national_numbers(digits, code, prefix):
                if general.fullmatch(nsn):
                    out.append(region)
                    break
        return list(dict.fromkeys(out))


def _plan(pn, region: str) -> tuple[str, re.Pattern | None, re.Pattern | None]:
    """The region's country code, national prefix and general number pattern, from its metadata.

    The pattern is None (always try the region) where the national prefix rewrites the number
    (a transform rule, as in AR, BR, MX), since then the digits written are not its NSN."""
    md = pn.PhoneMetadata.metadata_for_region(region)
    prefix = md.national_prefix_for_parsing or md.national_prefix
    general = md.general_desc.national_number_pattern if md.general_desc else None
    if md.national_prefix_transform_rule or not general:
        return str(md.country_code), None, None
    return str(md.country_code), re.compile(prefix) if prefix else None, re.compile(general)


def _national_numbers(digits: str, code: str, prefix: re.Pattern | None):
    """The national significant numbers `digits` could stand for in a region (a superset)."""
    yield digits
    if prefix is not None:
        m = prefix.match(digits)
        if m and m.end():
            yield digits[m.end():]
    if digits.startswith(code):
        yield digits[len(code):]
        rest = digits[len(code):]
        if prefix is not None:
            m = prefix.match(rest)
            if m and m.end():
                yield rest[m.end():]


def _outermost(spans) -> list[tuple[int, int]]:
    """Drop spans inside others; keep the rest in order."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans, key=lambda x: (x[0], -x[1])):
        if out and s < out[-1][1]:
            continue  # inside the previous span, or overlapping it: keep the first
        out.append((s, e))
    return out
