"""`llmtools dedup`: wires options to ops.dedup (see the command docstring for the behaviour)."""

from __future__ import annotations

import os
from typing import Any

import click

from llmtools import options
from llmtools.errors import UsageError


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning it to the kernel.

    Each batch allocates and frees the same few ~10 MB numpy arrays; with glibc's defaults
    they are unmapped or trimmed and faulted back in on the next batch (~90k page faults per
    20k documents, ~10% of a run). Fixed mmap and trim thresholds of 64/256 MB keep them in
    the heap (~30k faults). Process-wide, so only the command does it; elsewhere a no-op."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    b, sep, r = value.lower().partition("x")
    if not sep or not b.strip().isdigit() or not r.strip().isdigit() or int(b) < 1 or int(r) < 1:
        raise click.BadParameter(f"{value!r} is not BANDSxROWS, e.g. 16x6")
    return int(b), int(r)


@click.command("dedup")
@options.io_options()
@options.engine_options
@click.option("--exact", "exact", is_flag=True, help="Exact duplicates only: a hash of the canonical text (see --ignore-*).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.8, show_default=True,
              help="Near-duplicate Jaccard similarity threshold.")
@click.option("--num-perm", type=click.IntRange(16, 1024), default=128, show_default=True, help="MinHash permutations (signature length).")
@click.option("--ngram", type=click.IntRange(1, 64), default=5, show_default=True, help="Shingle size in --shingle units.")
@click.option("--shingle", type=click.Choice(["word", "char"]), default="word", show_default=True,
              help="Shingle unit: lower-cased words (punctuation dropped) or characters (whitespace collapsed).")
@click.option("--seed", type=int, default=1, show_default=True, help="MinHash permutation seed (an index remembers it).")
@click.option("--recall-target", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.99, show_default=True,
              help="Choose the LSH bands so that a pair at exactly --threshold is a candidate with at least this "
                   "probability (the fewest, longest bands that do; -v prints them). Candidates are then verified. "
                   "With --containment it is the LSH Ensemble's weight on misses.")
@click.option("--bands", "bands", metavar="BxR", callback=_bands,
              help="LSH bands explicitly: B bands of R signature rows (B*R <= --num-perm), e.g. 9x13 "
                   "(datasketch's choice for 0.8, the bands before --recall-target). Overrides --recall-target.")
@click.option("--verify/--no-verify", default=False, show_default=True,
              help="Check LSH candidates with exact Jaccard over stored shingle sets (this run's records only; "
                   "costs ~4 bytes per shingle per kept record). Off: the Jaccard estimated from the two full "
                   "signatures decides (standard error 0.035 at J=0.8 with 128 perms).")
@click.option("--keep", type=click.Choice(["first", "longest"]), default="first", show_default=True,
              help="Which record of a group survives. `longest` buffers ALL input in memory until the end.")
@click.option("--mark", is_flag=True, help="Keep every record; add `dup_cluster`, `is_duplicate` (and `dup_similarity`).")
@click.option("--id-field", metavar="PATH", help="Record id used in dup_of/dup_cluster and the index (default: line number).")
@click.option("--ignore-case/--no-ignore-case", default=False, show_default=True, help="--exact: compare case-folded text.")
@click.option("--ignore-whitespace/--no-ignore-whitespace", "ignore_space", default=True, show_default=True,
              help="--exact: collapse whitespace runs and strip the ends.")
@click.option("--ignore-punctuation/--no-ignore-punctuation", "ignore_punct", default=False, show_default=True,
              help="--exact: drop Unicode punctuation.")
@click.option("--against", multiple=True, metavar="FILE", type=click.Path(dir_okay=False, allow_dash=False),
              help="Reference JSONL (repeatable): drop records that overlap any of its records (reason `contaminated`).")
@click.option("--containment", type=click.FloatRange(0.0, 1.0, min_open=True), metavar="C",
              help="--against by containment >= C (LSH Ensemble) instead of Jaccard >= --against-threshold.")
@click.option("--against-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), metavar="J",
              help="--against Jaccard threshold  [default: --threshold]")
@click.option("--window", type=click.IntRange(0, None), default=32, show_default=True,
              help="--containment: check windows of this many shingles (half-overlapping); 0 = the whole record.")
