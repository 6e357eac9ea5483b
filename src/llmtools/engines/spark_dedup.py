"""`dedup --engine spark`: exact and MinHash near-duplicate removal as Spark jobs.

The stages (each partition's records keep their input order, `order = partition << 40 | line`):

1. Per partition: parse and check the lines (the same `Job` code as locally), then, a chunk at a
   time, the local command's own functions: `digest` (exact), or `Shingler` signatures and the
   LSH band split of `DedupOptions.lsh_bands()` (near), so the same hash family, permutations and bands
   decide, and a threshold means what it means locally. `--against` references are checked
   here against a broadcast copy of the local `References`. The result is persisted.
2. Exact: group by digest; near: group by band key, and from each bucket the candidate pairs
   (each member with the bucket's first member and with the member before it), verified with
   the signature estimate (or, with --verify, the exact Jaccard of the shingle sets) against
   --threshold, as the local index does.
3. Connected components of the verified pairs by large-star/small-star (Kiveris et al. 2014),
   and one survivor per component: the earliest record (--keep first) or the longest, earliest
   on ties (--keep longest).
4. The decisions go back to the records: broadcast when they are few, else merged in order by
   a sort on `order` within the input's own partitions, so every part file still holds its
   input partition's records in order.

The one difference from the local command is documented in docs/dedup.md: locally a record is a
duplicate when it matches a record that was kept; here, when it is connected to an earlier
record through a chain of matches, so a chain A~B~C with A and C below the threshold removes C
here and keeps it locally.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator

from llmtools.engines import EngineConfig
from llmtools.engines.spark import (
    PART_SHIFT,
    Accumulators,
    PartitionJob,
    SparkRun,
    _add_counts,
    _manifest,
    first_lines,
    numbered_lines,
    raise_first_failure,
    spark_errors,
)
from llmtools.errors import BadInputError, UsageError
from llmtools.io import Job, dumps, get_field, get_text

MASK = (1 << PART_SHIFT) - 1
BROADCAST_LIMIT = 2_000_000  # decisions sent to every executor as one dict; above this, a sort-merge
# Verified pairs up to this many are joined into components on the driver (union-find: one
# collect instead of several shuffles a round); above it, large-star/small-star on the cluster.
DRIVER_COMPONENTS_LIMIT = 1_000_000
CHUNK = 1024
MAX_ROUNDS = 64

_SHINGLERS: dict[tuple, Any] = {}


def _shingler(opts: Any) -> Any:
    """One Shingler per worker process and settings (its permutations cost a little to make)."""
    from llmtools.ops import dedup as ops

    key = (opts.num_perm, opts.seed, opts.n, opts.shingle)
    if key not in _SHINGLERS:
        _SHINGLERS[key] = ops.Shingler(*key)
    return _SHINGLERS[key]


# --------------------------------------------------------------------------- stage 1: per partition


class SignTask:
    """Records of one partition -> items, in input order:
    ("r", order, record json, text length (-1: no text), key, band keys, id, contaminated, shingles)
    ("x", order, reject entry) for a bad line."""

    def __init__(self, opts: Any, bands: tuple[int, int] | None, refs: Any, sources: list[str], part_file: list[int],
                 acc: Accumulators, job_kw: dict) -> None:
        self.opts, self.bands, self.refs = opts, bands, refs
        self.sources, self.part_file, self.acc, self.job_kw = sources, part_file, acc, job_kw

    def __call__(self, gp: int, lines: Iterable[bytes]) -> Iterator[tuple]:
        seen = [0]
        source = self.sources[self.part_file[gp]]
        job = PartitionJob(source, numbered_lines(lines, seen), True, **self.job_kw)
        base = gp << PART_SHIFT
        try:
            # A chunk holds records and bad-line rejects in input order: (line, record, None)
            # or (line, None, reject entry).
            chunk: list[tuple[int, Any, Any]] = []
            pending = job.pending
            for rec in job.records():
                if pending:
                    chunk.extend((entry["line"] or 0, None, entry) for entry in pending)
                    pending.clear()
                chunk.append((int(job.where(rec, forget=True).rpartition(":")[2] or 0), rec, None))
                if len(chunk) >= CHUNK:
                    yield from self._sign(base, chunk)
                    chunk = []
            chunk.extend((entry["line"] or 0, None, entry) for entry in pending)
            pending.clear()
            yield from self._sign(base, chunk)
        except BadInputError as exc:
            _src, _, line = (exc.where or "").rpartition(":")
            self.acc.fails.add([(gp, int(line) if line.isdigit() else 0, source, exc.reason)])
        counts = Counter({"in": job.counts["in"], "bad": job.counts["bad"], "kept_bad": job.counts["kept_bad"]})
        counts.update({f"reason:{k}": v for k, v in job.reasons.items()})
        self.acc.counts.add(counts)
        self.acc.lines.add({gp: seen[0]})

    def _sign(self, base: int, chunk: list[tuple[int, Any, Any]]) -> Iterator[tuple]:
        import hashlib

        from llmtools.ops import dedup as ops

        opts = self.opts
        field, id_field = opts.field, opts.id_field
        texts = [get_text(rec, field) if rec is not None else None for _, rec, _ in chunk]
        live = [i for i, t in enumerate(texts) if t is not None]
        keys: dict[int, Any] = {}
        bands: dict[int, tuple] = {}
        sets: dict[int, bytes] = {}
        hits: dict[int, Any] = {}
        if live and (opts.mode == "near" or self.refs is not None):
            import numpy as np

            sh = _shingler(opts)
            h, starts = sh.shingle_arrays([texts[i] for i in live])
            sigs = sh.minhash_arrays(h, starts)
            runs = np.split(h, starts[1:])
            for i, sig, run in zip(live, sigs, runs):
                if self.refs is not None:
                    hits[i] = self.refs.check(run, sig)
                if opts.mode == "near":
                    raw = keys[i] = sig.tobytes()
                    b, r = self.bands  # type: ignore[misc]
                    # A band's key: its r values (as datasketch's LSH keys them) and its index,
                    # hashed to 64 bits the same way in every process.
                    bands[i] = tuple(int.from_bytes(hashlib.blake2b(j.to_bytes(2, "little") + raw[j * r * 4:(j + 1) * r * 4],
                                                                    digest_size=8).digest(), "little", signed=True)
                                     for j in range(b))
                    if opts.verify:
                        sets[i] = np.unique(run).tobytes()
        if opts.mode == "exact":
            for i in live:
                keys[i] = ops.digest(texts[i], opts)
        for i, (line, rec, entry) in enumerate(chunk):
            if rec is None:
                yield ("x", base | line, entry)
                continue
            rid = get_field(rec, id_field) if id_field else None
            text = texts[i]
            yield ("r", base | line, dumps(rec), -1 if text is None else len(text), keys.get(i), bands.get(i), rid,
                   hits.get(i), sets.get(i))


# --------------------------------------------------------------------------- stage 2: pairs


SMALL_BUCKET = 32  # a band bucket this small gives every pair, as the local index checks them all


def candidate_pairs(bucket: tuple[Any, Iterable[int]]) -> list[tuple[int, int]]:
    """(later, earlier) pairs of one band bucket: every pair of a small bucket (what the local
    index would check); in a larger one each member with the first and with the one before it
    (at most 2k pairs, not k^2)."""
    members = sorted(set(bucket[1]))
    if len(members) <= SMALL_BUCKET:
        return [(members[i], members[j]) for i in range(1, len(members)) for j in range(i)]
    out = []
    for i in range(1, len(members)):
        out.append((members[i], members[0]))
        if i > 1:
            out.append((members[i], members[i - 1]))
    return out


def similarity(threshold: float, verify: bool) -> Any:
    def sim(item: tuple) -> list[tuple[int, int, float]]:
        import numpy as np

        y, ((x, (sig_x, set_x)), (sig_y, set_y)) = item
        if verify and set_x is not None and set_y is not None:
            from llmtools.ops import dedup as ops

            value = ops.exact_jaccard(np.frombuffer(set_x, dtype=np.uint32), np.frombuffer(set_y, dtype=np.uint32))
        else:
            a, b = np.frombuffer(sig_x, dtype=np.uint32), np.frombuffer(sig_y, dtype=np.uint32)
            value = int((a == b).sum()) / len(a)
        return [(x, y, round(value, 4))] if value >= threshold else []

    return sim


# --------------------------------------------------------------------------- stage 3: components


def _large_star(group: tuple[int, Iterable[int]]) -> list[tuple[int, int]]:
    node, neighbours = group
    nodes = set(neighbours)
    low = min(min(nodes), node)
    return [(v, low) for v in nodes if v > node]


def _small_star(group: tuple[int, Iterable[int]]) -> list[tuple[int, int]]:
    node, neighbours = group
    nodes = set(neighbours) | {node}
    low = min(nodes)
    return [(v, low) for v in nodes if v != low]


def greedy_component(component: tuple[int, Iterable[tuple[int, int, float]]]) -> list[tuple[int, tuple[int, float]]]:
    """(dup, (kept, similarity)) for one component, decided as the local command decides: in
    input order, a record is a duplicate of the most similar record already kept that it
    matches (a verified edge), and is kept itself when it matches none. So a chain A~B~C whose
    ends are below the threshold keeps C."""
    root, edges = component
    best: dict[int, dict[int, float]] = {}
    for x, y, sim in edges:
        best.setdefault(max(x, y), {})[min(x, y)] = sim
    nodes = sorted({root, *best, *(e for adj in best.values() for e in adj)})
    kept: set[int] = set()
    out = []
    for node in nodes:
        matches = [(sim, -k) for k, sim in best.get(node, {}).items() if k in kept]
        if matches:
            sim, neg = max(matches)
            out.append((node, (-neg, sim)))
        else:
            kept.add(node)
    return out


def driver_components(pairs: list[tuple[int, int]]) -> dict[int, int]:
    """node -> smallest node of its component, for every node but the smallest (union-find)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: r for x in parent if (r := find(x)) != x}


