"""Exact and near-duplicate removal, and decontamination against reference sets.

`dedup(records, opts, record_id=..., on_drop=...)` yields the records to keep, in input order.
Near-duplicates are found with LSH bands over datasketch MinHash signatures computed in
batches (see minhash.py): the bands are chosen for recall (a pair at the threshold is a
candidate with probability >= `recall_target`, see `minhash.recall_bands`) and every candidate
is verified on its full signature (or exactly, with `verify`). References given with `against`
are checked with the same bands (Jaccard) or datasketch's MinHashLSHEnsemble (containment) and
verified exactly. Where the kept set lives (memory, an .npz file, Redis) is index.py's business.
"""

from __future__ import annotations

import gc
import hashlib
import unicodedata
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from llmtools.errors import BadInputError, UsageError
from llmtools.io import check_text, get_field, get_text, iter_lines, line_text, source_name

CHUNK = 1024


@dataclass
class DedupOptions:
    field: str = "text"
    mode: str = "near"  # near | exact
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int | None = None  # None: 5 for word and for char shingles
    shingle: str = "word"  # word | char
    seed: int = 1
    verify: bool = False
    keep: str = "first"  # first | longest
    mark: bool = False
    ignore_case: bool = False
    ignore_space: bool = True
    ignore_punct: bool = False
    against: tuple[str, ...] = ()
    containment: float | None = None
    against_threshold: float | None = None  # Jaccard for --against; default: threshold
    window: int = 32
    id_field: str | None = None
    index: str | None = None
    jobs: int = 1
    chunk: int = CHUNK
    recall_target: float = 0.99  # P(candidate | J = threshold) the LSH bands are chosen for
    bands: tuple[int, int] | None = None  # explicit (bands, rows); None: chosen by recall_target

    @property
    def n(self) -> int:
        return self.ngram if self.ngram is not None else 5

    def lsh_bands(self, threshold: float | None = None) -> tuple[int, int]:
        """(bands, rows) for `threshold` (default: --threshold): the explicit `bands`, else the
        fewest, longest bands that make a pair at the threshold a candidate with probability
        >= recall_target."""
        if self.bands is not None:
            return self.bands
        from llmtools.ops.dedup.minhash import recall_bands

        return recall_bands(self.threshold if threshold is None else threshold, self.num_perm, self.recall_target)

    def header(self) -> dict:
        """The settings an index depends on: reusing it with others would silently be wrong."""
        if self.mode == "exact":
            return {"format": "llmtools-dedup-index", "version": 1, "mode": "exact", "ignore_case": self.ignore_case,
                    "ignore_space": self.ignore_space, "ignore_punct": self.ignore_punct}
        return {"format": "llmtools-dedup-index", "version": 1, "mode": "near", "num_perm": self.num_perm,
                "seed": self.seed, "ngram": self.n, "shingle": self.shingle, "threshold": self.threshold,
                "scheme": "affine32", "word_hash": "poly64-fnv"}


@dataclass
class DedupStats:
    seen: int = 0
    unique: int = 0
    duplicates: int = 0
    contaminated: int = 0
    unchecked: int = 0
    index_before: int = 0
    index_after: int = 0
    bands: str | None = None  # "16x6, P(candidate | J=0.8) = 0.992"
    clusters: Counter = field(default_factory=Counter)

    def largest(self, n: int = 5) -> list[tuple[Any, int]]:
        """(kept id, cluster size including the kept record), biggest first."""
        return [(k, c + 1) for k, c in sorted(self.clusters.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]]

    def rows(self, opts: DedupOptions, records_in: int) -> dict[str, Any]:
        """The summary's rows."""
        rows: dict[str, Any] = {"in": records_in, "unique": self.unique, "duplicates": self.duplicates}
        if opts.against:
            rows["contaminated"] = self.contaminated
        if opts.index:
            rows["index before"] = self.index_before
            rows["index after"] = self.index_after
        if self.bands:
            rows["lsh bands"] = self.bands
        largest = self.largest()
        rows["largest clusters"] = ", ".join(f"{k} ({n})" for k, n in largest) if largest else "none"
        return rows


# --------------------------------------------------------------------------- records in


