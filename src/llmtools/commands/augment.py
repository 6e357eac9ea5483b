"""`llmtools augment`: wires options to llmtools.ops.augment (see the command docstring)."""

from __future__ import annotations

import click

from llmtools import options
from llmtools.errors import UsageError
from llmtools.ops.augment import EDA_OPS, METHODS, PROMPTS

TEMPLATE_NAMES = tuple(PROMPTS)


def _split_csv(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _methods(values: tuple[str, ...]) -> tuple[str, ...]:
    chosen = _split_csv(values)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise UsageError(f"--method: unknown method(s) {', '.join(unknown)} (choose from {', '.join(METHODS)})")
    return tuple(dict.fromkeys(chosen))


def _eda_ops(value: str) -> tuple[str, ...]:
    ops_list = [o.strip() for o in value.split(",") if o.strip()]
    if not ops_list or any(o not in EDA_OPS for o in ops_list):
        raise UsageError("--eda-ops takes a comma-separated subset of swap,delete,insert")
    return tuple(ops_list)


def _prompts(templates: tuple[str, ...]) -> tuple[dict[str, str], dict]:
    """(str.format prompts, Jinja2 .j2 templates) by prompt name."""
    prompts, jinja = {}, {}
    for item in templates:
        name, sep, path = item.partition("=")
        if not sep or name not in TEMPLATE_NAMES:
            raise UsageError(f"--prompt-template takes NAME=FILE with NAME one of {', '.join(TEMPLATE_NAMES)}")
        if path.endswith(".j2"):
            from llmtools.prompts import PromptTemplate

            jinja[name] = PromptTemplate.load(path)
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                prompts[name] = fh.read()
        except OSError as exc:
            raise UsageError(f"--prompt-template {path}: {exc.strerror}") from None
    return prompts, jinja


@click.command()
@options.io_options()
@options.engine_options
@click.option("--method", "methods", multiple=True, default=("synonym",), show_default=True, metavar="NAME[,NAME]",
              help="synonym, eda, paraphrase, backtranslate, synthesize; repeat or comma-separate for several.")
@click.option("-n", "--n", "n", type=click.IntRange(1), default=1, show_default=True, help="Variants per input record, per method.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every method (LLM methods: as far as the backend honours seeds).")
@click.option("--keep-original/--no-keep-original", default=True, show_default=True, help="Also write each original record, before its variants.")
@click.option("--id-field", default="id", show_default=True, metavar="PATH", help="Field whose value goes in `augmented_from`; records without it get \"source:line\".")
@click.option("--synonym-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="synonym: share of words replaced (at least one).")
@click.option("--eda-ops", default="swap,delete,insert", show_default=True, help="eda: operations to cycle through, one per variant.")
@click.option("--swap-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="eda swap: swaps per word.")
@click.option("--delete-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="eda delete: probability of deleting each word.")
@click.option("--insert-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="eda insert: synonyms inserted per word.")
@click.option("--min-similarity", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Drop variants less similar than this to their source (word-sequence ratio, 0-1).")
@click.option("--max-similarity", type=click.FloatRange(0, 1), default=1.0, show_default=True, help="Drop variants more similar than this to their source.")
@options.model_options(backend=True)
@click.option("--pivot", default="fr", show_default=True, help="backtranslate: pivot language code (fr, de, es, ...) or name.")
@click.option("--instruction", metavar="TEXT", help="synthesize: write new examples following this instruction, instead of imitating the input.")
@click.option("--prompt-template", "templates", multiple=True, metavar="NAME=FILE",
              help=f"Replace a built-in prompt ({', '.join(TEMPLATE_NAMES)}); placeholders {{text}}, {{pivot}}, {{examples}}, {{instruction}}. "
                   "A FILE.j2 is a sandboxed Jinja2 template: those plus the record's fields ({{ label }}), "
                   "<message role=...> blocks for chat; a missing field is a bad record (--on-error).")
@click.option("--temperature", type=click.FloatRange(0), default=0.8, show_default=True, help="LLM sampling temperature.")
@click.option("--top-p", type=click.FloatRange(0, 1), default=0.95, show_default=True, help="LLM nucleus sampling.")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True, help="LLM: longest variant, in tokens.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="LLM: records per batched model call.")
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True, help="http models: requests in flight at once.")
@click.option("--timeout", type=click.FloatRange(1), default=120.0, show_default=True, help="http models: seconds per request.")
@click.option("--retries", type=click.IntRange(0), default=3, show_default=True, help="http models: retries on 429, 5xx and connection errors.")
def cli(io, engine, methods, n, seed, keep_original, id_field, synonym_rate, eda_ops, swap_rate, delete_rate, insert_rate,
        min_similarity, max_similarity, model, pivot, instruction, templates,
        temperature, top_p, max_tokens, batch_size, concurrency, timeout, retries):
    """Make seeded, traceable variants of text records.

    Each input record is written unchanged (unless --no-keep-original), followed by its
    variants. A variant is a copy of its source with the text field replaced, plus
    `augmented_from` (the source's --id-field, or "source:line") and
    `augmentation: {method, params, seed, variant, similarity}`. Labels and other fields are
    copied. Stop words, numbers and placeholders such as <EMAIL> are never replaced.

    \b
    Methods:
      synonym        WordNet synonym replacement (part of speech inferred from WordNet and context)
      eda            random swap, deletion and synonym insertion (Wei & Zou, 2019)
      paraphrase     an LLM rewrites the text
      backtranslate  an LLM translates to --pivot and back
      synthesize     an LLM writes new examples in the style of the input, or per --instruction

    A quality guard drops variants that are empty, identical to their source, or whose
    word-sequence similarity (difflib ratio over lowercased words, 0-1) is outside
    --min-similarity/--max-similarity; dropped variants go to --rejects with their reason.

    WordNet comes from NLTK's data path, else a system dictionary (Debian: apt-get install
    wordnet-base wordnet-sense-index) prepared once into the llmtools cache.

    \b
    Examples:
      llmtools augment --method synonym,eda -n 2 --seed 1 < train.jsonl > aug.jsonl
      llmtools augment --method paraphrase -m smollm2 --no-keep-original < train.jsonl
      llmtools augment --method backtranslate --pivot de -m http://127.0.0.1:8000/v1 < t.jsonl
      llmtools augment --method synthesize --instruction "Write a short billing complaint." -n 3

    \b
    On Spark (--engine spark), each partition runs the same code. Seeds use each record's
    place in the whole input (a first pass counts each partition's records), so the part
    files hold, byte for byte, what the local command writes for the same input. LLM methods
    load the model once per partition (give a path every worker can read) or call an
    http(s)://.../v1 endpoint, such as a fleet of `llmtools serve` replicas; their batches end
    at partition ends, which matters only to backends whose output depends on the batch and to
    synthesize's style examples (taken from the batch):
        llmtools augment --engine spark --method synonym,eda -n 2 --seed 1 \\
            'hdfs:///corpus/train/*.jsonl.gz' -o hdfs:///corpus/augmented
        llmtools augment --engine spark --method paraphrase -m http://llm-pool:8000/v1 \\
            'hdfs:///corpus/train/*.jsonl' -o hdfs:///corpus/paraphrased --rejects hdfs:///corpus/aug-dropped

    \b
    Exit codes: 0 ok, 2 bad option (or stdin/stdout with --engine spark), 3 bad input line
    (per --on-error), 4 WordNet, a model, pyspark or Java missing.
    """
    from llmtools.ops.augment import AugmentConfig, augment

    if min_similarity > max_similarity:
        raise UsageError("--min-similarity is above --max-similarity")
    prompts, jinja = _prompts(templates)
    cfg = AugmentConfig(
        methods=_methods(methods), n=n, seed=seed, field=io.field, keep_original=keep_original,
        id_field=id_field or None, synonym_rate=synonym_rate, eda_ops=_eda_ops(eda_ops), swap_rate=swap_rate,
        delete_rate=delete_rate, insert_rate=insert_rate, min_similarity=min_similarity, max_similarity=max_similarity,
        pivot=pivot, instruction=instruction, prompts=prompts, templates=jinja, temperature=temperature, top_p=top_p,
        max_tokens=max_tokens, batch_size=batch_size,
    )
    http = dict(timeout=timeout, retries=retries, concurrency=concurrency) if model.is_url else {}
    if engine.spark:
        engine.check_io(io.inputs, io.output)
    llm = None
    if cfg.uses_llm and not engine.spark:  # on Spark, each partition loads its own
        llm = model.load(seed=seed, **http)
        cfg.model_id = llm.identity.to_dict()

    def run(records, reject, where, part):
        import dataclasses

        stats: dict[str, int] = {}
        own, part_cfg = None, cfg
        if cfg.uses_llm and llm is None:
            own = model.load(seed=seed, **http)
            part_cfg = dataclasses.replace(cfg, model_id=own.identity.to_dict())
        try:
            yield from augment(records, part_cfg, where=where, on_drop=reject, model=llm or own, stats=stats,
                               on_bad=part.bad, first=part.first)
        finally:
            if own is not None:
                own.close()
        return stats

    from llmtools import engines

    # Every record's "source:line" is tracked: records without an id are traced by it, and an
    # LLM batch is read ahead of its variants.
    job = io.job(locate=True)
    params = {"methods": list(cfg.methods), "n": n, "seed": seed, "field": io.field}
    totals: dict[str, int] = {}
    try:
        for part in engines.run_records(engine, io, job, run, "augment", params, numbered=True):
            for key, value in (part or {}).items():
                totals[key] = totals.get(key, 0) + value
    finally:
        if llm is not None:
            llm.close()
    job.summary({f"variants: {k}": v for k, v in sorted(totals.items())})
