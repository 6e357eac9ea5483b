"""normalize: every text step, the step spec, and the value/PII rules, as plain functions."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from llmtools.ops.normalize import cleaning as T
from llmtools.ops.normalize import DEFAULT_STEPS, STEP_ORDER, StepSpecError, TextNormalizer, normalize_text, parse_steps
from llmtools.ops.normalize.pii import Redactor, iban_ok, luhn_ok, parse_kinds
from llmtools.ops.normalize.values import DateRewriter, canonical_amount, remove_thousands, unify_currency


def run(text: str, *steps: str, **opts) -> str:
    return TextNormalizer(parse_steps(list(steps)), **opts)(text)[0]


# --------------------------------------------------------------------------- --steps


def test_defaults_are_the_safe_set():
    assert parse_steps(None) == DEFAULT_STEPS == ("mojibake", "controls", "nfc", "quotes", "dashes", "whitespace")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("+lowercase,-mojibake", ("controls", "nfc", "quotes", "dashes", "lowercase", "whitespace")),
        ("whitespace,nfc", ("nfc", "whitespace")),  # a bare list replaces; run order is fixed
        ("default,+pii", DEFAULT_STEPS[:5] + ("pii", "whitespace")),
        ("+nfkc", ("mojibake", "controls", "nfkc", "quotes", "dashes", "whitespace")),  # nfkc replaces nfc
        ("nfkc,nfc", ("nfc",)),  # the one added last wins
        ("none", ()),
        ("none,whitespace", ("whitespace",)),
        ("-quotes, -dashes", ("mojibake", "controls", "nfc", "whitespace")),
    ],
)
def test_parse_steps(spec, expected):
    assert parse_steps(spec) == expected


def test_parse_steps_all_and_repeated_specs():
    assert parse_steps("all") == tuple(s for s in STEP_ORDER if s != "nfc")
    assert parse_steps(["+lowercase", "-whitespace"]) == ("mojibake", "controls", "nfc", "quotes", "dashes", "lowercase")


def test_parse_steps_unknown_suggests():
    with pytest.raises(StepSpecError, match="did you mean 'lowercase'"):
        parse_steps("+lowercas")


# --------------------------------------------------------------------------- unicode steps


def test_mojibake():
    assert T.fix_mojibake("The Mona Lisa doesnâ€™t have eyebrows.") == "The Mona Lisa doesn’t have eyebrows."
    assert T.fix_mojibake("cafÃ© au lait\nsecond line Ã¼ber") == "café au lait\nsecond line über"
    ok = "café “quoted” — naïve Привет 漢字"
    assert T.fix_mojibake(ok) is ok  # correct text is returned untouched (same object)


def test_mojibake_long_lines_match_ftfy():
    import ftfy

    fix = T._ftfy()[0]
    for text in [
        "voilÃ  le travail, " * 8 + "voilÃ le travail",
        "â€œbrokenâ€\x9d quotes and cafÃ© " * 6,
        "ascii words around Ã¼ber die BrÃ¼cke and more ascii words to make it long " * 3,
    ]:
        assert T.fix_mojibake(text) == fix(text) == ftfy.fix_text(text, T._ftfy_state["config"])


def test_controls():
    assert T.remove_controls("a\x00b\x07c\x7fd") == "abcd"
    assert T.remove_controls("zero\u200bwidth\ufeff soft\u00adhyphen \u202eevil\u202c") == "zerowidth softhyphen evil"
    assert T.remove_controls("\x1b[31mred\x1b[0m text") == "red text"
    assert T.remove_controls("lone \ud800 surrogate") == "lone \ufffd surrogate"
    # kept: whitespace controls (the whitespace step's job), ZWJ in emoji, ZWNJ in Persian
    keep = "a\tb\nc\r\n👨\u200d👩\u200d👧 می\u200cخواهم"
    assert T.remove_controls(keep) is keep


def test_controls_tag_characters():
    flag = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"  # Scotland
    hidden = "hi\U000e0049\U000e0047\U000e004e\U000e004f\U000e0052\U000e0045"  # "IGNORE" in tags
    assert T.remove_controls(f"{flag} {hidden}") == f"{flag} hi"


def test_invisible_set_matches_class():
    pattern = re.compile(f"[{T._INVISIBLE}]")
    expected = {chr(c) for c in range(0x80, 0x30000) if pattern.match(chr(c))} | T._TAGS
    assert expected == T._INVISIBLE_NA


def test_unicode_space_set_is_complete():
    spaces = {chr(c) for c in range(0x80, sys.maxunicode + 1) if chr(c).isspace()}
    assert spaces == T._UNICODE_SPACES


def test_nfc_and_nfkc():
    decomposed = "Cafe\u0301 A\u030a"
    assert T.nfc(decomposed) == "Café Å"
    assert T.nfc("ﬁ ２") == "ﬁ ２"  # NFC keeps compatibility characters
    assert T.nfkc("ﬁ ２ ①") == "fi 2 1"
    assert run("e\u200b\u0301", "controls", "nfc") == "é"  # controls run before nfc


def test_quotes_and_dashes():
    assert T.unify_quotes("“Hi,” she said, ‘it’s „fine‟’") == "\"Hi,\" she said, 'it's \"fine\"'"
    assert T.unify_quotes("«bonjour» 「こんにちは」") == "«bonjour» 「こんにちは」"
    assert T.unify_dashes("1990–2000, x − y, non‑breaking, a ― b, c ⸺ d") == "1990-2000, x - y, non-breaking, a — b, c — d"
    assert T.unify_dashes("em — dash") == "em — dash"


def test_lowercase_keeps_placeholders_and_form():
    assert run("Mail JOHN@EXAMPLE.COM Now", "pii", "lowercase") == "mail <EMAIL> now"
    assert run("İSTANBUL", "nfc", "lowercase") == unicodedata.normalize("NFC", "İSTANBUL".lower())


def test_punctuation():
    out = T.remove_punctuation("Hello, world! Don't do well-known things: 3.14 and 1,000. (x) #tag «ok» <EMAIL>")
    assert out == "Hello world Dont do well known things 3.14 and 1,000 x tag ok <EMAIL>"
    assert run("¡Hola!  ¿Qué tal?", "punctuation", "whitespace") == "Hola Qué tal"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  a  b\t c  ", "a b c"),
        ("line one  \r\nline two\r\n\r\n\r\n\r\nnext para", "line one\nline two\n\nnext para"),
        ("def f():\n    return  1\n", "def f():\n    return 1"),  # indentation kept
        ("a\u00a0\u2003b\u2028c\u2029d", "a b\nc\n\nd"),
        ("\n \n\t\n", ""),
        ("x\x0by\x0cz\x85w", "x\ny\nz\nw"),
    ],
)
def test_whitespace_keep(text, expected):
    assert T.collapse_whitespace(text) == expected


def test_whitespace_modes():
    text = "hard\nwrapped  line\n\n  second\n para"
    assert T.collapse_whitespace(text, "paragraphs") == "hard wrapped line\n\n  second para"
    assert T.collapse_whitespace(text, "none") == "hard wrapped line second para"


# --------------------------------------------------------------------------- pii


def test_pii_each_kind():
    r = Redactor()
    text = (
        "Mail john.doe+x@example.co.uk, call +1 (415) 555-0132 or 020 7946 0958; "
        "hosts 192.168.1.20 and fe80::1ff:fe23:4567:890a; card 4111 1111 1111 1111; "
        "IBAN DE89 3704 0044 0532 0130 00."
    )
    assert r(text) == (
        "Mail <EMAIL>, call <PHONE> or <PHONE>; hosts <IPV4> and <IPV6>; card <CREDIT_CARD>; IBAN <IBAN>."
    )
    assert dict(r.counts) == {"email": 1, "phone": 2, "ipv4": 1, "ipv6": 1, "credit_card": 1, "iban": 1}


def test_pii_checksums_and_lookalikes_are_kept():
    r = Redactor()
    keep = (
        "card 4111 1111 1111 1112 fails Luhn; IBAN DE89 3704 0044 0532 0130 01 fails mod-97; "
        "time 12:30:45, std::vector, version 1.2.3, date 2024-03-05, years 2019 2020 2021, pi 3.14159, 256.1.1.1"
    )
    assert r(keep) == keep
    assert not r.counts
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")


def test_pii_kinds_selection():
    assert parse_kinds("email,ip") == ("email", "ipv6", "ipv4")
    r = Redactor(parse_kinds("email"))
    assert r("a@b.co 192.168.0.1") == "<EMAIL> 192.168.0.1"
    with pytest.raises(ValueError, match="unknown PII kind"):
        parse_kinds("ssn")


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "text, expected",
    [
        ("March 5, 2024", "2024-03-05"),
        ("Mar. 5 2024", "2024-03-05"),
        ("March 5th, 2024", "2024-03-05"),
        ("5 Mar 2024", "2024-03-05"),
        ("5th of March, 2024", "2024-03-05"),
        ("5-Mar-2024", "2024-03-05"),
        ("2024/3/5", "2024-03-05"),
        ("2024.03.05", "2024-03-05"),
        ("3/5/2024", "2024-03-05"),  # mdy by default
        ("13/05/2024", "2024-05-13"),  # impossible as mdy: read as dmy
        ("5.3.2024", "2024-03-05"),  # dotted dates are day first
        ("Published March 2024.", "Published 2024-03."),
        ("on Feb 29, 2023", "on Feb 29, 2023"),  # not a date: left alone
        ("3/5/24", "3/5/24"),  # two-digit year: left alone
        ("you may 2024 be", "you may 2024 be"),
        ("2024-03-05T10:00", "2024-03-05T10:00"),
    ],
)
def test_dates(text, expected):
    assert DateRewriter("mdy")(text) == expected


def test_date_order_dmy():
    assert DateRewriter("dmy")("3/5/2024 and 5/13/2024") == "2024-05-03 and 2024-05-13"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$1,200.50", "1200.50 USD"),
        ("€5", "5 EUR"),
        ("USD 10", "10 USD"),
        ("5 €", "5 EUR"),
        ("€1.200,50", "1200.50 EUR"),
        ("€5,50", "5.50 EUR"),
        ("-$5", "-5 USD"),
        ("$5 million", "5 million USD"),
        ("US$ 3 and C$4", "3 USD and 4 CAD"),
        ("£3.5bn", "3.5bn GBP"),
        ("$5k", "5k USD"),
        ("1200.50 USD", "1200.50 USD"),
        ("try 5 times", "try 5 times"),
    ],
)
def test_currency(text, expected):
    assert unify_currency(text) == expected
    assert unify_currency(expected) == expected


def test_canonical_amount():
    assert [canonical_amount(a) for a in ("1,200", "1.200", "1,000,000", "5,5", "1'234.5", "1\u00a0234,50")] == [
        "1200", "1200", "1000000", "5.5", "1234.5", "1234.50",
    ]


def test_numbers():
    text = "1,234,567 people, 1,234.56 kg, 1.234.567,89 EUR, 1'234 CHF, 1\u202f234\u202f567 m, lists 1,2,3 and 2019,2020, 12,34"
    assert remove_thousands(text) == (
        "1234567 people, 1234.56 kg, 1234567,89 EUR, 1234 CHF, 1234567 m, lists 1,2,3 and 2019,2020, 12,34"
    )


def test_value_steps_together():
    out = normalize_text("Paid $1,200.50 on March 5, 2024 for 12,000 units", ["dates", "currency", "numbers"])
    assert out == "Paid 1200.50 USD on 2024-03-05 for 12000 units"


def test_nfc_inert_characters_never_take_part_in_composition():
    # T.nfc_possible skips unicodedata.is_normalized for texts whose non-ASCII characters are
    # all in T._NFC_INERT: each must be a starter (combining class 0) that is NFC by itself
    # (not excluded) and never the second part of a canonical decomposition, so that it can
    # neither change nor combine with what comes before it.
    seconds = set()
    for cp in range(0x110000):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            seconds.update(int(p, 16) for p in d.split()[1:])
    for ch in T._NFC_INERT:
        assert unicodedata.combining(ch) == 0, hex(ord(ch))
        assert unicodedata.is_normalized("NFC", ch), hex(ord(ch))
        assert ord(ch) not in seconds, hex(ord(ch))
    assert all(unicodedata.is_normalized("NFC", a + b) for a in map(chr, range(256)) for b in T._NFC_INERT)