def validator(field: str, id_field: str | None) -> Callable[[dict], str | None]:
    """Why a record cannot be deduplicated (its text is not a string, its id not a scalar), or None."""

    def validate(record: dict) -> str | None:
        reason = check_text(record, field)
        if reason is None and id_field:
            value = get_field(record, id_field)
            if value is None:
                return f"missing id field '{id_field}'"
            if isinstance(value, (dict, list)):
                return f"id field '{id_field}' is {type(value).__name__}, not a scalar"
        return reason

    return validate


def record_ids(id_field: str | None, where: Callable[[dict], str], single_input: bool) -> Callable[[dict], Any]:
    """Each record's id: its id field, else where it was read (`where(record)` = "source:line"),
    as a line number when there is one input."""

    def record_id(record: dict) -> Any:
        if id_field:
            value = get_field(record, id_field)
            if value is not None:
                return value
        loc = where(record)
        _source, _, line = loc.rpartition(":")
        return int(line) if single_input and line.isdigit() else loc

    return record_id


# --------------------------------------------------------------------------- exact


def canonical(text: str, ignore_case: bool, ignore_space: bool, ignore_punct: bool) -> str:
    text = unicodedata.normalize("NFC", text)
    if ignore_case:
        text = text.casefold()
    if ignore_punct:
        import regex

        text = regex.sub(r"\p{P}+", "", text)
    if ignore_space:
        text = " ".join(text.split())
    return text


def digest(text: str, opts: DedupOptions) -> bytes:
    canon = canonical(text, opts.ignore_case, opts.ignore_space, opts.ignore_punct)
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).digest()


# --------------------------------------------------------------------------- references


def _reference_lines(path: str) -> Any:
    """(line number, raw JSONL line) of a reference file, or, for Parquet, CSV and the other
    formats io reads by extension, (row number, record)."""
    from llmtools import formats
    from llmtools.io import read_jsonl

    if formats.detect(path) == "jsonl":
        return iter_lines(path)
    return enumerate(read_jsonl(path), 1)


CONTAINMENT_PARTITIONS = 8  # the LSH Ensemble's num_part


def containment_ensemble(containment: float, num_perm: int, recall_target: float) -> Any:
    """The (empty) datasketch MinHashLSHEnsemble that --containment references are indexed in;
    Spark's band-key join (engines/spark_dedup.py) reads its bands from the same object."""
    from datasketch import MinHashLSHEnsemble

    # datasketch picks each partition's bands by weighing false-positive against
    # false-negative probability; at its default (0.5, 0.5) a window at containment 0.8
    # was a candidate only ~half the time. Weighing misses by recall_target made it
    # 0.999+ (benchmarks/dedup/README.md); every candidate is verified exactly anyway.
    fn = recall_target
    weights = (1.0 - fn, fn) if (1.0 - fn) + fn == 1.0 else (1.0 - fn, 1.0 - (1.0 - fn))
    return MinHashLSHEnsemble(threshold=containment, num_perm=num_perm, num_part=CONTAINMENT_PARTITIONS, weights=weights)


