"""normalize: clean, normalize, filter and redact the text field of JSONL records.

Text steps run in one fixed order (STEP_ORDER), whatever order they are listed in, so a set
of steps always means the same thing; then the filters run on the normalized text. Only the
text field changes; every other field keeps its value and place.

    >>> list(normalize([{"text": "  “Hi”\u200b  there  "}]))
    [{'text': '"Hi" there'}]
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any, Callable, Iterable, Iterator

from llmtools.io import get_field, set_field, split_path
from llmtools.ops import normalize_text as T

# The opt-in steps and filters (normalize_pii, normalize_values, normalize_filters) are
# imported only when chosen: start-up time matters for a command run once per small file.
PII_KINDS = ("email", "ipv6", "ipv4", "iban", "credit_card", "phone")  # = normalize_pii.PII_KINDS

# name -> what it does. The order of this dict is the order the steps run in.
STEPS: dict[str, str] = {
    "mojibake": "repair text decoded with the wrong codec (ftfy; only its encoding fixes)",
    "controls": "remove control and invisible characters (zero-width, bidi, BOM, ANSI escapes); keep ZWJ/ZWNJ",
    "nfc": "Unicode NFC (canonical composition)",
    "nfkc": "Unicode NFKC (also folds compatibility forms: ﬁ->fi, ２->2, ①->1); replaces nfc",
    "quotes": "curly and low quotes -> ' and \"",
    "dashes": "hyphens, en dash, minus -> '-'; horizontal bar, 2/3-em dashes -> '—'",
    "pii": "redact emails, phones, IPv4/IPv6, Luhn-valid cards, mod-97-valid IBANs as <EMAIL> ...",
    "dates": "dates -> ISO 8601 YYYY-MM-DD (YYYY-MM for a month and year); see --date-order",
    "currency": "currency amounts -> '<amount> <ISO 4217 code>' ($1,200.50 -> 1200.50 USD)",
    "numbers": "remove thousands separators (1,234,567 -> 1234567)",
    "lowercase": "lowercase (pii placeholders stay upper case)",
    "punctuation": "remove punctuation and symbols (keeps 3.14, 1,000 and placeholders)",
    "whitespace": "collapse spaces, strip lines and text; line breaks per --newlines",
}
STEP_ORDER: tuple[str, ...] = tuple(STEPS)
DEFAULT_STEPS: tuple[str, ...] = ("mojibake", "controls", "nfc", "quotes", "dashes", "whitespace")


class StepSpecError(ValueError):
    pass


def parse_steps(specs: str | Iterable[str] | None) -> tuple[str, ...]:
    """Resolve `--steps` values into the set of steps to run, in STEP_ORDER.

    A spec is comma-separated tokens, read left to right:
      `+name` adds a step, `-name` removes one, a bare `name` adds one;
      `default` adds the default steps, `none` clears everything so far, `all` adds every step.
    The starting set is the defaults when the first token is `+name`, `-name` or `default`,
    and empty otherwise: `--steps nfc,whitespace` runs exactly those two, while
    `--steps +lowercase,-mojibake` changes the defaults. nfc and nfkc exclude each other: the
    one added last wins.
    """
    if specs is None:
        return DEFAULT_STEPS
    if isinstance(specs, str):
        specs = [specs]
    tokens = [t.strip() for spec in specs for t in spec.split(",") if t.strip()]
    if not tokens:
        return DEFAULT_STEPS
    first = tokens[0]
    chosen: list[str] = list(DEFAULT_STEPS) if first[0] in "+-" or first == "default" else []
    for tok in tokens:
        sign, name = (tok[0], tok[1:].strip()) if tok[0] in "+-" else ("+", tok)
        name = name.lower()
        if name in ("default", "defaults"):
            group = list(DEFAULT_STEPS)
        elif name == "all":
            group = [s for s in STEP_ORDER if s != "nfc"]
        elif name == "none":
            if sign == "-":
                raise StepSpecError("'-none' means nothing; use 'none' to start from no steps")
            chosen = []
            continue
        elif name in STEPS:
            group = [name]
        else:
            import difflib

            close = difflib.get_close_matches(name, list(STEPS) + ["default", "none", "all"], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise StepSpecError(f"unknown step '{name}'{hint}; steps: {', '.join(STEP_ORDER)}")
        for step in group:
            if sign == "-":
                if step in chosen:
                    chosen.remove(step)
                continue
            if step == "nfkc" and "nfc" in chosen:
                chosen.remove("nfc")
            if step == "nfc" and "nfkc" in chosen:
                chosen.remove("nfkc")
            if step not in chosen:
                chosen.append(step)
    return tuple(s for s in STEP_ORDER if s in chosen)


# --------------------------------------------------------------------------- the text pipeline


class TextNormalizer:
    """The chosen steps as one callable: `text -> (new_text, names of steps that changed it)`."""

    def __init__(
        self,
        steps: Iterable[str] = DEFAULT_STEPS,
        *,
        newlines: str = "keep",
        date_order: str = "mdy",
        pii_kinds: Iterable[str] = PII_KINDS,
    ):
        names = list(steps)
        # Always the fixed run order, whatever order the steps were given in; () is no steps.
        self.steps = parse_steps(names) if names else ()
        if newlines not in T.NEWLINE_MODES:
            raise StepSpecError(f"newlines must be one of {', '.join(T.NEWLINE_MODES)}")
        form = "NFKC" if "nfkc" in self.steps else "NFC" if "nfc" in self.steps else None
        self.redactor = None
        impl: dict[str, Callable[[str], str]] = {}
        if "pii" in self.steps:
            from llmtools.ops.normalize_pii import Redactor

            self.redactor = impl["pii"] = Redactor(tuple(pii_kinds))
        if {"dates", "currency", "numbers"} & set(self.steps):
            from llmtools.ops import normalize_values as V

            impl["dates"] = V.DateRewriter(date_order)
            impl["currency"] = V.unify_currency
            impl["numbers"] = V.remove_thousands
        keep_placeholders = "pii" in self.steps

        def lowercase(text: str) -> str:
            out = T.lowercase(text, form or "NFC") if form else text.lower()
            if keep_placeholders and out is not text and "<" in out:
                out = _PLACEHOLDER_LOWER.sub(lambda m: m.group(0).upper(), out)
            return text if out == text else out

        def punctuation(text: str) -> str:
            out = T.remove_punctuation(text)
            if form and out is not text and not out.isascii() and not unicodedata.is_normalized(form, out):
                out = unicodedata.normalize(form, out)  # a removed mark may sit between base and accent
            return out

        def whitespace(text: str) -> str:
            return T.collapse_whitespace(text, newlines)

        impl.update(
            mojibake=T.fix_mojibake,
            controls=T.remove_controls,
            nfc=T.nfc,
            nfkc=T.nfkc,
            quotes=T.unify_quotes,
            dashes=T.unify_dashes,
            lowercase=lowercase,
            punctuation=punctuation,
            whitespace=T.collapse_whitespace if newlines == "keep" else whitespace,
        )
        self.chain: list[tuple[str, Callable[[str], str]]] = [(s, impl[s]) for s in self.steps]
        # mojibake, nfc, nfkc, quotes and dashes never change ASCII text, and most text is ASCII.
        self.ascii_chain = [(s, f) for s, f in self.chain if s not in _NOOP_ON_ASCII]
        self.mojibake = "mojibake" in self.steps
        self.opt_in = bool(set(self.steps) - set(DEFAULT_STEPS))
        # With only these steps (the defaults, or some of them), a text is first checked, not
        # passed through every step: an ASCII text in one go (T.ascii_unchanged), any other by
        # each step's cheap "anything to do?" test, which all share one profile of the text.
        # The chain then starts at the first step that may change the text, if any.
        self.newlines = newlines
        self.quick = set(self.steps) <= _QUICK_STEPS
        possible: dict[str, Callable[[str], bool]] = {
            "mojibake": T.mojibake_possible,
            "controls": T.controls_possible,
            "nfc": T.nfc_possible,
            "nfkc": T.nfkc_possible,
            "quotes": T.quotes_possible,
            "dashes": T.dashes_possible,
            "whitespace": lambda text: T.whitespace_possible(text, newlines),
        }
        self.checks = [(i, possible[s]) for i, s in enumerate(self.steps)] if self.quick else []
        # With the C helper, one scan of the text replaces those checks, and texts that need
        # only the plain controls, quotes, dashes and whitespace work (most of those that need
        # any) are rewritten by it in one go; the rest start the chain as above.
        self.fast = fast = T.SPEEDUPS
        if fast is None or not self.quick or "nfkc" in self.steps or ("whitespace" in self.steps and newlines != "keep"):
            self.fast = None
        else:
            bits = {
                "mojibake": fast.B_MOJI,
                "controls": fast.B_CTRL | fast.B_CTRL_X,
                "nfc": fast.B_NFC,
                "quotes": fast.B_QUOTE,
                "dashes": fast.B_DASH,
                "whitespace": fast.B_WS | fast.B_WS_X,
            }
            self.step_bits = [(i, bits[s]) for i, s in enumerate(self.steps)]
            self.relevant = 0
            for s in self.steps:
                self.relevant |= bits[s]
            # What rewrite() does: the plain part of each of its four steps that is on.
            self.simple = self.relevant & (fast.B_CTRL | fast.B_QUOTE | fast.B_DASH | fast.B_WS)
            self.ctrl_bits = fast.B_CTRL | fast.B_CTRL_X
            self.names = {
                ch: tuple(s for s, b in (("controls", fast.B_CTRL), ("quotes", fast.B_QUOTE),
                                         ("dashes", fast.B_DASH), ("whitespace", fast.B_WS)) if ch & b)
                for ch in range(self.simple + 1) if not ch & ~self.simple
            }

    def scanned(self, text: str, bits: int) -> tuple[str, list[str]]:
        """__call__ for a text the C helper scanned (`bits` = its scan); only when self.fast."""
        fast = self.fast
        bits &= self.relevant
        if not bits:
            return text, []
        changed: list[str] = []
        moji = bits & fast.B_MOJI
        if moji:  # ftfy first, as in the chain; the rest as for any text
            new = T.fix_mojibake(text)
            if new is not text:
                changed.append("mojibake")
                text, bits = new, fast.scan(new) & self.relevant
            bits &= ~fast.B_MOJI
        if bits:
            if bits & fast.B_NFC and not bits & self.ctrl_bits and unicodedata.is_normalized("NFC", text):
                bits &= ~fast.B_NFC  # (a control removed first could change what NFC sees)
            if not bits & ~self.simple:
                text, ch = fast.rewrite(text, bits, self.simple)
                if ch:
                    changed += self.names[ch]
            else:
                for i, b in self.step_bits:
                    if bits & b:
                        break
                text, more = self._chain(text, self.chain[i:])
                changed += more
        if not changed:
            return text, changed
        # The chain's last check (see _settle): mojibake exposed by a later step. Only a text
        # that could hold mojibake, or one that lost a control, can have any afterwards.
        if self.mojibake and changed != ["mojibake"] and (moji or "controls" in changed):
            if fast.scan(text) & fast.B_MOJI:
                return self._settle(text, changed)
        return text, changed

    def _pass(self, text: str) -> tuple[str, list[str]]:
        """Every step once (ASCII text skips those that never change it)."""
        return self._chain(text, self.ascii_chain if text.isascii() else self.chain)

    def __call__(self, text: str) -> tuple[str, list[str]]:
        if self.fast is not None:
            return self.scanned(text, self.fast.scan(text))
        if not self.quick:
            chain = self.ascii_chain if text.isascii() else self.chain
        elif text.isascii():
            chain = self.ascii_chain
            if chain and T.ascii_unchanged(text, self.newlines):
                return text, []
        else:
            for i, possible in self.checks:
                if possible(text):
                    chain = self.chain[i:]
                    break
            else:
                return text, []
        return self._run(text, chain)

    def _run(self, text: str, chain: list[tuple[str, Callable[[str], str]]]) -> tuple[str, list[str]]:
        text, changed = self._chain(text, chain)
        if not changed:
            return text, changed
        return self._settle(text, changed)

    @staticmethod
    def _chain(text: str, chain: list[tuple[str, Callable[[str], str]]]) -> tuple[str, list[str]]:
        changed: list[str] = []
        for name, fn in chain:
            new = fn(text)
            if new is not text:
                changed.append(name)
                text = new
        return text, changed

    def _settle(self, text: str, changed: list[str]) -> tuple[str, list[str]]:
        # A later step can expose work for an earlier one: a removed zero-width character
        # joins the halves of a broken UTF-8 sequence for ftfy, punctuation removal frees a
        # number from its neighbours. Passes repeat until nothing changes, so that
        # normalize(normalize(x)) == normalize(x). With the default steps only mojibake can be
        # exposed, and a cheap check decides whether another pass is needed at all.
        for _ in range(4):
            if not self.opt_in and not (self.mojibake and changed != ["mojibake"] and T.mojibake_suspected(text)):
                break
            text, again = self._pass(text)
            if not again:
                break
            done = set(changed) | set(again)
            changed = [s for s in self.steps if s in done]
        return text, changed


_NOOP_ON_ASCII = frozenset({"mojibake", "nfc", "nfkc", "quotes", "dashes"})
_QUICK_STEPS = _NOOP_ON_ASCII | {"controls", "whitespace"}
_PLACEHOLDER_LOWER = re.compile(r"<(?:email|phone|ipv4|ipv6|credit_card|iban)>")


def normalize_text(text: str, steps: Iterable[str] = DEFAULT_STEPS, **options: Any) -> str:
    """Normalize one string (convenience wrapper; build a TextNormalizer for many)."""
    return TextNormalizer(steps, **options)(text)[0]


# --------------------------------------------------------------------------- filters


class Filters:
    """Which records to drop, judged on the normalized text. None/empty means: no such filter.

    `quality` is a normalize_filters.QualityConfig (or None); `langs` ISO 639-1 codes.
    """

    def __init__(
        self,
        drop_empty: bool = True,
        min_chars: int | None = None,
        max_chars: int | None = None,
        min_words: int | None = None,
        max_words: int | None = None,
        include: Iterable[re.Pattern] = (),
        exclude: Iterable[re.Pattern] = (),
        langs: Iterable[str] | None = None,
        lang_threshold: float = 0.5,
        quality: Any = None,
    ):
        self.drop_empty = drop_empty
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_words, self.max_words = min_words, max_words
        self.include, self.exclude = list(include), list(exclude)
        self.langs = frozenset(langs) if langs else None
        self.lang_threshold = lang_threshold
        self.quality = quality
        self._quality_check = self._language_of = None
        if quality is not None or self.langs:
            from llmtools.ops import normalize_filters as F

            self._quality_check, self._language_of = F.quality_check, F.language_of

    @property
    def _beyond_empty(self) -> bool:
        """Any filter other than the empty-text one is on."""
        return bool(
            self.min_chars is not None
            or self.max_chars is not None
            or self.min_words is not None
            or self.max_words is not None
            or self.include
            or self.exclude
            or self.langs
            or self.quality
        )

    @property
    def only_empty(self) -> bool:
        """True when the only filter is the empty-text one (the default): the loop inlines it."""
        return self.drop_empty and not self._beyond_empty

    @property
    def active(self) -> bool:
        return bool(self.drop_empty or self._beyond_empty)

    def check(self, text: str, info: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
        """None to keep; else (reason, detail). Cheap filters first, language id last."""
        if self.drop_empty and (not text or text.isspace()):
            return "empty", {}
        n = len(text)
        if self.min_chars is not None and n < self.min_chars:
            return "min-chars", {"value": n, "limit": self.min_chars}
        if self.max_chars is not None and n > self.max_chars:
            return "max-chars", {"value": n, "limit": self.max_chars}
        words = None
        if self.min_words is not None or self.max_words is not None or self.quality is not None:
            words = text.split()
            nw = len(words)
            if self.min_words is not None and nw < self.min_words:
                return "min-words", {"value": nw, "limit": self.min_words}
            if self.max_words is not None and nw > self.max_words:
                return "max-words", {"value": nw, "limit": self.max_words}
        if self.include and not any(p.search(text) for p in self.include):
            return "include", {}
        for p in self.exclude:
            if p.search(text):
                return "exclude", {"pattern": p.pattern}
        if self.quality is not None and words is not None:
            hit = self._quality_check(text, words, self.quality)  # type: ignore[misc]
            if hit is not None:
                return hit
        if self.langs:
            lang, score = self._language_of(text)  # type: ignore[misc]
            if info is not None:
                info["lang"] = lang
                info["lang_score"] = round(score, 4)
            if lang not in self.langs or score < self.lang_threshold:
                return "lang", {"lang": lang, "score": round(score, 4)}
        return None


# --------------------------------------------------------------------------- records


class Stats:
    """Counters for the summary: per-step changes, PII found, records changed."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.pii: Counter[str] = Counter()
        self.changed = 0


