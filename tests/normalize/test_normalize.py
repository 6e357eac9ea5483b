"""normalize: the command end to end (records, filters, --explain, bad input, files, summary)."""

from __future__ import annotations

import gzip
import json
import os

import orjson
import pytest

from llmtools.cli import COMMANDS
from llmtools.ops.normalize import Filters, Stats, normalize
from llmtools.ops.normalize.quality import QUALITY_DEFAULTS, QualityConfig, quality_check


def jl(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_help_summary_matches_registry(cli):
    from llmtools.commands.normalize import cli as command

    assert command.__doc__.splitlines()[0] == COMMANDS["normalize"]
    res = cli(["normalize", "--help"])
    assert res.exit_code == 0
    for step in ("mojibake", "controls", "nfkc", "quotes", "dashes", "pii", "dates", "currency", "numbers",
                 "lowercase", "punctuation", "whitespace"):
        assert step in res.stdout


def test_list_steps(cli):
    res = cli(["normalize", "--list-steps"])
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0].split()[1:3] == ["*", "mojibake"] and "whitespace" in lines[12]


def test_defaults_clean_and_keep_other_fields_in_order(cli):
    rec = {"id": 7, "text": "  The Mona Lisa doesnâ€™t   have\u200b “eyebrows” – really.  \n\n\n\nNext.", "meta": {"a": [1, 2]}, "z": None}
    res = cli(["normalize"], input=jl(rec))
    assert res.exit_code == 0, res.stderr
    (out,) = res.records()
    assert out["text"] == "The Mona Lisa doesn't have \"eyebrows\" - really.\n\nNext."
    assert list(out) == ["id", "text", "meta", "z"]
    assert {k: v for k, v in out.items() if k != "text"} == {"id": 7, "meta": {"a": [1, 2]}, "z": None}


def test_output_is_deterministic(cli):
    data = jl(*({"text": f"Row  {i}: café “{i}”\u200b", "n": i} for i in range(50)))
    a = cli(["normalize", "--steps", "all", "--explain"], input=data)
    b = cli(["normalize", "--steps", "all", "--explain"], input=data)
    assert a.exit_code == 0 and a.stdout_bytes == b.stdout_bytes


def test_steps_option(cli):
    rec = {"text": "Hello,  WORLD! “Quoted”"}
    res = cli(["normalize", "--steps", "+lowercase,-quotes"], input=jl(rec))
    assert res.records()[0]["text"] == "hello, world! “quoted”"
    res = cli(["normalize", "--steps", "+lowercase", "--steps", "+punctuation"], input=jl(rec))
    assert res.records()[0]["text"] == "hello world quoted"
    res = cli(["normalize", "--steps", "whitespace"], input=jl(rec))
    assert res.records()[0]["text"] == "Hello, WORLD! “Quoted”"
    res = cli(["normalize", "--steps", "+lowercse"], input=jl(rec))
    assert res.exit_code == 2 and "did you mean 'lowercase'" in res.stderr


def test_nested_field_and_newlines_mode(cli):
    rec = {"messages": [{"role": "user", "content": "hard\nwrapped\n\n\npara"}], "text": "  untouched  "}
    res = cli(["normalize", "--field", "messages.0.content", "--newlines", "paragraphs"], input=jl(rec))
    out = res.records()[0]
    assert out["messages"][0]["content"] == "hard wrapped\n\npara"
    assert out["text"] == "  untouched  "


def test_redact_explain_and_summary(cli):
    recs = [
        {"text": "Mail john@example.com or call +1 (415) 555-0132.", "_llmtools": {"dedup": {"cluster": 3}}},
        {"text": "Card 4111 1111 1111 1111, host 10.0.0.1, IBAN GB82 WEST 1234 5698 7654 32."},
        {"text": "nothing here"},
    ]
    res = cli(["normalize", "--redact", "all", "--explain", "-v"], input=jl(*recs))
    assert res.exit_code == 0, res.stderr
    a, b, c = res.records()
    assert a["text"] == "Mail <EMAIL> or call <PHONE>."
    assert a["_llmtools"] == {"dedup": {"cluster": 3}, "normalize": {"changed": ["pii"], "pii": {"email": 1, "phone": 1}}}
    assert b["text"] == "Card <CREDIT_CARD>, host <IPV4>, IBAN <IBAN>."
    assert b["_llmtools"]["normalize"]["pii"] == {"credit_card": 1, "ipv4": 1, "iban": 1}
    assert c["_llmtools"] == {"normalize": {"changed": []}}
    summary = res.stderr
    for part in ("records in=3", "records out=3", "pii email=1", "pii phone=1", "pii credit_card=1", "step pii=2"):
        assert part in summary, summary