def connected_components(edges: Any, partitions: int) -> tuple[Any, int]:
    """(node, smallest node of its component) for every node of `edges` that is not the
    smallest itself, by alternating large-star and small-star until nothing changes; and the
    number of rounds."""
    current = edges.map(lambda e: (max(e), min(e))).distinct(partitions).cache()
    rounds = 0
    while True:
        rounds += 1
        large = (current.flatMap(lambda e: [e, (e[1], e[0])]).groupByKey(partitions)
                 .flatMap(_large_star).distinct(partitions))
        small = (large.map(lambda e: (max(e), min(e))).groupByKey(partitions).flatMap(_small_star)
                 .distinct(partitions).cache())
        settled = small.subtract(current, partitions).union(current.subtract(small, partitions)).isEmpty()
        current.unpersist()
        current = small
        if settled or rounds >= MAX_ROUNDS:
            return current, rounds


# --------------------------------------------------------------------------- stage 4: output


class Emit:
    """The items of one partition, in order, with their decisions -> (0, output line) and
    (1, order, reject entry)."""

    def __init__(self, opts: Any, sources: list[str], part_file: list[int], starts: list[int], single: bool,
                 decisions: Any, acc: Accumulators) -> None:
        self.opts, self.sources, self.part_file, self.starts = opts, sources, part_file, starts
        self.single, self.decisions, self.acc = single, decisions, acc

    def rec_id(self, order: int, rid: Any) -> Any:
        if rid is not None:
            return rid
        gp = order >> PART_SHIFT
        line = self.starts[gp] + (order & MASK)
        return line if self.single else f"{self.sources[self.part_file[gp]]}:{line}"

    def where(self, order: int) -> tuple[str, int]:
        gp = order >> PART_SHIFT
        return self.sources[self.part_file[gp]], self.starts[gp] + (order & MASK)

    def run(self, items: Iterable[tuple], lookup: Any) -> Iterator[tuple]:
        import orjson

        opts, mark = self.opts, self.opts.mark
        counts: Counter = Counter()
        for item in items:
            if item[0] == "x":
                entry = item[2]
                entry["line"] = self.where(item[1])[1]
                yield (1, dumps(entry))
                continue
            _, order, raw, length, _key, _bands, rid, hit, _set = item
            if length < 0:
                counts["unchecked"] += 1
                counts["out"] += 1
                yield (0, raw)
                continue
            if hit is not None:
                counts["contaminated"] += 1
                measure = "containment" if opts.containment is not None else "jaccard"
                rec = orjson.loads(raw)
                if mark:
                    rec["contaminated"] = {"ref": hit[0], "similarity": hit[1], "measure": measure}
                    counts["out"] += 1
                    yield (0, dumps(rec))
                else:
                    counts["dropped"] += 1
                    counts["reason:contaminated"] += 1
                    yield (1, self._reject(order, "contaminated", rec, dup_of=hit[0], similarity=hit[1], measure=measure))
                continue
            decision = lookup(order)
            if decision is None:
                counts["unique"] += 1
                counts["out"] += 1
                if mark:
                    rec = orjson.loads(raw)
                    rec["dup_cluster"] = self.rec_id(order, rid)
                    rec["is_duplicate"] = False
                    yield (0, dumps(rec))
                else:
                    yield (0, raw)
                continue
            kept, kept_rid, sim = decision
            kept_id = self.rec_id(kept, kept_rid)
            counts["duplicates"] += 1
            rec = orjson.loads(raw)
            if mark:
                rec["dup_cluster"] = kept_id
                rec["is_duplicate"] = True
                rec["dup_similarity"] = sim
                counts["out"] += 1
                yield (0, dumps(rec))
            else:
                counts["dropped"] += 1
                counts["reason:duplicate"] += 1
                yield (1, self._reject(order, "duplicate", rec, dup_of=kept_id, similarity=sim))
        self.acc.counts.add(counts)

    def _reject(self, order: int, reason: str, rec: dict, **extra: Any) -> bytes:
        source, line = self.where(order)
        entry: dict[str, Any] = {"reason": reason, "source": source, "line": line}
        entry.update(extra)
        entry["record"] = rec
        return dumps(entry)

    def broadcast(self, table: Any) -> Any:
        def run(items: Iterable[tuple]) -> Iterator[tuple]:
            get = table.value.get
            return self.run(items, get)

        return run

    def merged(self, items: Iterable[tuple]) -> Iterator[tuple]:
        """Items and decisions of one partition, sorted by (order, 0 = decision / 1 = item)."""
        pending: dict[int, Any] = {}

        def stream() -> Iterator[tuple]:
            for (order, tag), value in items:
                if tag == 0:
                    pending[order] = value
                else:
                    yield value

        return self.run(stream(), lambda order: pending.pop(order, None))