def window_starts(length: int, window: int) -> list[int] | None:
    """Where the --containment windows of a record with `length` shingles begin (half-window
    steps, the last one flush with the end); None: the whole record is one window."""
    if window <= 0 or length <= window:
        return None
    step = max(1, window // 2)
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def containment_windows(h: Any, window: int) -> list[Any]:
    """The windows of shingle sequence `h` that --containment checks, each against the references."""
    starts = window_starts(len(h), window)
    return [h] if starts is None else [h[s : s + window] for s in starts]


class References:
    """The --against sets: never output, never indexed; every hit is verified exactly."""

    def __init__(self, shingler: Any, opts: DedupOptions) -> None:
        import numpy as np

        self.np = np
        self.sh = shingler
        self.opts = opts
        self.containment = opts.containment
        self.threshold = opts.containment if opts.containment is not None else (opts.against_threshold or opts.threshold)
        self.ids: list[Any] = []
        self.sets: list[Any] = []
        texts: list[str] = []
        for path in opts.against:
            name = source_name(path)
            for lineno, raw in _reference_lines(path):
                value, text, reason = line_text(raw, opts.field)
                if reason:
                    raise BadInputError(reason, where=f"{name}:{lineno}")
                ref_id = value.get(opts.id_field) if opts.id_field and isinstance(value, dict) else None
                self.ids.append(ref_id if ref_id is not None else f"{name}:{lineno}")
                texts.append(text)
        if not texts:
            raise UsageError("--against: the reference files hold no records")
        sigs = []
        for i in range(0, len(texts), CHUNK):
            h, starts = shingler.shingle_arrays(texts[i : i + CHUNK])
            sigs.append(shingler.minhash_arrays(h, starts))
            for run in np.split(h, starts[1:]):
                self.sets.append(np.unique(run))
        sig = np.concatenate(sigs)
        if self.containment is not None:
            self.lsh = containment_ensemble(self.containment, shingler.num_perm, opts.recall_target)
            self.lsh.index([(k, shingler.minhash(sig[k]), len(self.sets[k])) for k in range(len(texts))])
        else:
            from llmtools.ops.dedup.bands import BandTable

            self.bands = opts.lsh_bands(self.threshold)
            self.table = BandTable(shingler.num_perm, *self.bands)
            self.table.insert_many(sig, 0)

    def __getstate__(self) -> dict:  # picklable (a Spark broadcast): without the numpy module
        state = dict(self.__dict__)
        del state["np"]
        return state

    def __setstate__(self, state: dict) -> None:
        import numpy as np

        self.__dict__.update(state)
        self.np = np

    def _windows(self, h: Any) -> list[Any]:
        if self.containment is None:
            return [h]
        return containment_windows(h, self.opts.window)

    def band_keys(self, sigs: Any) -> list[Any]:
        """Band keys of a batch's signatures for `check` (Jaccard references only)."""
        return self.table.keys(sigs) if self.containment is None else [None] * len(sigs)

    def check(self, shingles: Any, signature: Any, keys: list[int] | None = None) -> tuple[Any, float] | None:
        """The best reference the record overlaps at or above the threshold, with the overlap."""
        np = self.np
        best: tuple[float, int] | None = None
        if self.containment is None:
            from llmtools.ops.dedup.index import exact_jaccard

            cands = self.table.query(keys if keys is not None else self.table.keys(signature[None, :])[0])
            query = np.unique(shingles) if cands else None
            for k in cands:
                sim = exact_jaccard(query, self.sets[k])
                if sim >= self.threshold and (best is None or (sim, -k) > (best[0], -best[1])):
                    best = (sim, k)
        else:
            windows = self._windows(shingles)
            if len(windows) == 1:
                sigs = signature[None, :]
            else:
                starts = np.cumsum([0] + [len(x) for x in windows[:-1]])
                sigs = self.sh.minhash_arrays(np.concatenate(windows), starts)
            for win, sig in zip(windows, sigs):
                query = np.unique(win)
                for k in set(self.lsh.query(self.sh.minhash(sig), len(query))):
                    inside = len(np.intersect1d(query, self.sets[k], assume_unique=True)) / len(query)
                    if inside >= self.threshold and (best is None or (inside, -k) > (best[0], -best[1])):
                        best = (inside, k)
        return None if best is None else (self.ids[best[1]], round(best[0], 4))


# --------------------------------------------------------------------------- the run


@dataclass
class _Item:
    record: dict
    rec_id: Any
    text: str | None
    key: Any = None  # signature row or digest
    sig: Any = None
    shingles: Any = None
    hit: tuple[Any, float] | None = None
    contaminated: tuple[Any, float] | None = None


class Deduper:
    """Holds the index, references and worker pool for one run; `run()` is the generator."""

    def __init__(self, opts: DedupOptions) -> None:
        if opts.keep not in ("first", "longest"):
            raise UsageError("--keep must be first or longest")
        if not 0.0 < opts.threshold <= 1.0:
            raise UsageError("--threshold must be in (0, 1]")
        if opts.containment is not None and not 0.0 < opts.containment <= 1.0:
            raise UsageError("--containment must be in (0, 1]")
        if not 0.0 < opts.recall_target < 1.0:
            raise UsageError("--recall-target must be in (0, 1)")
        if opts.bands is not None:
            b, r = opts.bands
            if b < 1 or r < 1 or b * r > opts.num_perm:
                raise UsageError(f"--bands {b}x{r} needs {b * r} signature rows; --num-perm is {opts.num_perm}")
        self.opts = opts
        self.stats = DedupStats()
        self.notes: list[str] = []  # for people (the command prints them as warnings)
        self.shingler = None
        self.store = None
        self.pool = None
        needs_shingles = opts.mode == "near" or bool(opts.against)
        if needs_shingles:
            from llmtools.ops.dedup.minhash import Shingler

            self.shingler = Shingler(opts.num_perm, opts.seed, opts.n, opts.shingle)
        self.refs = References(self.shingler, opts) if opts.against else None
        self.index = self._open_index()

    def _open_index(self) -> Any:
        from llmtools.ops.dedup import index as di

        opts = self.opts
        target = opts.index
        near = opts.mode != "exact"
        bands = opts.lsh_bands() if near else None
        header = dict(opts.header(), bands=list(bands)) if near else opts.header()
        if target and target.startswith(("redis://", "rediss://")):
            explicit = opts.bands is not None or opts.recall_target != DedupOptions.recall_target
            client, config, base, bands, note = di.open_redis(target, opts.header(), bands, explicit)
            if note:
                self.notes.append(note)
            index = di.RedisNearIndex(self.shingler, opts.threshold, client, base, config, bands) if near else di.RedisExactIndex(client, base)
            self.stats.index_before = len(index)
            self._describe(bands)
            return index
        index = di.NearIndex(self.shingler, opts.threshold, verify=opts.verify, bands=bands) if near else di.ExactIndex()
        self._describe(bands)
        if target:
            self.store = di.FileStore(target, header)
            self.store.lock()
            self.stats.index_before = self.store.load(index)
        return index

    def _describe(self, bands: tuple[int, int] | None) -> None:
        if bands:
            from llmtools.ops.dedup.minhash import candidate_probability

            t = self.opts.threshold
            self.stats.bands = f"{bands[0]}x{bands[1]} (P(candidate | J={t:g}) = {candidate_probability(t, *bands):.3f})"

    def close(self, ok: bool) -> None:
        """Save a file index (only after a successful run) and release everything."""
        try:
            if self.pool is not None:
                self.pool.terminate() if not ok else self.pool.close()
                self.pool.join()
            if self.store is not None and ok:
                self.store.save(self.index)
        finally:
            if self.store is not None:
                self.store.unlock()
        self.stats.index_after = len(self.index)

    # -- signatures, possibly in worker processes, order preserved
    def _signed(self, chunks: Iterable[list[_Item]]) -> Iterator[list[_Item]]:
        opts = self.opts
        want = opts.verify or self.refs is not None
        if opts.mode == "exact":
            for items in chunks:
                live = [it for it in items if it.text is not None]
                for it in live:
                    it.key = digest(it.text, opts)
                if self.refs is not None and live:
                    h, starts = self.shingler.shingle_arrays([it.text for it in live])
                    sigs = self.shingler.minhash_arrays(h, starts)
                    for it, run, sig in zip(live, self.np_split(h, starts), sigs):
                        it.shingles, it.sig = run, sig
                yield items
            return
        if opts.jobs <= 1:
            for items in chunks:
                live = [it for it in items if it.text is not None]
                if live:
                    h, starts = self.shingler.shingle_arrays([it.text for it in live])
                    self._attach(live, self.shingler.minhash_arrays(h, starts), (h, starts) if want else None)
                yield items
            return
        import multiprocessing as mp

        from llmtools.ops.dedup import minhash

        params = dict(num_perm=opts.num_perm, seed=opts.seed, ngram=opts.n, unit=opts.shingle)
        ctx = mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork")
        self.pool = ctx.Pool(opts.jobs, initializer=minhash._init_worker, initargs=(params,))
        pending: deque = deque()
        for items in chunks:
            live = [it for it in items if it.text is not None]
            task = self.pool.apply_async(minhash._worker_batch, (([it.text for it in live], want),)) if live else None
            pending.append((items, live, task))
            while len(pending) > 2 * opts.jobs:
                yield self._finish(*pending.popleft())
        while pending:
            yield self._finish(*pending.popleft())

    def _finish(self, items: list[_Item], live: list[_Item], task: Any) -> list[_Item]:
        if task is not None:
            sigs, sh = task.get()
            self._attach(live, sigs, sh)
        return items

    def np_stack(self, rows: list[Any]) -> Any:
        import numpy as np

        return np.stack(rows)

    def np_split(self, h: Any, starts: Any) -> list[Any]:
        import numpy as np

        return np.split(h, starts[1:])

    def _attach(self, live: list[_Item], sigs: Any, sh: Any) -> None:
        runs = self.np_split(*sh) if sh is not None else [None] * len(live)
        for it, sig, run in zip(live, sigs, runs):
            it.key = sig
            it.sig = sig
            it.shingles = run

    # -- decisions
    def _check_refs(self, items: list[_Item]) -> None:
        if self.refs is None:
            return
        live = [it for it in items if it.text is not None]
        if not live:
            return
        keys = self.refs.band_keys(self.np_stack([it.sig for it in live]))
        for it, k in zip(live, keys):
            it.contaminated = self.refs.check(it.shingles, it.sig, k)

    def _claim(self, items: list[_Item]) -> None:
        todo = [it for it in items if it.text is not None and it.contaminated is None]
        if self.opts.mode == "exact":
            hits = self.index.claim([(it.key, it.rec_id) for it in todo])
        else:
            hits = self.index.claim([(it.key, it.rec_id, it.shingles) for it in todo])
        for it, hit in zip(todo, hits):
            it.hit = hit

    def _emit(self, items: list[_Item], on_drop: Callable[..., None]) -> Iterator[dict]:
        opts, st = self.opts, self.stats
        for it in items:
            rec = it.record
            if it.text is None:
                st.unchecked += 1
                yield rec
                continue
            st.seen += 1
            if it.contaminated is not None:
                st.contaminated += 1
                ref, sim = it.contaminated
                if opts.mark:
                    rec["contaminated"] = {"ref": ref, "similarity": sim, "measure": "containment" if opts.containment is not None else "jaccard"}
                    yield rec
                else:
                    on_drop(rec, "contaminated", dup_of=ref, similarity=sim,
                            measure="containment" if opts.containment is not None else "jaccard")
                continue
            if it.hit is None:
                st.unique += 1
                if opts.mark:
                    rec["dup_cluster"] = it.rec_id
                    rec["is_duplicate"] = False
                yield rec
                continue
            kept, sim = it.hit
            st.duplicates += 1
            st.clusters[kept] += 1
            if opts.mark:
                rec["dup_cluster"] = kept
                rec["is_duplicate"] = True
                rec["dup_similarity"] = sim
                yield rec
            else:
                on_drop(rec, "duplicate", dup_of=kept, similarity=sim)

    def run(self, records: Iterable[dict], record_id: Callable[[dict], Any], on_drop: Callable[..., None], chunk: int | None = None) -> Iterator[dict]:
        # The index is millions of small long-lived objects (datasketch's band sets and keys).
        # Python's full (oldest-generation) collections rescan all of them every time the heap
        # grows by a quarter: 10-20% of a run, for objects that hold no cycles. Young
        # generations are still collected; full collections resume when the run ends.
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
        try:
            yield from self._run(records, record_id, on_drop, chunk)
        finally:
            gc.set_threshold(*thresholds)

    def _run(self, records: Iterable[dict], record_id: Callable[[dict], Any], on_drop: Callable[..., None], chunk: int | None = None) -> Iterator[dict]:
        size = chunk or self.opts.chunk
        chunks = _chunks(records, record_id, self.opts.field, size)
        if self.opts.keep == "first":
            for items in self._signed(chunks):
                self._check_refs(items)
                self._claim(items)
                yield from self._emit(items, on_drop)
            return
        # keep longest: every record is held until the end (memory grows with the input).
        everything: list[_Item] = []
        for items in self._signed(chunks):
            self._check_refs(items)
            everything.extend(items)
        order = sorted(
            (i for i, it in enumerate(everything) if it.text is not None and it.contaminated is None),
            key=lambda i: (-len(everything[i].text), i),
        )
        for lo in range(0, len(order), size):
            self._claim([everything[i] for i in order[lo : lo + size]])
        yield from self._emit(everything, on_drop)


def _chunks(records: Iterable[dict], record_id: Callable[[dict], Any], field: str, size: int) -> Iterator[list[_Item]]:
    buf: list[_Item] = []
    for rec in records:
        buf.append(_Item(rec, record_id(rec), get_text(rec, field)))
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def dedup(records: Iterable[dict], opts: DedupOptions, record_id: Callable[[dict], Any] | None = None,
          on_drop: Callable[..., None] | None = None) -> Iterator[dict]:
    """Convenience wrapper: run a Deduper over `records` (ids default to 1-based positions)."""
    counter = iter(range(1, 1 << 62))
    rid = record_id or (lambda rec: next(counter))
    d = Deduper(opts)
    ok = False
    try:
        yield from d.run(records, rid, on_drop or (lambda *a, **k: None))
        ok = True
    finally:
        d.close(ok)