def normalize(
    records: Iterable[dict],
    *,
    field: str = "text",
    steps: Iterable[str] = DEFAULT_STEPS,
    filters: Filters | None = None,
    explain: bool = False,
    on_drop: Callable[..., None] | None = None,
    stats: Stats | None = None,
    newlines: str = "keep",
    date_order: str = "mdy",
    pii_kinds: Iterable[str] = PII_KINDS,
) -> Iterator[dict]:
    """Yield each record with its text field normalized, or drop it through `on_drop`.

    Records whose field is missing or not a string (they only get here under --on-error keep)
    pass through unchanged. A dropped record is handed to `on_drop(record, reason, **detail)`
    unchanged, as it came in.
    """
    norm = TextNormalizer(steps, newlines=newlines, date_order=date_order, pii_kinds=pii_kinds)
    filters = Filters() if filters is None else filters
    check = filters.check if filters.active else None
    empty_only = filters.only_empty and not explain
    stats = Stats() if stats is None else stats
    keys = split_path(field)
    flat = keys[0] if len(keys) == 1 else None
    redactor = norm.redactor
    step_counts = stats.steps
    # Most records hold ASCII text that no step changes and no filter but the empty one drops
    # (such a text is not empty): they pass after one check, skipping the bookkeeping below.
    ascii_unchanged = None
    scan = norm.fast.scan if norm.fast is not None else None
    if scan is None and norm.quick and norm.ascii_chain and not explain and (empty_only or check is None):
        ascii_unchanged = T.ascii_unchanged
    # With the C helper, one scan clears such a text whatever its script. The whitespace bits
    # always count here: a text of only whitespace is not one the empty filter may skip.
    skip = 0
    if scan is not None and not explain and (empty_only or check is None):
        skip = norm.relevant | norm.fast.B_WS | norm.fast.B_WS_X
    scanned = norm.scanned
    for rec in records:
        if flat is not None:
            text = rec.get(flat) if isinstance(rec, dict) else None
        else:
            text = get_field(rec, keys)
        if not isinstance(text, str):
            yield rec
            continue
        pii_before = None
        if scan is not None:  # (no pii step then)
            bits = scan(text)
            if skip and not bits & skip and text:
                yield rec
                continue
            new, changed = scanned(text, bits)
        else:
            if ascii_unchanged is not None and ascii_unchanged(text, newlines):
                yield rec
                continue
            if redactor is not None and explain:
                pii_before = dict(redactor.counts)
            new, changed = norm(text)
        info: dict[str, Any] | None = {} if explain else None
        if empty_only:
            if not new or new.isspace():
                if on_drop is not None:
                    on_drop(rec, "empty")
                continue
        elif check is not None:
            hit = check(new, info)
            if hit is not None:
                if on_drop is not None:
                    on_drop(rec, hit[0], **hit[1])
                continue
        if changed:
            stats.changed += 1
            for name in changed:
                step_counts[name] += 1
            if flat is not None:
                rec[flat] = new
            else:
                set_field(rec, keys, new)
        if info is not None:
            info = {"changed": changed, **info}
            if pii_before is not None:
                counts = redactor.counts  # type: ignore[union-attr]
                found = {k: counts[k] - pii_before.get(k, 0) for k in PII_KINDS if counts[k] - pii_before.get(k, 0)}
                if found:
                    info["pii"] = found
            _explain(rec, info)
        yield rec
    if redactor is not None:
        stats.pii.update(redactor.counts)
        redactor.counts.clear()


def _explain(record: dict, info: dict[str, Any]) -> None:
    """Merge into `_llmtools` without clobbering what other commands put there."""
    meta = record.get("_llmtools")
    if meta is None:
        record["_llmtools"] = {"normalize": info}
    elif isinstance(meta, dict):
        meta["normalize"] = info
    # a non-object `_llmtools` belongs to someone else: leave it alone