# --------------------------------------------------------------------------- the driver


def run(engine: EngineConfig, io: Any, job: Job, opts: Any, params: dict) -> Any:
    """Deduplicate `io`'s input files on Spark; returns a DedupStats for the summary."""
    from llmtools.ops import dedup as ops

    engine.check_io(io.inputs, io.output)
    if opts.index:
        raise UsageError("--index is for local runs: on Spark the whole input is deduplicated in one job")
    if opts.jobs > 1:
        raise UsageError("--jobs is for local runs: on Spark the executors' cores do the work (--master local[N])")
    if not 0.0 < opts.threshold <= 1.0:
        raise UsageError("--threshold must be in (0, 1]")
    refs = None
    if opts.against:
        refs = ops.References(ops.Shingler(opts.num_perm, opts.seed, opts.n, opts.shingle), opts)
    bands = opts.lsh_bands() if opts.mode == "near" else None  # the same bands as the local run
    with SparkRun(engine, "dedup", quiet=io.quiet) as spark_run:
        sc = spark_run.sc
        files = spark_run.resolve(io.inputs)
        out_uri = spark_run.check_output(io.output, "-o")
        rej_uri = spark_run.check_output(io.rejects, "--rejects") if io.rejects else None
        lines, part_file = spark_run.read(files)
        nparts = len(part_file)
        shuffle = max(2, sc.defaultParallelism)
        acc = Accumulators(sc)
        from pyspark import StorageLevel

        sources = [name for name, _ in files]
        job_kw = dict(field=job.field, on_error=job.on_error, validate=job.validate, locate=True)
        refs_b = sc.broadcast(refs) if refs is not None else None
        task = SignTask(opts, bands, None, sources, part_file, acc, job_kw)
        if refs_b is not None:
            def signed(gp: int, it: Iterable[bytes], task: SignTask = task) -> Iterator[tuple]:
                task.refs = refs_b.value
                return task(gp, it)
        else:
            signed = task
        try:
            with spark_errors():
                items = lines.mapPartitionsWithIndex(signed).persist(StorageLevel.MEMORY_AND_DISK)
                items.count()
                raise_first_failure(acc.fails.value, part_file, acc.lines.value)
                starts = first_lines(part_file, acc.lines.value)
                decisions, rounds = _decide(items, opts, shuffle)
                stats = _finish(spark_run, items, decisions, opts, sources, part_file, starts, len(files) == 1, acc,
                                out_uri, rej_uri, nparts)
        except BaseException:
            spark_run.remove(out_uri)
            if rej_uri is not None:
                spark_run.remove(rej_uri)
            raise
        _add_counts(job, acc.counts.value)
        params = dict(params, components_rounds=rounds)
        if rej_uri is not None:
            spark_run.commit(rej_uri, _manifest(spark_run, "dedup", files, params, job, engine, "rejects"))
        spark_run.commit(out_uri, _manifest(spark_run, "dedup", files, params, job, engine, "output", nparts))
        return stats


