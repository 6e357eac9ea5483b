"""Character-level normalize steps: mojibake, Unicode forms, invisible characters, quotes,
dashes, case, punctuation and whitespace.

Every step is a plain `str -> str` function that returns its argument itself (the same object)
when it has nothing to do, so the pipeline can count changes without comparing strings, and
each one checks cheaply whether it has anything to do before doing it (most text is ASCII).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

# The C helper, or None: then every check and step below runs as written.
from llmtools.native import SPEEDUPS


class _LazyPatterns:
    """Regexes compiled on first use, so a short run on ASCII text never pays for them."""

    def __init__(self) -> None:
        self._sources: dict[str, tuple[str, int]] = {}

    def register(self, name: str, pattern: str, flags: int = 0) -> str:
        self._sources[name] = (pattern, flags)
        return pattern

    def __getattr__(self, name: str) -> re.Pattern:
        try:
            pattern, flags = self.__dict__["_sources"][name]
        except KeyError:
            raise AttributeError(name) from None
        compiled = re.compile(pattern, flags)
        setattr(self, name, compiled)  # later lookups find the attribute and skip __getattr__
        return compiled


U = _LazyPatterns()


# --------------------------------------------------------------------------- text profile

# Most steps only need to know whether some character is present. Scanning a long str with a
# regex character class costs ~10-100 ns per character; bytes.translate costs ~1. So each text
# is profiled once, with C-speed bytes operations, into (C0 control bytes present, the string of
# its non-ASCII characters), and steps look at that (usually tiny) profile first. Steps return
# their input object when they change nothing, so consecutive steps reuse one profile.
_NOT_C0 = bytes(b for b in range(256) if not (b < 0x20 or b == 0x7F))
_ASCII_BYTES = bytes(range(128))
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
_EMPTY: frozenset[str] = frozenset()
_last_profile: tuple[str, bytes, str, bytes, frozenset[str]] = ("", b"", "", b"", _EMPTY)


def _profile(text: str) -> tuple[str, bytes, str, bytes, frozenset[str]]:
    """(text, C0 bytes, non-ASCII chars, UTF-8 bytes, set of the non-ASCII chars)."""
    global _last_profile
    last = _last_profile
    if last[0] is text:
        return last
    if text.isascii():
        raw = text.encode("ascii")
        last = (text, raw.translate(None, _NOT_C0), "", raw, _EMPTY)
    else:
        raw = text.encode("utf-8", "surrogatepass")
        # One pass over the text deletes the printable ASCII (most of it); the short rest holds
        # the C0 controls and the non-ASCII characters. Deleting ASCII bytes never splits a
        # UTF-8 sequence: what is left of the rest decodes to exactly the non-ASCII characters.
        rest = raw.translate(None, _PRINTABLE_ASCII)
        na = rest.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass")
        last = (text, rest.translate(None, _NOT_C0), na, raw, frozenset(na))
    _last_profile = last
    return last


def profile(text: str) -> tuple[bytes, str]:
    """(the C0/DEL bytes in `text`, its non-ASCII characters in order)."""
    last = _profile(text)
    return last[1], last[2]


# --------------------------------------------------------------------------- mojibake (ftfy)

_ftfy_state: dict[str, object] = {}


def _ftfy() -> tuple[Callable[[str], str], Callable[[str], bool]]:
    """Import ftfy on first use (~25 ms) and build the fixer and its cheap pre-check."""
    if "fix" not in _ftfy_state:
        ftfy = _import_ftfy()
        from ftfy.badness import BADNESS_RE

        # Only the mojibake repairs: no HTML unescaping, no quote uncurling, no width or
        # ligature folding, no normalization (those are separate steps with their own switch).
        config = ftfy.TextFixerConfig(
            unescape_html=False,
            remove_terminal_escapes=False,
            fix_encoding=True,
            restore_byte_a0=True,
            replace_lossy_sequences=True,
            decode_inconsistent_utf8=True,
            fix_c1_controls=True,
            fix_latin_ligatures=False,
            fix_character_width=False,
            uncurl_quotes=False,
            fix_line_breaks=False,
            fix_surrogates=True,
            remove_control_chars=False,
            normalization=None,
            explain=False,
        )
        alphabet = re.compile(_badness_alphabet(BADNESS_RE.pattern))
        bad = BADNESS_RE.search

        def suspicious(text: str) -> bool:
            # ftfy changes a segment only if BADNESS_RE matches it (or it holds C1 controls or
            # surrogates, which are in the alphabet / checked below). Every alternative of
            # BADNESS_RE is at most 6 characters long and has a non-ASCII character of its own
            # classes among its first three, so searching small windows around those characters
            # is exactly `BADNESS_RE.search(text)`, at a fraction of the cost on long text.
            if U.surrogate.search(text) or U.a_space.search(text):
                return True
            end = -1
            for n, m in enumerate(alphabet.finditer(text)):
                if n == 8:
                    # Dense (Cyrillic, Greek, much accented Latin): one scan beats many windows.
                    return bad(text) is not None
                i = m.start()
                if i + 6 <= end:
                    continue
                lo = i - 2 if i >= 2 else 0
                if lo < end - 6:
                    lo = end - 6 if end >= 6 else 0
                end = i + 6
                if bad(text, lo, end):
                    return True
            return False

        def fix(text: str) -> str:
            return ftfy.fix_text(text, config)

        fix_and_explain, limit = ftfy.fix_and_explain, config.max_decode_length

        def fix_line(line: str) -> str:
            # What fix_text does with text of one line (no "\n"), without its per-call
            # set-up: a third of its time on a short piece.
            return fix_and_explain(line, config)[0] if 0 < len(line) <= limit else fix(line)

        _ftfy_state["fix"] = fix
        _ftfy_state["fix_line"] = fix_line
        _ftfy_state["config"] = config
        _ftfy_state["suspicious"] = suspicious
        _ftfy_state["alphabet"] = alphabet
    return _ftfy_state["fix"], _ftfy_state["suspicious"]  # type: ignore[return-value]


def _import_ftfy():  # noqa: ANN202 - the ftfy module
    """`import ftfy`, without loading ftfy.formatting (and wcwidth) until something uses it.

    ftfy imports ftfy.formatting only for display_ljust, which only its explain_unicode() calls;
    it pulls in wcwidth, ~40% of ftfy's import time (~20 ms), paid by every run that meets a
    text that may hold mojibake. A stand-in module serves that import and hands each call of
    display_ljust to the real module, imported then.
    """
    import sys

    if "ftfy" in sys.modules or "ftfy.formatting" in sys.modules:
        import ftfy

        return ftfy
    import importlib
    import types

    def display_ljust(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - ftfy's signature
        return importlib.import_module("ftfy.formatting").display_ljust(*args, **kwargs)

    stand_in = types.ModuleType("ftfy.formatting")
    stand_in.display_ljust = display_ljust  # type: ignore[attr-defined]
    sys.modules["ftfy.formatting"] = stand_in
    try:
        import ftfy
    except ImportError:  # a later ftfy wants more from ftfy.formatting: import it as it is
        for name in [m for m in sys.modules if m == "ftfy" or m.startswith("ftfy.")]:
            del sys.modules[name]
        import ftfy
    finally:
        if sys.modules.get("ftfy.formatting") is stand_in:
            del sys.modules["ftfy.formatting"]  # a later `import ftfy.formatting` gets the real one
    return ftfy


# `^[ÃÂ][ ]` in BADNESS_RE matches at the start of every line, because ftfy checks line by line.
_A_SPACE_AFTER_BREAK = U.register("a_space", r"(?:^|\n)[ÃÂ] ")
_SURROGATE = U.register("surrogate", "[\ud800-\udfff]")


def _badness_alphabet(pattern: str) -> str:
    """A character class of every non-ASCII character that ftfy's BADNESS_RE can match first-hand."""
    import re._constants as C  # type: ignore[import-not-found]
    import re._parser as P  # type: ignore[import-not-found]

    points: set[int] = set()
    spans: list[tuple[int, int]] = []

    def walk(node) -> None:  # noqa: ANN001 - sre parse tree
        for op, av in node:
            if op is C.IN and not any(o is C.NEGATE for o, _ in av):
                for o, a in av:
                    if o is C.LITERAL and a >= 0x80:
                        points.add(a)
                    elif o is C.RANGE and a[1] >= 0x80:
                        spans.append((max(a[0], 0x80), a[1]))
            elif op is C.LITERAL and av >= 0x80:
                points.add(av)
            elif op is C.BRANCH:
                for branch in av[1]:
                    walk(branch)
            elif op is C.SUBPATTERN:
                walk(av[3])
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
                walk(av[2])

    walk(P.parse(pattern, re.VERBOSE))
    parts = [re.escape(chr(p)) for p in sorted(points)]
    parts += [f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in sorted(set(spans))]
    return "[" + "".join(parts) + "]"


