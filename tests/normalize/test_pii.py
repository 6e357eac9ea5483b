"""PII redaction (issue #21): each kind's rules, the labelled set, the phone matcher's region filter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmtools.errors import UsageError
from llmtools.ops.normalize import phones as P
from llmtools.ops.normalize.pii import (
    CARD_RANGES,
    IBAN_LENGTHS,
    PII_KINDS,
    Redactor,
    card_issuer_ok,
    email_ok,
    iban_ok,
    luhn_ok,
    parse_kinds,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "pii"
sys.path.insert(0, str(ROOT / "benchmarks" / "normalize"))
import pii_eval  # noqa: E402  (the scorer the benchmark uses)


def redact(text: str, kinds: str = "all", **kw) -> str:
    return Redactor(parse_kinds(kinds), **kw)(text)


# --------------------------------------------------------------------------- issue #21's cases


@pytest.mark.parametrize("text, expected", [
    ("call 09-7625400 today", "call <PHONE> today"),                 # national, no country code
    ("mobile 13812345678", "mobile <PHONE>"),                        # 11-digit Chinese mobile
    ("My number is415-555-0132.", "My number is<PHONE>."),           # glued to the word before
    ("Call 91-415-555-0132 now", "Call <PHONE> now"),                # country code without +
    ("+44 (0)20 7946 0958", "<PHONE>"),
    ("tel:+1-201-555-0123", "tel:<PHONE>"),
])
def test_phones_the_issue_lists(text, expected):
    assert redact(text, "phone") == expected


@pytest.mark.parametrize("text", [
    "Released on 2024-03-05.", "Am 12.03.2024 eingegangen", "ISBN 0-306-40615-2", "ISSN 0317-8471",
    "Order #A-2024-000123 shipped", "Build 20240305.1", "Measured 1.23 4.56 7.89", "in 2019-2020",
    "SSN 078-05-1120", "Total: $1,234,567.89", "12.345.678,90 EUR", "pi is 3.14159265358979", "ZIP 94105",
])
def test_numbers_that_are_not_phones(text):
    assert redact(text, "phone") == text


def test_uatp_and_every_network_range():
    assert redact("card 1354 10014 004955 ok", "card") == "card <CREDIT_CARD> ok"  # UATP, prefix 1, 15 digits
    assert card_issuer_ok("135410014004955") and luhn_ok("135410014004955")
    assert not card_issuer_ok("1354100140049551")  # prefix 1 is 15 digits only (GPN's 1946 aside)
    for lo, _hi, lengths in CARD_RANGES:
        n = min(lengths)
        body = str(lo) + "0" * (n - len(str(lo)) - 1)
        digits = next(body + str(d) for d in range(10) if luhn_ok(body + str(d)))
        assert redact(f"pay {digits} now", "card") == "pay <CREDIT_CARD> now", digits
        bad = digits[:-1] + str((int(digits[-1]) + 1) % 10)
        assert redact(f"pay {bad} now", "card") == f"pay {bad} now"


def test_cards_keep_their_neighbours_whole():
    card = "4111111111111111"
    for text in (f"Ref {card}7777 end", f"tok{card}x", "4111.1111.1111.1111", "4111 1111-1111 1111",
                 "IMEI 356938035643809"):
        assert redact(text, "card") == text


@pytest.mark.parametrize("addr", [
    "a@xn--d1acufc.xn--p1ai", "info@bücher.de", "пример@пример.рф", "\"Fred Bloggs\"@example.com",
    "\"Abc@def\"@example.com", "user@[IPv6:2001:db8::1]", "user@[192.0.2.1]", "o'reilly@example.com",
])
def test_emails_idn_punycode_quoted_literal(addr):
    assert redact(f"Write to {addr}.", "email") == "Write to <EMAIL>."


@pytest.mark.parametrize("text", [
    "john..doe@example.com", "john.@example.com", "A@b@c@example.com", "user@example", "user@localhost",
    "a\"b(c)d,e:f;g<h>i[j\\k]l@example.com", "user@-example.com", "@property", "user@example.c",
])
def test_not_emails_and_never_part_of_one(text):
    assert redact(f"x {text} y", "email") == f"x {text} y"


@pytest.mark.parametrize("text, expected", [
    ("bind to :: and ::1", "bind to <IPV6> and <IPV6>"),
    ("fe80::1%eth0.", "<IPV6>."),
    ("::ffff:192.0.2.128", "<IPV6>"),
    ("https://[2001:db8::7]:8443/", "https://[<IPV6>]:8443/"),
    ("from 192.0.2.10:8080", "from <IPV4>:8080"),
    ("route 192.0.2.0/24", "route <IPV4>/24"),
])
def test_ip_forms(text, expected):
    assert redact(text, "ip") == expected


@pytest.mark.parametrize("text", [
    "::ffff:256.0.0.1", "1:2:3:4:5:6:7:8:9", "2001:db8:::1", "1::2::3", "12345::1", "fe80::1%", "256.1.1.1",
    "10.0.0.1.5", "1.3.6.1.4.1.311", "192.168.01.1", "std::vector", "Foo::Bar", "p::before", "00:1a:2b:3c:4d:5e",
    "12:30:45", "x[::2]", "s[::-1]", "2001:db8::1::",
])
def test_invalid_ips_are_kept_whole(text):
    assert redact(f"v {text} w", "ip") == f"v {text} w"


def test_iban_separators_case_and_sentences():
    iban = "DE89370400440532013000"
    for shown in (iban, "DE89 3704 0044 0532 0130 00", "DE89-3704-0044-0532-0130-00"):
        assert redact(f"Pay into {shown} by Friday.", "iban") == "Pay into <IBAN> by Friday."
    assert redact("IBAN LV80 bANK 0000 4351 9500 1", "iban") == "IBAN LV80 bANK 0000 4351 9500 1"
    assert redact("iban de89 3704 0044 0532 0130 00", "iban") == "iban de89 3704 0044 0532 0130 00"
    assert redact(f"ref X{iban}9", "iban") == f"ref X{iban}9"
    assert iban_ok("GB29 NWBK 6016 1331 9268 19") and not iban_ok("GB29 NWBK 6016 1331 9268 18")
    assert not iban_ok("DE05 3704 0044 0532 0130 0A")  # a letter where DE's BBAN has digits (8n10n)
    assert IBAN_LENGTHS["LC"] == 32 and IBAN_LENGTHS["NO"] == 15 and IBAN_LENGTHS["RU"] == 33


def test_kinds_and_counts():
    r = Redactor()
    text = ("Mail john.doe+x@example.co.uk, call +1 (415) 555-0132 or 020 7946 0958; hosts 192.168.1.20 and "
            "fe80::1ff:fe23:4567:890a; card 4111 1111 1111 1111; IBAN DE89 3704 0044 0532 0130 00.")
    assert r(text) == ("Mail <EMAIL>, call <PHONE> or <PHONE>; hosts <IPV4> and <IPV6>; card <CREDIT_CARD>; "
                       "IBAN <IBAN>.")
    assert dict(r.counts) == {"email": 1, "phone": 2, "ipv4": 1, "ipv6": 1, "credit_card": 1, "iban": 1}
    assert parse_kinds("ip,email") == ("email", "ipv6", "ipv4")
    assert parse_kinds(None) == PII_KINDS
    with pytest.raises(ValueError, match="unknown PII kind"):
        parse_kinds("ssn")


# --------------------------------------------------------------------------- phone options


def test_regions_and_leniency():
    assert P.parse_phone_regions(None) == P.DEFAULT_REGIONS
    assert P.parse_phone_regions("us, gb,US") == ("US", "GB")
    assert P.parse_phone_regions("default,KE")[-1] == "KE"
    assert len(P.parse_phone_regions("all")) == len(phonenumbers.SUPPORTED_REGIONS)
    with pytest.raises(UsageError, match="XX"):
        P.parse_phone_regions("US,XX")
    with pytest.raises(UsageError, match="leniency"):
        P.PhoneFinder(leniency="loose")
    # A national number needs its region; an international one does not.
    assert redact("call 09-7625400", "phone", phone_regions=("US",)) == "call 09-7625400"
    assert redact("call 09-7625400", "phone", phone_regions=("IL",)) == "call <PHONE>"
    assert redact("call +972 9-762-5400", "phone", phone_regions=("US",)) == "call <PHONE>"
    # strict-grouping wants the digits grouped as the country groups them; valid does not.
    odd = "call 020 79 46 09 58"
    assert redact(odd, "phone", phone_regions=("GB",)) == "call <PHONE>"
    assert redact(odd, "phone", phone_regions=("GB",), phone_leniency="strict-grouping") == odd


def test_region_filter_never_skips_a_region_that_could_hold_the_number():
    # Every example number libphonenumber's metadata gives, in every region, written nationally.
    finder = P.PhoneFinder(regions=tuple(sorted(phonenumbers.SUPPORTED_REGIONS)))
    finder._load()
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            num = phonenumbers.example_number_for_type(region, kind)
            if num is None:
                continue
            national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
            assert region in finder._regions_for(national), (region, national)
            checked += 1
    assert checked > 500


def test_phonenumbers_is_imported_only_for_phones():
    code = (
        "import sys\n"
        "from llmtools.ops.normalize.pii import Redactor\n"
        "r = Redactor(('email', 'ipv4', 'ipv6', 'iban', 'credit_card'))\n"
        "r('a@b.co 192.0.2.1 +44 20 7946 0958')\n"
        "assert 'phonenumbers' not in sys.modules\n"
        "assert 'email_validator' not in sys.modules  # the plain address took the fast path\n"
        "r = Redactor(('phone',))\n"
        "assert r('no number in 2019-2020, v1.2.3') == 'no number in 2019-2020, v1.2.3'\n"
        "assert 'phonenumbers' not in sys.modules  # nothing was worth asking it\n"
        "assert r('call 020 7946 0958') == 'call <PHONE>'\n"
        "assert 'phonenumbers' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()


_ATOM = st.text(alphabet="abcxyzABC0129!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


# derandomize: the same draws every run, so CI's verdict does not depend on luck; the case a
# random draw once found (an R-LDH label, "--" at its 3rd and 4th characters) is an example.
@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.lists(_ATOM, min_size=1, max_size=3), st.lists(_LABEL, min_size=1, max_size=3),
       st.from_regex(r"[a-z]{2,6}", fullmatch=True))
@example(atoms=["0"], labels=["00--0"], tld="aa")
@example(atoms=["a"], labels=["xn--abc"], tld="com")
def test_email_fast_path_agrees_with_email_validator(atoms, labels, tld):
    addr = ".".join(atoms) + "@" + ".".join(labels + [tld])
    try:
        validate_email(addr, check_deliverability=False, allow_quoted_local=True, allow_domain_literal=True,
                       globally_deliverable=False)
        expected = True
    except EmailNotValidError:
        expected = False
    assert email_ok(addr) == expected, addr


# --------------------------------------------------------------------------- the labelled set


def test_the_set_is_what_its_generator_writes():
    proc = subprocess.run([sys.executable, str(DATA / "generate.py"), "--check"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()


def test_the_set_is_big_enough_and_labelled_consistently():
    cases = pii_eval.load_cases()
    assert len(cases) >= 500
    for c in cases:
        for s, e, kind in c["spans"]:
            assert 0 <= s < e <= len(c["text"]) and kind in Redactor().kinds
    for kind in pii_eval.KINDS:
        labels = {c["label"] for c in cases if c["kind"] == kind}
        assert labels == {"pos", "neg"}, kind


def test_align_recovers_spans():
    assert pii_eval.align("call 020 7946 0958 now", "call <PHONE> now") == [(5, 18, "phone")]
    assert pii_eval.align("a 1 b 1 c", "a <PHONE> b 1 c") == [(2, 3, "phone")]
    assert pii_eval.align("x", "y") is None


def test_recall_and_precision_on_the_set():
    cases = pii_eval.load_cases()
    redactors: dict[str, Redactor] = {}

    def runner(cs, kind):
        r = redactors.setdefault(kind, Redactor(parse_kinds(kind)))
        return {c["id"]: pii_eval.align(c["text"], r(c["text"])) for c in cs}

    results = pii_eval.evaluate(cases, runner, "here")
    low = {k: (round(r["recall"], 3), round(r["precision"], 3)) for k, r in results.items()
           if r["recall"] < 0.99 or r["precision"] < 0.99}
    assert not low, json.dumps(low)


# --------------------------------------------------------------------------- the command


def _jl(*texts: str) -> str:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def test_cli_phone_options(cli):
    from llmtools.commands.normalize import PHONE_LENIENCIES

    assert PHONE_LENIENCIES == P.LENIENCIES
    texts = ("call 09-7625400", "call +972 9-762-5400", "call +1 (555) 123-4567")
    res = cli(["normalize", "--redact", "phone"], input=_jl(*texts))
    assert res.exit_code == 0, res.stderr
    # No plan allots area code 555: a fictional number, kept at the default leniency.
    assert [r["text"] for r in res.records()] == ["call <PHONE>", "call <PHONE>", "call +1 (555) 123-4567"]
    res = cli(["normalize", "--redact", "phone", "--phone-regions", "US,GB", "--phone-leniency", "possible"],
              input=_jl(*texts))
    assert res.exit_code == 0, res.stderr
    assert [r["text"] for r in res.records()] == ["call 09-7625400", "call <PHONE>", "call <PHONE>"]
    res = cli(["normalize", "--steps", "+pii", "--phone-regions", "il"], input=_jl(texts[0]))
    assert res.records()[0]["text"] == "call <PHONE>"


@pytest.mark.parametrize("args, message", [
    (["--phone-regions", "US"], "need phone redaction"),
    (["--redact", "email", "--phone-leniency", "possible"], "need phone redaction"),
    (["--redact", "phone", "--phone-regions", "US,Narnia"], "NARNIA"),
    (["--redact", "phone", "--phone-leniency", "loose"], "loose"),
])
def test_cli_phone_option_errors(cli, args, message):
    res = cli(["normalize", *args], input=_jl("x"))
    assert res.exit_code == 2
    assert message in res.stderr