def _decide(items: Any, opts: Any, shuffle: int) -> tuple[Any, int]:
    """(order, (kept order, kept id or None, similarity)) for every duplicate; and CC rounds."""
    recs = items.filter(lambda t: t[0] == "r" and t[3] >= 0 and t[7] is None)
    longest = opts.keep == "longest"

    def better(a: tuple, b: tuple) -> tuple:  # (order, length): the survivor of two
        if longest:
            return a if (a[1], -a[0]) >= (b[1], -b[0]) else b
        return a if a[0] <= b[0] else b

    if opts.mode == "exact":
        keyed = recs.map(lambda t: (t[4], (t[1], t[3])))
        best = keyed.reduceByKey(better, shuffle)
        dups = keyed.join(best, shuffle).filter(lambda kv: kv[1][0][0] != kv[1][1][0])
        pairs = dups.map(lambda kv: (kv[1][1][0], (kv[1][0][0], 1.0)))  # (kept, (dup, sim))
        rounds = 0
    else:
        buckets = recs.flatMap(lambda t: [(k, t[1]) for k in t[5]]).groupByKey(shuffle)
        cands = buckets.flatMap(candidate_pairs).distinct(shuffle).persist()
        # Only the records in a candidate pair need their signature shipped for the two joins:
        # when they are few enough to broadcast their orders, the others are left out first.
        sigs = _only(recs, cands.flatMap(lambda p: p).distinct(shuffle)).map(lambda t: (t[1], (t[4], t[8]))).persist()
        first = cands.join(sigs, shuffle)  # (x, (y, sig x))
        both = first.map(lambda kv: (kv[1][0], (kv[0], kv[1][1]))).join(sigs, shuffle)
        edges = both.flatMap(similarity(opts.threshold, opts.verify)).persist()
        sc = items.context
        limit = int(sc.getConf().get("spark.llmtools.dedup.driverComponentsLimit", str(DRIVER_COMPONENTS_LIMIT)))
        n_edges = edges.count()
        if n_edges <= limit:
            roots = driver_components(edges.map(lambda e: (e[0], e[1])).collect())
            labels, rounds = sc.parallelize(sorted(roots.items()), shuffle), 0
        else:
            labels, rounds = connected_components(edges.map(lambda e: (e[0], e[1])), shuffle)
        if longest:
            lengths = recs.map(lambda t: (t[1], t[3]))
            members = labels.flatMap(lambda kv: [kv, (kv[1], kv[1])]).distinct(shuffle)  # (node, root), roots too
            sized = members.join(lengths, shuffle).map(lambda kv: (kv[1][0], (kv[0], kv[1][1])))  # (root, (node, len))
            kept = sized.reduceByKey(better, shuffle)  # (root, (survivor, len))
            assigned = sized.join(kept, shuffle).filter(lambda kv: kv[1][0][0] != kv[1][1][0]) \
                .map(lambda kv: (kv[1][0][0], kv[1][1][0]))  # (dup, survivor)
        else:
            assigned = labels  # (dup, root = earliest)
        if longest:
            # A duplicate must match its survivor itself (locally dup_of is always a kept
            # record); the similarity reported is the one to the survivor.
            direct = assigned.join(sigs, shuffle).map(lambda kv: (kv[1][0], (kv[0], kv[1][1])))  # (survivor, (dup, sig))
            checked = direct.join(sigs, shuffle).flatMap(similarity(opts.threshold, opts.verify))  # (dup, survivor, sim)
            pairs = checked.map(lambda e: (e[1], (e[0], e[2])))  # (kept, (dup, sim))
        else:
            # Within each component, the local command's greedy decision over the verified edges.
            by_root = edges.map(lambda e: (e[0], e)).join(assigned, shuffle).map(lambda kv: (kv[1][1], kv[1][0]))
            pairs = by_root.groupByKey(shuffle).flatMap(greedy_component) \
                .map(lambda kv: (kv[1][0], (kv[0], kv[1][1])))  # (kept, (dup, sim))
    if opts.id_field:
        ids = _only(recs, pairs.keys().distinct(shuffle)).map(lambda t: (t[1], t[6]))
        decisions = pairs.join(ids, shuffle).map(lambda kv: (kv[1][0][0], (kv[0], kv[1][1], kv[1][0][1])))
    else:
        decisions = pairs.map(lambda kv: (kv[1][0], (kv[0], None, kv[1][1])))
    return decisions, rounds


