"""`llmtools normalize`: wires options to ops.normalize (see the command docstring for the behaviour)."""

from __future__ import annotations

import re
from typing import Any

import click

from llmtools import options
from llmtools.errors import UsageError


# = ops.normalize.phones.LENIENCIES (a test checks), spelled here so --help imports nothing
PHONE_LENIENCIES = ("possible", "valid", "strict-grouping", "exact-grouping")


def _list_steps(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from llmtools.ops.normalize import DEFAULT_STEPS, STEPS

    for i, (name, what) in enumerate(STEPS.items(), 1):
        mark = "*" if name in DEFAULT_STEPS else " "
        click.echo(f"{i:2d} {mark} {name:<12} {what}")
    click.echo("(* = default; steps always run in this order)")
    ctx.exit(0)


def _regexes(values: tuple[str, ...], option: str) -> list[re.Pattern]:
    out = []
    for value in values:
        try:
            out.append(re.compile(value))
        except re.error as exc:
            raise UsageError(f"{option} '{value}': invalid regular expression: {exc}") from None
    return out


@click.command("normalize")
@options.io_options(schema=True)
@options.engine_options
@click.option("--schema-only", is_flag=True,
              help="With --schema: only check the records; they pass through unchanged (no steps, no filters).")
@click.option("--steps", "steps", multiple=True, metavar="SPEC",
              help="Steps to run: `+name`/`-name` change the defaults (`+lowercase,-mojibake`), a bare list "
                   "replaces them (`nfc,whitespace`); `default`, `all`, `none` are groups. Repeatable.")
@click.option("--list-steps", is_flag=True, expose_value=False, is_eager=True, callback=_list_steps,
              help="Print every step in run order, marking the defaults, and exit.")
@click.option("--newlines", type=click.Choice(["keep", "paragraphs", "none"]), default="keep", show_default=True,
              help="whitespace step: keep line breaks (blank-line runs become one), join lines inside "
                   "paragraphs, or put everything on one line.")
@click.option("--date-order", type=click.Choice(["mdy", "dmy"]), default="mdy", show_default=True,
              help="dates step: how to read ambiguous numeric dates like 3/5/2024.")
@click.option("--redact", "redact", metavar="KINDS",
              help="Redact these PII kinds and add the pii step: any of email, phone, ip (ipv4, ipv6), card, "
                   "iban, or `all`.")
@click.option("--phone-regions", metavar="REGIONS",
              help="--redact phone: regions whose national formats are read (ISO 3166 codes, `US,GB,DE`; "
                   "`default,KE` adds to the default 53; `all`). Numbers written with + or 00 are found anyway.")
@click.option("--phone-leniency", type=click.Choice(PHONE_LENIENCIES), default="valid", show_default=True,
              help="--redact phone: how strictly libphonenumber judges a match: the length fits (possible), "
                   "the number exists in its plan (valid), and is grouped as the country groups it "
                   "(strict-grouping, exact-grouping).")
@click.option("--keep-empty", is_flag=True, help="Keep records whose text is empty after normalizing.")
@click.option("--min-chars", type=click.IntRange(0), metavar="N", help="Drop texts shorter than N characters.")
@click.option("--max-chars", type=click.IntRange(0), metavar="N", help="Drop texts longer than N characters.")
@click.option("--min-words", type=click.IntRange(0), metavar="N", help="Drop texts with fewer than N words (whitespace-separated).")
@click.option("--max-words", type=click.IntRange(0), metavar="N", help="Drop texts with more than N words.")
@click.option("--include", multiple=True, metavar="REGEX",
              help="Keep only texts matching REGEX (Python syntax; repeatable: any may match).")
@click.option("--exclude", multiple=True, metavar="REGEX", help="Drop texts matching REGEX (repeatable).")
@click.option("--lang", "langs", multiple=True, metavar="CODES",
              help="Keep only texts in these ISO 639-1 languages (`en,de`; repeatable), by py3langid's offline model.")
@click.option("--lang-threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="--lang: minimum confidence; texts below it are dropped as uncertain.")
@click.option("--quality", is_flag=True, help="Apply Gopher quality rules to texts of at least 50 words (rules and thresholds above).")
@click.option("--quality-skip", multiple=True, metavar="RULES",
              help="--quality: switch rules off (comma list: symbol-ratio, word-length, ellipsis-lines, bullet-lines, "
                   "alpha-words, dup-lines, dup-paragraphs, top-ngrams, dup-ngrams).")
@click.option("--quality-set", multiple=True, metavar="KEY=VALUE",
              help="--quality: change a threshold, e.g. `max_symbol_ratio=0.2`, `min_words=100` (see docs).")
@click.option("--explain", is_flag=True,
              help="Add `_llmtools.normalize.changed`: the steps that changed each record (and PII counts, language).")
def cli(io: options.IOConfig, engine: Any, steps: tuple[str, ...], newlines: str, date_order: str, redact: str | None,
        phone_regions: str | None, phone_leniency: str,
        keep_empty: bool, min_chars: int | None, max_chars: int | None, min_words: int | None,
        max_words: int | None, include: tuple[str, ...], exclude: tuple[str, ...], langs: tuple[str, ...],
        lang_threshold: float, quality: bool, quality_skip: tuple[str, ...], quality_set: tuple[str, ...],
        explain: bool, schema_only: bool) -> None:
    """Clean, normalize, filter and redact text records.

    Rewrites the text field (--field) of each JSONL record; every other field is kept as it
    is. With no options it does safe, meaning-preserving cleaning: repair mojibake, drop
    control and invisible characters, NFC, straight quotes, plain dashes, and collapse
    whitespace while keeping line breaks and indentation. Records whose text ends up empty are
    dropped. Output is deterministic.

    \b
    Steps, in the order they always run (* = default; --list-steps for details):
      mojibake*  controls*  nfc* | nfkc  quotes*  dashes*  pii  dates  currency
      numbers  lowercase  punctuation  whitespace*

    Filters run after the steps, on the normalized text, cheapest first: empty, --min/max-chars,
    --min/max-words, --include, --exclude, --quality, --lang. A dropped record goes, unchanged,
    to --rejects with its reason (`empty`, `min-chars`, ..., `quality:dup-lines`, `lang`).

    --quality applies Gopher's rules (Rae et al. 2021) with their published thresholds; they
    are off by default because they were tuned on web pages and misjudge short texts, and
    even when on they skip texts under 50 words (--quality-set min_words=N), so short
    instruction records are never dropped by them.

    \b
    Quality rules (--quality-skip NAME) and thresholds (--quality-set KEY=VALUE):
      symbol-ratio    max_symbol_ratio=0.1 ('#', '...', '…' per word)
      word-length     min_mean_word_length=3, max_mean_word_length=10
      ellipsis-lines  max_ellipsis_lines=0.3 (share of lines ending in '...')
      bullet-lines    max_bullet_lines=0.9 (share of lines starting with a bullet)
      alpha-words     min_alpha_words=0.8 (share of words with a letter)
      dup-lines       max_dup_lines=0.3, max_dup_line_chars=0.2
      dup-paragraphs  max_dup_paragraphs=0.3, max_dup_paragraph_chars=0.2
      top-ngrams      max_top_2gram=0.20, max_top_3gram=0.18, max_top_4gram=0.16
      dup-ngrams      max_dup_5gram=0.15 ... max_dup_10gram=0.10 (0.01 less per n)
      (all)           min_words=50: shorter texts are not judged

    \b
    Examples:
        llmtools normalize < raw.jsonl > clean.jsonl
        llmtools normalize --steps +lowercase,+punctuation --newlines none data.jsonl
        llmtools normalize --redact email,phone,card --explain -v chats.jsonl
        llmtools normalize --redact phone --phone-regions default,KE,GH calls.jsonl
        llmtools normalize --steps +dates,+currency --date-order dmy invoices.jsonl
        llmtools normalize --lang en --min-words 3 --quality --rejects dropped.jsonl web.jsonl.gz
        llmtools normalize --field messages.0.content --steps nfkc,whitespace chat.jsonl
        llmtools normalize --field body export.csv.gz -o clean.parquet
        llmtools normalize --schema tickets.schema.json --schema-only --rejects bad.jsonl data/train

    \b
    Environment:
      LLMTOOLS_PURE_PYTHON=1  run without the compiled helper (llmtools._speedups, built at
                              install when a C compiler is there): same output, about half
                              the speed; without a compiler this is how it always runs.

    \b
    --redact judges each candidate by the standard's own rules: libphonenumber (phonenumbers)
    for phones, Python's ipaddress for IPs, email-validator's syntax check for addresses
    beyond plain ASCII, ISO/IEC 7812 issuer ranges and Luhn for cards, the IBAN registry's
    country formats and mod-97 for IBANs (upper case only). See the docs for the rules and
    the default --phone-regions.

    \b
    On Spark (--engine spark), each partition runs the same code, so the part files hold,
    byte for byte, what the local command writes for the same input:
        llmtools normalize --engine spark --master spark://head:7077 \\
            'hdfs:///corpus/raw/*.jsonl.gz' -o hdfs:///corpus/clean --rejects hdfs:///corpus/dropped

    \b
    Exit codes: 0 ok, 2 bad option (unknown step, invalid regex, unknown language
    code or phone region; a --schema that is not a valid JSON Schema; stdin or stdout with
    --engine spark), 3 bad input line or a record --schema rejects (per --on-error), 4
    py3langid missing (--lang), phonenumbers or email-validator missing (--redact), pyarrow
    missing (Parquet), pyspark or Java missing (--engine spark).
    """
    if schema_only:
        _check_only(io)
        return
    from llmtools.ops import normalize as ops

    try:
        chosen = ops.parse_steps(list(steps) or None)
        pii_kinds = ops.PII_KINDS
        if redact is not None:
            pii_kinds = ops.parse_kinds(redact)
            if "pii" not in chosen:
                chosen = ops.parse_steps(list(chosen) + ["pii"])
        phones_on = "pii" in chosen and "phone" in pii_kinds
        if (phone_regions is not None or phone_leniency != "valid") and not phones_on:
            raise UsageError("--phone-regions and --phone-leniency need phone redaction (--redact phone or all)")
        regions = ops.parse_phone_regions(phone_regions) if phone_regions is not None else None
        quality_cfg = None
        if quality:
            quality_cfg = ops.QualityConfig(ops.parse_quality_rules(quality_skip), ops.parse_quality_thresholds(quality_set))
        elif quality_skip or quality_set:
            raise UsageError("--quality-skip and --quality-set need --quality")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    lang_set = frozenset(c.strip().lower() for v in langs for c in v.split(",") if c.strip()) or None
    for lo, hi, name in ((min_chars, max_chars, "chars"), (min_words, max_words, "words")):
        if lo is not None and hi is not None and lo > hi:
            raise UsageError(f"--min-{name} {lo} is greater than --max-{name} {hi}")
    filters = ops.Filters(
        drop_empty=not keep_empty, min_chars=min_chars, max_chars=max_chars, min_words=min_words,
        max_words=max_words, include=_regexes(include, "--include"), exclude=_regexes(exclude, "--exclude"),
        langs=lang_set, lang_threshold=lang_threshold, quality=quality_cfg,
    )
    if lang_set:
        _check_langs(ops, lang_set)

    from llmtools import engines

    field = io.field

    def run(records: Any, reject: Any, _where: Any) -> Any:
        part = ops.Stats()
        yield from ops.normalize(
            records, field=field, steps=chosen, filters=filters, explain=explain,
            on_drop=reject, stats=part, newlines=newlines, date_order=date_order, pii_kinds=pii_kinds,
            phone_regions=regions, phone_leniency=phone_leniency,
        )
        return part

    job = io.job()
    params = {"steps": list(chosen), "newlines": newlines, "date_order": date_order, "field": field}
    stats = ops.Stats()
    for part in engines.run_records(engine, io, job, run, "normalize", params):
        if part is not None:
            stats.changed += part.changed
            stats.steps.update(part.steps)
            stats.pii.update(part.pii)
    rows: dict[str, Any] = {"changed": stats.changed}
    rows.update((f"step {name}", stats.steps.get(name, 0)) for name in chosen)
    rows.update((f"pii {kind}", n) for kind, n in sorted(stats.pii.items()))
    job.summary(rows)


def _check_only(io: options.IOConfig) -> None:
    """--schema-only: every record that fits passes through unchanged; the text field is not
    required (the schema says what is)."""
    if not io.schema_path:
        raise UsageError("--schema-only needs --schema FILE")
    with io.job(field=None) as job:
        job.write_all(job.records())
    job.summary({"schema failures": job.counts["schema"], "checked by": io.schema.engine})


def _check_langs(ops: Any, codes: frozenset[str]) -> None:
    """Load the model before any output, so an unknown code is a usage error, not a silent drop-all."""
    known = ops.known_languages()
    unknown = sorted(codes - known)
    if unknown:
        raise UsageError(f"--lang: unknown language code(s) {', '.join(unknown)} (py3langid knows {len(known)}, e.g. en, de, fr, zh)")