def test_redact_some_kinds_only(cli):
    res = cli(["normalize", "--redact", "email"], input=jl({"text": "a@b.co +44 20 7946 0958"}))
    assert res.records()[0]["text"] == "<EMAIL> +44 20 7946 0958"


def test_explain_leaves_foreign_llmtools_value(cli):
    res = cli(["normalize", "--explain"], input=jl({"text": "a  b", "_llmtools": "not-a-dict"}))
    assert res.records()[0] == {"text": "a b", "_llmtools": "not-a-dict"}


def test_values_and_date_order(cli):
    rec = {"text": "Paid $1,200.50 on 3/5/2024 for 12,000 units"}
    res = cli(["normalize", "--steps", "+dates,+currency,+numbers", "--date-order", "dmy"], input=jl(rec))
    assert res.records()[0]["text"] == "Paid 1200.50 USD on 2024-05-03 for 12000 units"


# --------------------------------------------------------------------------- filters


def test_filters_drop_with_reasons_into_rejects(cli, tmp_path):
    recs = [
        {"id": 1, "text": "   \u200b "},  # empty after cleaning
        {"id": 2, "text": "tiny"},  # min-chars
        {"id": 3, "text": "one two three four five six seven eight nine ten eleven"},  # max-words
        {"id": 4, "text": "spam spam buy now"},  # exclude
        {"id": 5, "text": "a perfectly fine record"},
        {"id": 6, "text": "no keyword at all here"},  # include
    ]
    rejects = tmp_path / "rej.jsonl"
    res = cli(["normalize", "--min-chars", "5", "--max-words", "8", "--exclude", "buy now", "--include", "fine|spam",
               "--rejects", str(rejects), "-v"], input=jl(*recs))
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in res.records()] == [5]
    rej = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["record"]["id"], r["reason"]) for r in rej] == [
        (1, "empty"), (2, "min-chars"), (3, "max-words"), (4, "exclude"), (6, "include"),
    ]
    assert rej[1]["value"] == 4 and rej[1]["limit"] == 5 and rej[1]["line"] == 2
    assert rej[0]["record"] == recs[0]  # rejects hold the record as it came in
    for part in ("dropped: empty=1", "dropped: min-chars=1", "dropped: max-words=1", "dropped: exclude=1", "dropped: include=1"):
        assert part in res.stderr


def test_min_words_max_chars_and_keep_empty(cli):
    recs = [{"text": ""}, {"text": "one two"}, {"text": "x" * 50}]
    res = cli(["normalize", "--keep-empty", "--min-words", "1"], input=jl(*recs))
    assert [r["text"] for r in res.records()] == ["one two", "x" * 50]
    res = cli(["normalize", "--keep-empty", "--max-chars", "10"], input=jl(*recs))
    assert [r["text"] for r in res.records()] == ["", "one two"]
    res = cli(["normalize", "--min-chars", "5", "--max-chars", "2"], input=jl(*recs))
    assert res.exit_code == 2


def test_invalid_regex_is_usage_error(cli):
    res = cli(["normalize", "--include", "("], input=jl({"text": "x"}))
    assert res.exit_code == 2 and "--include" in res.stderr


def test_lang_filter(cli, tmp_path):
    recs = [
        {"id": 1, "text": "The quick brown fox jumps over the lazy dog near the river bank."},
        {"id": 2, "text": "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer."},
        {"id": 3, "text": "Le renard brun rapide saute par-dessus le chien paresseux."},
    ]
    rejects = tmp_path / "rej.jsonl"
    res = cli(["normalize", "--lang", "en,de", "--explain", "--rejects", str(rejects)], input=jl(*recs))
    assert res.exit_code == 0, res.stderr
    out = res.records()
    assert [r["id"] for r in out] == [1, 2]
    assert out[1]["_llmtools"]["normalize"]["lang"] == "de"
    (rej,) = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert rej["reason"] == "lang" and rej["lang"] == "fr" and rej["score"] > 0.5
    res = cli(["normalize", "--lang", "en", "--lang-threshold", "1.0"], input=jl(recs[0]))
    assert res.records() == []  # nothing is that sure
    res = cli(["normalize", "--lang", "xx"], input=jl(recs[0]))
    assert res.exit_code == 2 and "unknown language" in res.stderr