# UTF-8 byte classes: ASCII -> "a", continuation -> "c", lead -> "L". Two non-ASCII characters
# stand side by side exactly where a continuation byte is followed by a lead byte.
_UTF8_CLASS = bytes(b"a"[0] if b < 0x80 else b"c"[0] if b < 0xC0 else b"L"[0] for b in range(256))
_SURROGATES = frozenset(map(chr, range(0xD800, 0xE000)))
_C1_SURROGATES = frozenset(map(chr, range(0x80, 0xA0))) | _SURROGATES


def mojibake_suspected(text: str) -> bool:
    """True when ftfy might change `text` (a necessary condition, not a sufficient one).

    Every pattern of ftfy's BADNESS_RE needs a C1 control, two non-ASCII characters side by
    side, 'Ã'/'Â' before a space, or 'œ'/'Œ' before a non-letter; and ftfy changes nothing
    without a BADNESS_RE match, a C1 control or a surrogate. Those are cheap to rule out, so the
    exact (slow) test runs only on the few texts that pass them.
    """
    return _mojibake_possible(text) and _ftfy()[1](text)


def _mojibake_possible(text: str) -> bool:
    if SPEEDUPS is not None:  # the same test, in C (a test checks the two agree)
        return bool(SPEEDUPS.scan(text) & SPEEDUPS.B_MOJI)
    return mojibake_possible(text)


