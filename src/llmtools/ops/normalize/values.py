"""Value unification: dates to ISO 8601, currency amounts to `<amount> <ISO 4217 code>`, and
thousands separators out of numbers.

Every rule leaves text it cannot read unambiguously as it is: a wrong rewrite is worse than
none. Each canonical output is a fixed point of its own rule, so running twice changes nothing.
"""

from __future__ import annotations

import calendar
import re

# --------------------------------------------------------------------------- dates

_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
    "oct": 10, "nov": 11, "dec": 12,
}
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)"
_MONTH_CAP = _MONTH  # compiled without IGNORECASE below for the month-year form
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1\d{3}|2\d{3})"
_YMD_NUM = r"(?P<y1>[12]\d{3})(?P<s1>[-/.])(?P<m1>0?[1-9]|1[0-2])(?P=s1)(?P<d1>0?[1-9]|[12]\d|3[01])"
_AMB_NUM = r"(?P<a>\d{1,2})(?P<s2>[-/.])(?P<b>\d{1,2})(?P=s2)(?P<y2>[12]\d{3})"

_DATE = re.compile(
    r"(?<![\w/.-])(?:"
    rf"(?P<mdy_m>{_MONTH})\.?[ ](?P<mdy_d>{_DAY}),?[ ](?P<mdy_y>{_YEAR})"
    rf"|(?P<dmy_d>{_DAY})(?:[ ]of)?(?P<sep>[ -])(?P<dmy_m>{_MONTH})\.?(?:,?[ ]|-)(?P<dmy_y>{_YEAR})"
    rf"|{_YMD_NUM}"
    rf"|{_AMB_NUM}"
    r")(?![\w/]|[.-]\d)",
    re.IGNORECASE,
)
# "March 2024" (month and year only): capitalized month names, because "may 2024" in running
# text is more often the verb.
_MONTH_YEAR = re.compile(rf"(?<![\w/.-])(?P<m>{_MONTH_CAP})\.?,?[ ](?P<y>{_YEAR})(?![\w/]|[.-]\d)")
_DIGIT_OR_MONTH = re.compile(rf"\d|{_MONTH}", re.IGNORECASE)

DATE_ORDERS = ("mdy", "dmy")


def _valid(y: int, m: int, d: int) -> bool:
    return 1 <= m <= 12 and 1 <= d <= calendar.monthrange(y, m)[1]


def _iso(y: int, m: int, d: int) -> str:
    return f"{y:04d}-{m:02d}-{d:02d}"


def _day(s: str) -> int:
    return int(s.rstrip("stndrhSTNDRH"))


class DateRewriter:
    """Rewrite dates to ISO 8601 (YYYY-MM-DD, or YYYY-MM for a month and year).

    Numeric dates with `/` or `-` follow `order` (mdy or dmy); when that reading is impossible
    (13/05/2024 under mdy) the other one is used. Dotted dates (5.3.2024) are always day first,
    the only convention that writes them. Two-digit years are left alone.
    """

    def __init__(self, order: str = "mdy"):
        if order not in DATE_ORDERS:
            raise ValueError(f"date order must be one of {', '.join(DATE_ORDERS)}")
        self.order = order

    def _sub(self, m: re.Match) -> str:
        g = m.groupdict()
        try:
            if g["mdy_m"]:
                y, mo, d = int(g["mdy_y"]), _MONTHS[g["mdy_m"].lower()], _day(g["mdy_d"])
            elif g["dmy_m"]:
                y, mo, d = int(g["dmy_y"]), _MONTHS[g["dmy_m"].lower()], _day(g["dmy_d"])
            elif g["y1"]:
                y, mo, d = int(g["y1"]), int(g["m1"]), int(g["d1"])
            else:
                a, b, y = int(g["a"]), int(g["b"]), int(g["y2"])
                day_first = g["s2"] == "." or self.order == "dmy"
                d, mo = (a, b) if day_first else (b, a)
                if not _valid(y, mo, d) and g["s2"] != ".":
                    d, mo = mo, d
        except (KeyError, ValueError):
            return m.group(0)
        return _iso(y, mo, d) if _valid(y, mo, d) else m.group(0)

    def __call__(self, text: str) -> str:
        if not _DIGIT_OR_MONTH.search(text):
            return text
        out = _DATE.sub(self._sub, text)
        out = _MONTH_YEAR.sub(lambda m: f"{int(m.group('y')):04d}-{_MONTHS[m.group('m').lower()]:02d}", out)
        return text if out == text else out


# --------------------------------------------------------------------------- currency

CURRENCY_SYMBOLS = {
    "US$": "USD", "CA$": "CAD", "C$": "CAD", "AU$": "AUD", "A$": "AUD", "NZ$": "NZD",
    "HK$": "HKD", "S$": "SGD", "R$": "BRL", "MX$": "MXN", "$": "USD",
    "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "₩": "KRW", "₽": "RUB", "₺": "TRY",
    "₪": "ILS", "₫": "VND", "₱": "PHP", "₴": "UAH", "฿": "THB", "₦": "NGN", "₡": "CRC",
}
ISO_CODES = (
    "USD EUR GBP JPY CNY CHF CAD AUD NZD INR KRW RUB BRL MXN SEK NOK DKK PLN CZK HUF TRY ZAR "
    "SGD HKD ILS THB VND PHP IDR MYR AED SAR UAH NGN EGP ARS CLP COP PEN RON BGN ISK KES TWD"
).split()
_SYM = "|".join(re.escape(s) for s in sorted(CURRENCY_SYMBOLS, key=len, reverse=True))
_CODE = "|".join(ISO_CODES)
# An amount: grouped (1,200.50 / 1.200,50 / 1 200,50 with NBSP or thin space / 1'200) or plain.
_AMOUNT = r"\d{1,3}(?:(?P<g>[,.'\u00a0\u202f\u2009])\d{3})(?:(?P=g)\d{3})*(?:[.,]\d{1,3})?|\d+(?:[.,]\d{1,3})?"
_SCALE = r"(?:\s?(?:million|billion|trillion|thousand|mn|bn|[kKmMbB])\b)?"

