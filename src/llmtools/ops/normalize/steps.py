"""The text steps of normalize: their names and fixed order, `--steps` parsing, and the chain.

Text steps run in one fixed order (STEP_ORDER), whatever order they are listed in, so a set
of steps always means the same thing. `TextNormalizer` is the chosen steps as one callable.

    >>> TextNormalizer()("  “Hi”\u200b  there  ")
    ('"Hi" there', ['controls', 'quotes', 'whitespace'])
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Callable, Iterable

from llmtools.ops.normalize import cleaning as T

# The opt-in steps and filters (pii, values, quality, language) are imported only when
# chosen: start-up time matters for a command run once per small file.
PII_KINDS = ("email", "ipv6", "ipv4", "iban", "credit_card", "phone")  # = pii.PII_KINDS

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
        phone_regions: tuple[str, ...] | None = None,
        phone_leniency: str | None = None,
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
            from llmtools.ops.normalize.pii import Redactor

            self.redactor = impl["pii"] = Redactor(tuple(pii_kinds), phone_regions=phone_regions,
                                                   phone_leniency=phone_leniency)
        if {"dates", "currency", "numbers"} & set(self.steps):
            from llmtools.ops.normalize import values as V

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