def mojibake_possible(text: str) -> bool:
    """The cheap part of mojibake_suspected (no ftfy needed): False means ftfy changes nothing."""
    if text.isascii():
        return False
    _, _, na, raw, chars = _profile(text)
    if not chars.isdisjoint(_C1_SURROGATES) or "œ" in chars or "Œ" in chars:
        return True
    if ("Ã" in chars and "Ã " in text) or ("Â" in chars and "Â " in text):
        return True
    if len(na) < 2:  # two non-ASCII characters side by side need two of them
        return False
    if raw is None:
        raw = text.encode("utf-8", "surrogatepass")
    return b"cL" in raw.translate(_UTF8_CLASS)


# ftfy's cost grows with the length of the segment it is given (it scans it with a large
# regex several times), so long lines are cut at spaces between two ASCII characters, which
# no mojibake sequence spans, and only the suspect pieces go to ftfy. ftfy weighs the evidence
# of a whole line, though: a C1 control in one piece can make it repair an 'Â ' in another that
# it leaves alone on its own. So a piece is fixed alone only when it is the line's one piece
# holding non-ASCII text; otherwise a suspect line goes to ftfy whole (ASCII never adds to, or
# takes from, its evidence).
_CHUNK_SPLIT = re.compile(r" (?<=[!-~] )(?=[!-~])")  # the space first: re scans for it fast


def _fix_line(line: str, fix: Callable[[str], str]) -> str:
    if len(line) <= 80:
        return fix(line)
    chunks = _CHUNK_SPLIT.split(line)
    wide = [i for i, chunk in enumerate(chunks) if not chunk.isascii()]  # most chunks are ASCII words
    suspect = [i for i in wide if mojibake_suspected(chunks[i])]
    if not suspect:
        return line
    if len(wide) > 1:
        return fix(line)
    chunks[suspect[0]] = fix(chunks[suspect[0]])
    return " ".join(chunks)