# --------------------------------------------------------------------------- quality rules


def words_text(n: int, word: str = "alpha") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def quality(text: str, rules=None, **thresholds):
    cfg = QualityConfig()
    if rules is not None:
        cfg.rules = tuple(rules)
    cfg.thresholds.update(thresholds)
    return quality_check(text, text.split(), cfg)


def test_quality_passes_ordinary_prose():
    prose = (
        "Large language models are trained on text collected from many sources. Cleaning that text "
        "removes boilerplate, repeated lines and broken encodings before training begins. Each rule "
        "below comes from the Gopher paper, which filtered web pages with simple statistics that "
        "are cheap to compute and easy to explain to the people who read the resulting data."
    )
    assert len(prose.split()) >= 50
    assert quality(prose) is None


def test_quality_skips_short_texts():
    assert quality("### ... ### ...") is None  # under min_words: rules do not apply
    assert quality("### ... ### ...", min_words=1)[0] == "quality:symbol-ratio"


@pytest.mark.parametrize(
    "text, rule",
    [
        (" ".join(["#tag word"] * 40), "quality:symbol-ratio"),
        (" ".join(["a b c d"] * 20), "quality:word-length"),
        (" ".join(["Supercalifragilisticexpialidocious"] * 60), "quality:word-length"),
        ("\n".join(f"line number {i} of a long list of many words that slowly trails off..." for i in range(20)), "quality:ellipsis-lines"),
        ("\n".join(f"- item {i} in a long bulleted list of things" for i in range(20)), "quality:bullet-lines"),
        (" ".join(f"{i}" for i in range(1000, 1060)) + " words here", "quality:alpha-words"),
        ("\n".join(["the same line repeated over and over"] * 10 + [words_text(30)]), "quality:dup-lines"),
        (words_text(40) + " " + " ".join(["buy this now"] * 20), "quality:top-ngrams"),
    ],
)
def test_quality_rules_fire(text, rule):
    hit = quality(text)
    assert hit is not None and hit[0] == rule, hit
    assert hit[1]["limit"] > 0


def test_quality_dup_ngrams_and_paragraphs():
    block = " ".join(f"w{i}" for i in range(12))
    text = words_text(40, "u") + " " + " ".join([block] * 4)
    hit = quality(text, rules=["dup-ngrams"])
    assert hit and hit[0] == "quality:dup-ngrams" and hit[1]["n"] == 5
    paras = "\n\n".join([words_text(20, "p"), words_text(20, "p"), words_text(20, "q")])
    assert quality(paras, rules=["dup-paragraphs"])[0] == "quality:dup-paragraphs"


def test_quality_cli_skip_and_set(cli, tmp_path):
    spammy = {"text": " ".join(f"#topic{i} about thing{i}" for i in range(20))}
    short = {"text": "Write a haiku about the sea."}
    res = cli(["normalize", "--quality", "-v"], input=jl(spammy, short))
    assert [r["text"] for r in res.records()] == [short["text"]]
    assert "dropped: quality:symbol-ratio=1" in res.stderr
    res = cli(["normalize", "--quality", "--quality-skip", "symbol-ratio"], input=jl(spammy))
    assert len(res.records()) == 1
    res = cli(["normalize", "--quality", "--quality-set", "max_symbol_ratio=0.6"], input=jl(spammy))
    assert len(res.records()) == 1
    assert cli(["normalize", "--quality-skip", "bogus", "--quality"], input=jl(short)).exit_code == 2
    assert cli(["normalize", "--quality-set", "x=1", "--quality"], input=jl(short)).exit_code == 2
    assert cli(["normalize", "--quality-set", "min_words=1"], input=jl(short)).exit_code == 2


def test_help_lists_quality_rules_and_defaults(cli):
    from llmtools.ops.normalize.quality import QUALITY_RULES

    text = cli(["normalize", "--help"]).stdout
    for rule, (keys, _) in QUALITY_RULES.items():
        assert rule in text
        for key in keys:
            if f"{key}=" in text:
                assert f"{key}={QUALITY_DEFAULTS[key]:g}" in text.replace("0.20", "0.2").replace("0.10", "0.1"), key
    assert "min_words=50" in text