def _only(recs: Any, orders: Any) -> Any:
    """`recs` whose order is in the RDD `orders`, filtered against a broadcast set when there
    are at most BROADCAST_LIMIT of them (else all of `recs`: the join that follows filters)."""
    sc = recs.context
    limit = int(sc.getConf().get("spark.llmtools.dedup.broadcastLimit", str(BROADCAST_LIMIT)))
    if orders.count() > limit:
        return recs
    wanted = sc.broadcast(frozenset(orders.collect()))
    return recs.filter(lambda t: t[1] in wanted.value)


def _finish(spark_run: SparkRun, items: Any, decisions: Any, opts: Any, sources: list[str], part_file: list[int],
            starts: list[int], single: bool, acc: Accumulators, out_uri: str, rej_uri: str | None, nparts: int) -> Any:
    from pyspark import StorageLevel

    from llmtools.ops import dedup as ops

    sc = spark_run.sc
    decisions = decisions.persist(StorageLevel.MEMORY_AND_DISK)
    count = decisions.count()
    limit = int(sc.getConf().get("spark.llmtools.dedup.broadcastLimit", str(BROADCAST_LIMIT)))
    emit = Emit(opts, sources, part_file, starts, single, None, acc)
    if count <= limit:
        table = sc.broadcast(dict(decisions.collect()))
        tagged = items.mapPartitions(emit.broadcast(table))
    else:
        keyed = items.map(lambda t: ((t[1], 1), t)).union(decisions.map(lambda kv: ((kv[0], 0), kv[1])))
        tagged = keyed.repartitionAndSortWithinPartitions(nparts, lambda key: key[0] >> PART_SHIFT).mapPartitions(emit.merged)
    if rej_uri is not None:
        tagged = tagged.persist(StorageLevel.MEMORY_AND_DISK)
    spark_run.save(tagged.filter(lambda t: t[0] == 0).map(lambda t: t[1]), out_uri)
    if rej_uri is not None:
        spark_run.save(tagged.filter(lambda t: t[0] == 1).map(lambda t: t[1]), rej_uri)
        tagged.unpersist()
    counts = acc.counts.value
    stats = ops.DedupStats(seen=counts["unique"] + counts["duplicates"] + counts["contaminated"], unique=counts["unique"],
                           duplicates=counts["duplicates"], contaminated=counts["contaminated"], unchecked=counts["unchecked"])
    top = decisions.map(lambda kv: ((kv[1][0], kv[1][1]), 1)).reduceByKey(lambda a, b: a + b) \
        .takeOrdered(5, key=lambda kv: (-kv[1], kv[0][0]))
    for (kept, rid), n in top:
        stats.clusters[emit.rec_id(kept, rid)] = n
    decisions.unpersist()
    items.unpersist()
    return stats