def fix_mojibake(text: str) -> str:
    """Repair text decoded with the wrong codec (ftfy's encoding fixes only).

    ftfy fixes each line on its own; only lines (and, in long lines, space-separated pieces)
    that might hold mojibake are given to it.
    """
    if "\n" not in text:
        if not mojibake_suspected(text):
            return text
        fixed = _fix_line(text, _ftfy_state["fix_line"])  # type: ignore[arg-type]
    else:
        # Line by line: the exact (slow) test runs on the lines that can hold mojibake, not
        # first on the whole text as well.
        if not _mojibake_possible(text):
            return text
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if not line.isascii() and mojibake_suspected(line):
                lines[i] = _fix_line(line, _ftfy_state["fix_line"])  # type: ignore[arg-type]
        fixed = "\n".join(lines)
    return text if fixed == text else fixed


# --------------------------------------------------------------------------- Unicode forms


def nfc(text: str) -> str:
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


# Characters that can never take part in an NFC change, whatever their neighbours: not
# combining, not the second part of any canonical decomposition, and NFC themselves (a test
# derives this from unicodedata). Latin-1 letters, quotes, dashes and the like: a text holding
# no other non-ASCII characters is NFC, without is_normalized's ~2 ns per character.
_NFC_INERT = frozenset(map(chr, [*range(0x80, 0x100), *range(0x2002, 0x2070), *range(0x20A0, 0x20C1), 0x2212]))


def nfc_possible(text: str) -> bool:
    if text.isascii() or _profile(text)[4] <= _NFC_INERT:
        return False
    return not unicodedata.is_normalized("NFC", text)


def nfkc_possible(text: str) -> bool:
    return not text.isascii() and not unicodedata.is_normalized("NFKC", text)


def nfkc(text: str) -> str:
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    return unicodedata.normalize("NFKC", text)


# --------------------------------------------------------------------------- invisible characters

# C0/C1 controls except the whitespace ones (\t \n \v \f \r and NEL, which the whitespace step
# turns into spaces or line breaks), DEL, and invisible format characters: soft hyphen, zero
# width space, word joiner, BOM, invisible math operators, Mongolian vowel separator, bidi
# marks/embeddings/overrides/isolates, interlinear annotation marks. Kept on purpose: ZWJ and
# ZWNJ (they change how emoji and Indic/Persian words render) and variation selectors.
_INVISIBLE = (
    "\x00-\x08\x0e-\x1f\x7f\x80-\x84\x86-\x9f"
    "\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb"
)
_ASCII_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
# ANSI terminal escapes (colours, cursor moves) are removed whole, not just their ESC byte.
_ANSI = U.register("ansi", r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# One scan finds everything: invisible runs (removed), lone surrogates (U+FFFD), and Unicode tag
# characters, kept inside emoji flag tag sequences and removed elsewhere (they are invisible and
# are used to smuggle hidden instructions into prompts).
_CONTROLS_RE = U.register("controls", 
    f"(?P<inv>[{_INVISIBLE}]+)|(?P<sur>[\ud800-\udfff])"
    "|(?P<flag>\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f)|[\U000e0000-\U000e007f]"
)


def _controls_sub(m: re.Match) -> str:
    if m.group("sur") is not None:
        return "\ufffd"
    return m.group("flag") or ""


_C0_KEEP = b"\t\n\r\x0b\x0c"
_TAGS = frozenset(map(chr, range(0xE0000, 0xE0080)))
# The non-ASCII part of _INVISIBLE, as a set (a test checks the two agree).
_INVISIBLE_NA = (
    frozenset("\x80\x81\x82\x83\x84\u00ad\u061c\u180e\u200b\u200e\u200f\ufeff\ufff9\ufffa\ufffb")
    | frozenset(map(chr, [*range(0x86, 0xA0), *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x206A)]))
    | _TAGS
)


def controls_possible(text: str) -> bool:
    """False when remove_controls() certainly changes nothing."""
    _, ctrl, _, _, chars = _profile(text)
    return bool(ctrl.translate(None, _C0_KEEP)) or not (chars.isdisjoint(_INVISIBLE_NA) and chars.isdisjoint(_SURROGATES))