@click.option("--index", "index", metavar="PATH|URL", help="Persistent index: an .npz file or redis://HOST:PORT/DB[?name=NAME].")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes computing signatures; output order is preserved.")
def cli(io: options.IOConfig, engine: Any, exact: bool, threshold: float, num_perm: int, ngram: int, shingle: str, seed: int,
        recall_target: float, bands: tuple[int, int] | None, verify: bool, keep: str, mark: bool, id_field: str | None, ignore_case: bool, ignore_space: bool,
        ignore_punct: bool, against: tuple[str, ...], containment: float | None, against_threshold: float | None,
        window: int, index: str | None, jobs: int) -> None:
    """Remove exact and near-duplicate records (MinHash LSH).

    Unique records go to stdout in input order; each removed record goes to --rejects with
    `dup_of` (the kept record's --id-field value, or its line number) and `similarity` (the
    MinHash estimate of Jaccard, or the exact value with --verify). Near-duplicate mode (the
    default) shingles the text into word 5-grams, lower-cased, punctuation dropped, signs each
    record with a datasketch MinHash, finds candidates with LSH bands chosen for recall (at the
    defaults 16 bands of 6 rows: a pair at Jaccard 0.8 is a candidate with probability 0.992,
    at 0.88 with 0.99995) and keeps a candidate only when the Jaccard estimated from the two
    full signatures is >= --threshold. --exact compares a hash of a lightly canonical form
    instead.

    --keep first streams, keeping each group's first record. --keep longest keeps each group's
    longest record and so HOLDS ALL INPUT IN MEMORY until the end.

    --against FILE removes records that overlap a reference set (e.g. evaluation benchmarks);
    reference records are never output or indexed. With --containment C a record is removed
    when a window of --window shingles of it has a share >= C of its shingles in one reference
    (datasketch's LSH Ensemble finds candidates; every hit is verified exactly), which catches a
    paragraph lifted from a test item into longer text.

    --index PATH keeps what was kept across runs (a numpy .npz, no pickle, saved atomically at
    the end of a successful run; runs on one PATH take turns via PATH.lock).
    --index redis://HOST:PORT/DB[?name=NAME] shares one index between processes and machines;
    each batch's lookups run under a Redis lock, so concurrent workers keep exactly one copy.

    \b
    Examples:
        llmtools dedup < raw.jsonl > unique.jsonl
        llmtools dedup --exact --ignore-case --ignore-punctuation data.jsonl
        llmtools dedup --rejects dups.jsonl --id-field id -v data.jsonl > unique.jsonl
        llmtools dedup --mark data.jsonl | jq 'select(.is_duplicate)'
        llmtools dedup --against eval.jsonl --containment 0.5 train.jsonl > clean.jsonl
        llmtools dedup --index ~/dedup/web.npz --id-field url today.jsonl > new.jsonl
        llmtools dedup --index 'redis://127.0.0.1:6379/0?name=web' --id-field url part-3.jsonl
        llmtools dedup --engine spark --master 'local[8]' 'crawl/*.jsonl.gz' -o unique/ --rejects dups/

    --engine spark runs the same hashing as a Spark job: signatures per partition, a group-by
    on the LSH band keys, candidate pairs verified against --threshold, connected components
    (large-star/small-star) and the earliest (or longest) record of each component kept.
    Unlike the local run, a record connected to an earlier one through a chain of matches is a
    duplicate even if it does not match the kept record itself. --against references over
    256 MB (Jaccard or --containment) are signed on the cluster and joined by band key, with
    the same hits as locally (spark.llmtools.dedup.against=broadcast|join forces either).
    --index and --jobs are local.

    \b
    Exit codes: 0 ok, 2 bad option or an index built with other settings (a Redis index with
    other LSH bands than --bands/--recall-target ask for; a file index is re-banded), 3 bad
    input line (per --on-error) or an unreadable index or reference file, 4 the redis package
    is missing (--index redis://), or pyspark or Java (--engine spark).
    """
    from llmtools.ops import dedup as ops

    if containment is not None and not against:
        raise UsageError("--containment needs --against FILE")
    opts = ops.DedupOptions(
        field=io.field, mode="exact" if exact else "near", threshold=threshold, num_perm=num_perm,
        ngram=ngram, shingle=shingle, seed=seed, verify=verify, keep=keep, mark=mark, ignore_case=ignore_case,
        ignore_space=ignore_space, ignore_punct=ignore_punct, against=against, containment=containment,
        against_threshold=against_threshold, window=window, id_field=id_field, index=index, jobs=jobs,
        recall_target=recall_target, bands=bands,
    )
    if io.unbuffered:
        opts.chunk = 1  # live pipelines: decide each record as it arrives
    job = io.job(validate=ops.validator(opts.field, id_field), locate=True)  # record ids ask where()
    if engine.spark:
        from llmtools.engines import spark_dedup

        params = {k: getattr(opts, k) for k in ("mode", "threshold", "num_perm", "ngram", "shingle", "seed", "verify",
                                                 "keep", "mark", "ignore_case", "ignore_space", "ignore_punct", "recall_target", "bands",
                                                 "against", "containment", "id_field", "field")}
        stats = spark_dedup.run(engine, io, job, opts, params)
        job.summary(stats.rows(opts, job.counts["in"]), records=False)
        return
    record_id = ops.record_ids(id_field, job.where, single_input=len(job.inputs) == 1)
    _keep_freed_memory()
    # dedup does no linear algebra, but numpy's import starts an OpenBLAS thread per core,
    # which spins on the other cores (~0.1 CPU-second per run); a user's setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    deduper = ops.Deduper(opts)
    for note in deduper.notes:
        job.warn(note)
    ok = False
    try:
        with job:
            job.write_all(deduper.run(job.records(), record_id, job.reject))
        ok = True
    finally:
        deduper.close(ok)
    job.summary(deduper.stats.rows(opts, job.counts["in"]), records=False)