def test_quality_defaults_are_gophers():
    assert QUALITY_DEFAULTS["max_symbol_ratio"] == 0.1
    assert (QUALITY_DEFAULTS["min_mean_word_length"], QUALITY_DEFAULTS["max_mean_word_length"]) == (3, 10)
    assert QUALITY_DEFAULTS["max_ellipsis_lines"] == 0.3 and QUALITY_DEFAULTS["max_dup_lines"] == 0.3
    assert [QUALITY_DEFAULTS[f"max_top_{n}gram"] for n in (2, 3, 4)] == [0.20, 0.18, 0.16]
    assert [QUALITY_DEFAULTS[f"max_dup_{n}gram"] for n in range(5, 11)] == [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]


# --------------------------------------------------------------------------- bad input, files


BAD_LINES = (
    b'{"text": "ok  one"}\n'
    b"{not json\n"
    b"[1, 2]\n"
    b'{"text": "bad \xff utf8"}\n'
    b'{"other": 1}\n'
    b'{"text": 42}\n'
    b'{"text": "ok  two"}\n'
)


def test_bad_input_fail(cli):
    res = cli(["normalize"], input=BAD_LINES)
    assert res.exit_code == 3
    assert "<stdin>:2" in res.stderr and "invalid JSON" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_input_skip_with_rejects(cli, tmp_path):
    rejects = tmp_path / "bad.jsonl"
    res = cli(["normalize", "--on-error", "skip", "--rejects", str(rejects)], input=BAD_LINES)
    assert res.exit_code == 0, res.stderr
    assert [r["text"] for r in res.records()] == ["ok one", "ok two"]
    rej = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [r["line"] for r in rej] == [2, 3, 4, 5, 6]
    reasons = [r["reason"] for r in rej]
    assert reasons[0].startswith("invalid JSON") and "JSON object" in reasons[1]
    assert "UTF-8" in reasons[2] and "missing field 'text'" in reasons[3] and "int, not a string" in reasons[4]
    for line in (2, 3, 4, 5, 6):
        assert f"<stdin>:{line}:" in res.stderr


def test_bad_input_keep_passes_records_through(cli):
    res = cli(["normalize", "--on-error", "keep", "-q"], input=BAD_LINES)
    assert res.exit_code == 0
    assert res.records() == [{"text": "ok one"}, {"other": 1}, {"text": 42}, {"text": "ok two"}]
    assert res.stderr == ""  # -q silences the warnings


def test_gz_input_and_atomic_output(cli, tmp_path):
    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        fh.write(jl({"text": "caf\u0065\u0301  “ok”"}, {"text": "second"}))
    out = tmp_path / "out" / "clean.jsonl"
    res = cli(["normalize", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    assert [orjson.loads(x)["text"] for x in out.read_bytes().splitlines()] == ["café \"ok\"", "second"]
    assert [p.name for p in out.parent.iterdir()] == ["clean.jsonl"]  # no temp file left


def test_failed_run_leaves_no_output_file(cli, tmp_path):
    out = tmp_path / "clean.jsonl"
    out.write_text("previous\n")
    res = cli(["normalize", "-o", str(out)], input=b'{"text": "fine"}\n{oops\n')
    assert res.exit_code == 3
    assert out.read_text() == "previous\n"  # the old file is untouched, no partial write
    assert os.listdir(tmp_path) == ["clean.jsonl"]


def test_surrogates_in_input_are_repaired(cli):
    # JSON may escape a lone surrogate; the controls step replaces it, so the output is UTF-8.
    res = cli(["normalize"], input=b'{"text": "bad \\ud800 half", "other": "x"}\n')
    assert res.exit_code == 0, res.stderr
    assert res.records() == [{"text": "bad \ufffd half", "other": "x"}]


def test_surrogates_in_other_fields_survive(cli):
    res = cli(["normalize"], input=b'{"text": "fine", "other": "\\udc80"}\n')
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout_bytes) == {"text": "fine", "other": "\udc80"}


# --------------------------------------------------------------------------- the ops API


def test_ops_api_counts_and_drops():
    dropped = []
    stats = Stats()
    recs = [{"text": "a  b"}, {"text": ""}, {"text": "c"}, {"x": 1}]
    out = list(normalize(recs, filters=Filters(min_chars=1), stats=stats, on_drop=lambda r, why, **kw: dropped.append(why)))
    assert out == [{"text": "a b"}, {"text": "c"}, {"x": 1}]
    assert dropped == ["empty"]
    assert stats.changed == 1 and stats.steps["whitespace"] == 1