def remove_controls(text: str) -> str:
    """Drop control and invisible formatting characters; lone surrogates become U+FFFD."""
    _, ctrl, _, _, chars = _profile(text)
    bad_c0 = ctrl.translate(None, _C0_KEEP)
    found = chars & _INVISIBLE_NA if chars else chars
    surrogates = chars & _SURROGATES if chars else chars
    if not bad_c0 and not found and not surrogates:
        return text
    out = text
    if bad_c0:
        if 0x1B in bad_c0:
            out = U.ansi.sub("", out)
        for b in set(bad_c0):
            out = out.replace(chr(b), "")
    if found & _TAGS:
        out = U.controls.sub(_controls_sub, out)  # flags keep their tag sequences
    else:
        # The profile says which characters are there: str.replace each one, no regex scan.
        for ch in found:
            out = out.replace(ch, "")
        for ch in surrogates:
            out = out.replace(ch, "\ufffd")
    return text if out == text else out


# --------------------------------------------------------------------------- quotes and dashes

_QUOTES = {
    0x2018: "'", 0x2019: "'", 0x201A: "'", 0x201B: "'", 0xFF07: "'",  # ‘ ’ ‚ ‛ ＇
    0x201C: '"', 0x201D: '"', 0x201E: '"', 0x201F: '"', 0xFF02: '"',  # “ ” „ ‟ ＂
}
_QUOTE_CHARS = frozenset(map(chr, _QUOTES))

_DASHES = {
    # hyphen, non-breaking hyphen, figure dash, en dash, minus sign, small/fullwidth hyphen-minus
    0x2010: "-", 0x2011: "-", 0x2012: "-", 0x2013: "-", 0x2212: "-", 0xFE63: "-", 0xFF0D: "-",
    # horizontal bar, two- and three-em dash, small em dash: one em dash
    0x2015: "\u2014", 0x2E3A: "\u2014", 0x2E3B: "\u2014", 0xFE58: "\u2014",
}
_DASH_CHARS = frozenset(map(chr, _DASHES))


def _replace_all(text: str, found: frozenset[str], table: dict[int, str]) -> str:
    # str.replace per character present beats str.translate (a dict lookup per character).
    global _last_profile
    _, ctrl, na, _, _ = _profile(text)
    for ch in found:
        rep = table[ord(ch)]
        text = text.replace(ch, rep)
        na = na.replace(ch, "" if rep.isascii() else rep)
    # The replacements are printable and C0-free, so the next step's profile follows from this
    # one without another pass over the text (the UTF-8 bytes are recomputed only if needed).
    _last_profile = (text, ctrl, na, None, frozenset(na))  # type: ignore[assignment]
    return text


def quotes_possible(text: str) -> bool:
    return not text.isascii() and not _profile(text)[4].isdisjoint(_QUOTE_CHARS)


def dashes_possible(text: str) -> bool:
    return not text.isascii() and not _profile(text)[4].isdisjoint(_DASH_CHARS)


def unify_quotes(text: str) -> str:
    """Curly and low-9 quotes to ASCII ' and \"; guillemets and CJK brackets are kept."""
    if text.isascii():
        return text
    found = _profile(text)[4] & _QUOTE_CHARS
    return _replace_all(text, found, _QUOTES) if found else text


def unify_dashes(text: str) -> str:
    """Hyphen-like dashes (‐ ‑ ‒ – −) to '-'; long dashes (― ⸺ ⸻) to one em dash '—'."""
    if text.isascii():
        return text
    found = _profile(text)[4] & _DASH_CHARS
    return _replace_all(text, found, _DASHES) if found else text


# --------------------------------------------------------------------------- case


def lowercase(text: str, form: str = "NFC") -> str:
    out = text.lower()
    if out == text:
        return text
    if not out.isascii() and not unicodedata.is_normalized(form, out):
        # str.lower() can decompose (e.g. "İ" -> "i̇"); re-normalize to keep the chosen form.
        out = unicodedata.normalize(form, out)
    return out


# --------------------------------------------------------------------------- punctuation