_CURRENCY = re.compile(
    r"(?<![\w$€£¥₹₩₽₺₪₫₱₴฿₦₡])(?:"
    rf"(?P<neg1>-)?(?P<sym>{_SYM})\s?(?P<amt1>{_AMOUNT.replace('(?P<g>', '(?P<g1>').replace('(?P=g)', '(?P=g1)')})(?P<sc1>{_SCALE})"
    rf"|(?P<neg2>-)?(?P<code1>{_CODE})\s?(?P<amt2>{_AMOUNT.replace('(?P<g>', '(?P<g2>').replace('(?P=g)', '(?P=g2)')})(?P<sc2>{_SCALE})"
    rf"|(?P<neg3>-)?(?P<amt3>{_AMOUNT.replace('(?P<g>', '(?P<g3>').replace('(?P=g)', '(?P=g3)')})(?P<sc3>{_SCALE})\s?(?:(?P<sym2>{_SYM})|(?P<code2>{_CODE})\b)"
    r")(?![\w]|[.,]\d)"
)
_CURRENCY_HINT = re.compile(rf"[$€£¥₹₩₽₺₪₫₱₴฿₦₡]|\b(?:{_CODE})\b")


def canonical_amount(raw: str) -> str:
    """`1,200.50` -> `1200.50`, `1.200,50` -> `1200.50`, `5,5` -> `5.5`; decimals kept as written."""
    raw = raw.replace("\u00a0", "").replace("\u202f", "").replace("\u2009", "").replace("'", "")
    if "," in raw and "." in raw:
        dec = "," if raw.rfind(",") > raw.rfind(".") else "."
        grp = "." if dec == "," else ","
        raw = raw.replace(grp, "").replace(dec, ".")
    elif "," in raw or "." in raw:
        mark = "," if "," in raw else "."
        head, _, tail = raw.rpartition(mark)
        if raw.count(mark) > 1 or len(tail) == 3:
            raw = raw.replace(mark, "")  # a grouping mark: 1,200 / 1.200 / 1,000,000
        else:
            raw = f"{head}.{tail}"  # a decimal mark: 5,50 / 5.5
    return raw


def _currency_sub(m: re.Match) -> str:
    g = m.groupdict()
    if g["sym"] is not None:
        code, amt, scale, neg = CURRENCY_SYMBOLS[g["sym"]], g["amt1"], g["sc1"], g["neg1"]
    elif g["code1"] is not None:
        code, amt, scale, neg = g["code1"], g["amt2"], g["sc2"], g["neg2"]
    else:
        code = CURRENCY_SYMBOLS[g["sym2"]] if g["sym2"] is not None else g["code2"]
        amt, scale, neg = g["amt3"], g["sc3"], g["neg3"]
    scale = scale.strip()
    if scale:
        # words keep a space (5 million), abbreviations stay attached (5k, 3.5bn)
        scale = f" {scale}" if len(scale) > 2 else scale
    return f"{neg or ''}{canonical_amount(amt)}{scale} {code}"


def unify_currency(text: str) -> str:
    """`$1,200.50` -> `1200.50 USD`, `€5` -> `5 EUR`, `USD 10` -> `10 USD`, `5 €` -> `5 EUR`."""
    if not _CURRENCY_HINT.search(text):
        return text
    out = _CURRENCY.sub(_currency_sub, text)
    return text if out == text else out


# --------------------------------------------------------------------------- numbers

_GROUPED = re.compile(
    r"(?<![\w,'\u00a0\u202f\u2009])(?<!\d\.)(?:"
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?"  # 1,234,567.89
    r"|\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?"  # 1.234.567,89 (two or more dot groups: unambiguous)
    r"|\d{1,3}(?:'\d{3})+(?:\.\d+)?"  # 1'234'567 (Swiss)
    r"|\d{1,3}(?:[\u00a0\u202f\u2009]\d{3})+(?:[.,]\d+)?"  # 1 234 567 (NBSP / thin spaces)
    r")(?![\w]|[.,'\u00a0\u202f\u2009]\d)"
)
_HAS_GROUP = re.compile(r"\d[,.'\u00a0\u202f\u2009]\d{3}")


def _ungroup(m: re.Match) -> str:
    s = m.group(0)
    if "," in s and "." in s and s.rfind(".") < s.rfind(","):
        return s.replace(".", "")  # 1.234.567,89 -> 1234567,89: the decimal mark stays
    if s.count(".") > 1:
        return s.replace(".", "")
    return s.replace(",", "").replace("'", "").replace("\u00a0", "").replace("\u202f", "").replace("\u2009", "")


def remove_thousands(text: str) -> str:
    """Remove thousands separators: `1,234,567` -> `1234567`; decimal marks are kept."""
    if not _HAS_GROUP.search(text):
        return text
    out = _GROUPED.sub(_ungroup, text)
    return text if out == text else out