_PLACEHOLDER = r"<(?:EMAIL|PHONE|IPV4|IPV6|CREDIT_CARD|IBAN)>"
_ASCII_PUNCT = U.register("ascii_punct", r"[!-/:-@\[-`{-~]")
_punct_re: list = []


def _punct_pattern():  # noqa: ANN202 - a `regex` pattern
    # `regex` (not `re`) knows Unicode properties, so \p{P} and \p{S} cover every script.
    if not _punct_re:
        import regex

        _punct_re.append(
            regex.compile(
                rf"(?P<keep>{_PLACEHOLDER}|(?<=\d)[.,](?=\d))"
                rf"|(?P<apos>(?<=\w)['\u2019](?=\w))"
                # an emoji's joiners, variation selectors and tag characters go with it
                rf"|(?P<run>(?:(?!{_PLACEHOLDER})[\p{{P}}\p{{S}}][\u200d\ufe0e\ufe0f\U000e0020-\U000e007f]*)+)"
            )
        )
    return _punct_re[0]


def _punct_sub(m) -> str:  # noqa: ANN001
    if m.group("keep") is not None:
        return m.group("keep")
    if m.group("apos") is not None:
        return ""
    s, e = m.span()
    text = m.string
    before = text[s - 1] if s > 0 else " "
    after = text[e] if e < len(text) else " "
    return " " if before.isalnum() and after.isalnum() else ""


def remove_punctuation(text: str) -> str:
    """Remove punctuation and symbols (Unicode P* and S*).

    Kept: pii placeholders (`<EMAIL>`), a `.` or `,` between two digits (3.14, 1,000).
    Dropped: an apostrophe inside a word (don't -> dont). Any other run between two letters or
    digits becomes a space (well-known -> well known), elsewhere it is removed.
    """
    if text.isascii() and not U.ascii_punct.search(text):
        return text
    out = _punct_pattern().sub(_punct_sub, text)
    return text if out == text else out


# --------------------------------------------------------------------------- whitespace

# Every non-ASCII character for which str.isspace() is true (a test checks the list).
_UNICODE_SPACES = frozenset("\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# C0 whitespace other than \n and \t (which have cheaper checks): deleting all other bytes
# from a profile's control bytes leaves something exactly when one of these is present.
_NOT_WS_C0 = bytes(b for b in range(256) if b not in b"\r\x0b\x0c\x1c\x1d\x1e\x1f")

NEWLINE_MODES = ("keep", "paragraphs", "none")


_SPACES = re.compile(" {2,}")


def collapse_whitespace(text: str, newlines: str = "keep") -> str:
    """Collapse and strip whitespace; line breaks per `newlines`, indentation kept.

    Every Unicode line break (CR LF, CR, VT, FF, NEL, U+2028) becomes "\n" and U+2029 (paragraph
    separator) a blank line; other whitespace runs inside a line (tabs, NBSP, U+2000-U+200A ...)
    become one space; trailing whitespace goes; leading indentation stays (non-tab characters
    in it become spaces). Then, by `newlines`:
    keep: every line break stays; runs of blank lines become one (a paragraph break).
    paragraphs: line breaks inside a paragraph become spaces (unwraps hard-wrapped text).
    none: everything on one line, all whitespace runs become one space.
    The whole text is stripped.
    """
    if newlines == "none":
        out = " ".join(text.split())
        return text if out == text else out
    if not text:
        return text
    other = _other_whitespace(text)
    if not other and not _spacing_needs_work(text, newlines):
        return text
    return _rewrite_whitespace(text, newlines, other)


def whitespace_possible(text: str, newlines: str = "keep") -> bool:
    """False when collapse_whitespace(text, newlines) certainly changes nothing."""
    if not text:
        return False
    # With newlines="none" a text stays as it is exactly when it has no line break and nothing
    # the paragraphs test looks for.
    return _other_whitespace(text) or _spacing_needs_work(text, "keep" if newlines == "keep" else "paragraphs")


def _other_whitespace(text: str) -> bool:
    """Whitespace other than space, tab and "\\n": C0 line breaks and separators, Unicode spaces."""
    _, ctrl, _, _, chars = _profile(text)
    return bool(ctrl and ctrl.translate(None, _NOT_WS_C0)) or not chars.isdisjoint(_UNICODE_SPACES)


def _spacing_needs_work(text: str, newlines: str) -> bool:
    """For a non-empty text without _other_whitespace: would the whitespace step change it?"""
    if text[0].isspace() or text[-1].isspace() or "  " in text or "\t" in text:
        return True
    i = text.find("\n")
    if i < 0:
        return False
    if newlines != "keep":
        return True  # paragraphs: a line break inside a paragraph is joined (the rewrite decides)
    # Each line break: a space before it, or a third one after a blank line, needs work. The
    # text neither starts nor ends with whitespace, so text[i - 1] and text[i + 2] exist.
    while i >= 0:
        if text[i - 1] == " ":
            return True
        if text[i + 1] == "\n":
            if text[i + 2] == "\n":
                return True
            i = text.find("\n", i + 2)
        else:
            i = text.find("\n", i + 1)
    return False


# Every byte but the C0 controls other than "\n", and DEL: deleting these from an ASCII text's
# bytes leaves exactly the characters the controls or whitespace step would act on.
_NOT_ASCII_WORK = bytes(b for b in range(256) if not ((b < 0x20 and b != 0x0A) or b == 0x7F))


def ascii_unchanged(text: str, newlines: str = "keep") -> bool:
    """True when `text` is ASCII and no step among mojibake, controls, nfc, nfkc, quotes,
    dashes and whitespace (with these `newlines`) would change it. A sufficient condition:
    False only means "run the steps".

    On ASCII text only two of those steps can do anything: controls (a C0 control other than
    the whitespace ones, or DEL) and whitespace (leading or trailing whitespace, a double
    space, a tab or other C0 whitespace, a space before a line break, two blank lines in a
    row; with `newlines` other than keep, any line break). Most text has none of these, and
    the test is a few C-speed scans instead of a pass per step.
    """
    if not text.isascii() or not text or _spacing_needs_work(text, newlines):
        return False
    return not text.encode("ascii").translate(None, _NOT_ASCII_WORK)


def _rewrite_whitespace(text: str, newlines: str, other: bool) -> str:
    # Short text of spaces and line breaks only is quicker done whole: fewer Python steps. In
    # long text the extra passes over all of it cost more than the line loop (measured).
    if len(text) < 2000 and not other and newlines == "keep" and "\t" not in text and "\n " not in text:
        return _rewrite_spaces(text)
    if other:
        src = text.replace("\u2029", "\n\n") if "\u2029" in text else text
        lines = src.splitlines()
    else:
        lines = text.split("\n")
    out: list[str] = []
    blank = True  # no blank line at the start
    join = newlines == "paragraphs"
    for line in lines:
        body = line.strip()
        if not body:
            if not blank:
                out.append("")
                blank = True
            continue
        if other or "\t" in body:
            body = " ".join(body.split())
        elif "  " in body:
            body = _SPACES.sub(" ", body)
        if join and not blank:
            out[-1] = f"{out[-1]} {body}"
            continue
        if line[0].isspace():
            indent = line[: len(line) - len(line.lstrip())]
            if indent.strip(" \t"):
                indent = "".join(ch if ch == "\t" else " " for ch in indent)
            body = indent + body
        out.append(body)
        blank = False
    if out and not out[-1]:
        out.pop()
    result = "\n".join(out).lstrip()
    return text if result == text else result


def _rewrite_spaces(text: str) -> str:
    """_rewrite_whitespace for the common case, on the whole text at once: only spaces and "\n",
    and no line but the first indented (no "\n "). Every line is then stripped, its space runs
    collapsed, and runs of blank lines become one; indentation of the first line goes anyway."""
    out = text.strip(" \n")
    while "  " in out:
        out = out.replace("  ", " ")
    if " \n" in out:
        out = out.replace(" \n", "\n")  # one space at most: the runs are collapsed
    while "\n\n\n" in out:
        out = out.replace("\n\n\n", "\n\n")
    return text if out == text else out
