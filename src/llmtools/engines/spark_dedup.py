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
   --threshold, as the local index does. Near mode keeps each chunk's signatures and band keys
   as arrays (`Block`): the group-by is a shuffle of arrays sorted and paired in numpy, and
   below the driver limits the candidates' signatures are collected and the pairs verified on
   the driver; above them, the pairs are made and verified in the JVM (DataFrame joins).
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
from typing import Any, Iterable, Iterator, NamedTuple

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
# Near mode: up to this many candidate pairs (16 B each) are collected and verified on the
# driver, when the candidates' signatures take at most DRIVER_SIGNATURE_BYTES there; above
# either, the pairs are made and verified in the JVM (DataFrame joins).
DRIVER_CANDIDATES_LIMIT = 8_000_000
DRIVER_SIGNATURE_BYTES = 256 << 20
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


def _band_table(num_perm: int, bands: int, rows: int) -> Any:
    """The local index's band hashing (its table stays empty: only `keys` is used here)."""
    key = ("bands", num_perm, bands, rows)
    if key not in _SHINGLERS:
        from llmtools.ops import dedup as ops

        _SHINGLERS[key] = ops.BandTable(num_perm, bands, rows)
    return _SHINGLERS[key]


# --------------------------------------------------------------------------- stage 1: per partition


class Block(NamedTuple):
    """The records of one chunk that near mode deduplicates, as arrays: input orders (int64),
    text lengths (int64), band keys (int64, rows x bands), signatures (uint32, rows x
    permutations), ids (with --id-field) and sorted shingle sets as bytes (with --verify)."""

    orders: Any
    lens: Any
    keys: Any
    sigs: Any
    rids: list | None
    shingles: list | None


class SignTask:
    """Records of one partition -> items, in input order:
    ("r", order, record json, text length (-1: no text), key, band keys, id, contaminated, shingles,
     (--against band keys, shingle set) when Jaccard references are joined by band key, or
     ([(key, partition mask, windows), ...], shingle sequence) when --containment references are)
    ("x", order, reject entry) for a bad line."""

    def __init__(self, opts: Any, bands: tuple[int, int] | None, refs: Any, sources: list[str], part_file: list[int],
                 acc: Accumulators, job_kw: dict, against_bands: tuple[int, int] | None = None, blocks: bool = False,
                 records: bool = True, sign: bool = True, against_plan: "ContainmentPlan | None" = None) -> None:
        self.opts, self.bands, self.refs = opts, bands, refs
        self.sources, self.part_file, self.acc, self.job_kw = sources, part_file, acc, job_kw
        self.against_bands, self.against_plan = against_bands, against_plan
        # records=False: near mode's first pass yields only the blocks, and the output stage
        # reads the lines again with sign=False (parsed and checked the same way, not hashed,
        # nothing reported twice): the records are never sent to the JVM and stored there.
        self.records, self.sign = records, sign
        # Near mode: a chunk's signatures, band keys, lengths and ids (and --verify's shingle
        # sets) go in one Block of arrays instead of each record's tuple, and the chunk is one
        # item ("c", first order, Block, its items pickled): the stages that need only the
        # blocks read them without unpickling the records.
        self.blocks = blocks and opts.mode == "near"

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
                    yield from self._chunk(base, chunk)
                    chunk = []
            chunk.extend((entry["line"] or 0, None, entry) for entry in pending)
            pending.clear()
            yield from self._chunk(base, chunk)
        except BadInputError as exc:
            if self.sign:
                _src, _, line = (exc.where or "").rpartition(":")
                self.acc.fails.add([(gp, int(line) if line.isdigit() else 0, source, exc.reason)])
        if not self.sign:
            return
        counts = Counter({"in": job.counts["in"], "bad": job.counts["bad"], "kept_bad": job.counts["kept_bad"]})
        counts.update({f"reason:{k}": v for k, v in job.reasons.items()})
        self.acc.counts.add(counts)
        self.acc.lines.add({gp: seen[0]})

    def _chunk(self, base: int, chunk: list[tuple[int, Any, Any]]) -> Iterator[tuple]:
        """Near mode: one ("c", first order, Block or None, pickled items) per chunk, so the
        stages that read only the blocks do not unpickle the records (`expand` gives them
        back); else the items one by one."""
        if not self.blocks:
            yield from self._sign(base, chunk)
            return
        import pickle

        items = list(self._sign(base, chunk))
        block = items.pop()[2] if items and items[-1][0] == "b" else None
        if not self.records:
            if block is not None:
                yield ("c", int(block.orders[0]), block, None)
        elif items:
            yield ("c", items[0][1], block, pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))

    def _sign(self, base: int, chunk: list[tuple[int, Any, Any]]) -> Iterator[tuple]:
        from llmtools.ops import dedup as ops

        opts = self.opts
        field, id_field = opts.field, opts.id_field
        texts = [get_text(rec, field) if rec is not None else None for _, rec, _ in chunk]
        live = [i for i, t in enumerate(texts) if t is not None]
        keys: dict[int, Any] = {}
        bands: dict[int, tuple] = {}
        sets: dict[int, bytes] = {}
        hits: dict[int, Any] = {}
        against: dict[int, tuple] = {}
        block = None
        plan = self.against_plan
        if live and self.sign and (opts.mode == "near" or self.refs is not None or self.against_bands is not None
                                   or plan is not None):
            import numpy as np

            sh = _shingler(opts)
            h, starts = sh.shingle_arrays([texts[i] for i in live])
            sigs = sh.minhash_arrays(h, starts)
            runs = np.split(h, starts[1:])
            # The band keys of the local index (ops/dedup/bands.py: 60-bit keys, a batch at a
            # time in numpy), so the same pairs become candidates.
            table = _band_table(opts.num_perm, *self.bands) if opts.mode == "near" else None
            band_keys = None if table is None else table.key_array(sigs) if self.blocks else table.keys(sigs)
            ref_keys = _band_table(opts.num_perm, *self.against_bands).keys(sigs) if self.against_bands else None
            if plan is not None:
                for n, rows in enumerate(plan.query_rows(sh, runs, sigs)):
                    against[live[n]] = (rows, runs[n].tobytes())
            for n, (i, sig, run) in enumerate(zip(live, sigs, runs)):
                if self.refs is not None:
                    hits[i] = self.refs.check(run, sig)
                if ref_keys is not None:
                    against[i] = (ref_keys[n], np.unique(run).tobytes())
                if band_keys is not None and not self.blocks:
                    keys[i] = sig.tobytes()
                    bands[i] = band_keys[n]
                    if opts.verify:
                        sets[i] = np.unique(run).tobytes()
            if self.blocks:
                # The records deduplicated here: a text, and no --against hit.
                rows = [n for n, i in enumerate(live) if hits.get(i) is None]
                if rows:
                    orders = np.array([base | chunk[live[n]][0] for n in rows], dtype=np.int64)
                    lens = np.array([len(texts[live[n]]) for n in rows], dtype=np.int64)
                    rids = [get_field(chunk[live[n]][1], opts.id_field) for n in rows] if opts.id_field else None
                    shingles = [np.unique(runs[n]).tobytes() for n in rows] if opts.verify else None
                    block = Block(orders, lens, band_keys[rows], sigs[rows], rids, shingles)
        if not self.records:
            if block is not None:
                yield ("b", int(block.orders[0]), block)
            return
        if opts.mode == "exact" and self.sign:
            for i in live:
                keys[i] = ops.digest(texts[i], opts)
        for i, (line, rec, entry) in enumerate(chunk):
            if rec is None:
                yield ("x", base | line, entry)
                continue
            rid = get_field(rec, id_field) if id_field else None
            text = texts[i]
            # The re-read pass (sign=False) hands the record on as it is: the output stage is
            # the next step of the same Python task, so nothing is serialized in between.
            yield ("r", base | line, dumps(rec) if self.sign else rec, -1 if text is None else len(text), keys.get(i),
                   bands.get(i), rid, hits.get(i), sets.get(i), against.get(i))
        if block is not None:
            yield ("b", int(block.orders[0]), block)


def expand(item: tuple) -> list[tuple]:
    """The items of a near-mode chunk ("c", ...); any other item as it is."""
    if item[0] == "c":
        import pickle

        return pickle.loads(item[3])
    return [item]


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
    """node -> smallest node of its component, for every node but the smallest (scipy's
    connected components over the pairs, on the driver)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    if not pairs:
        return {}
    ends = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    nodes, at = np.unique(ends, return_inverse=True)  # nodes sorted: a component's first is its smallest
    at = at.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(at), dtype=np.int8), (at[:, 0], at[:, 1])), shape=(len(nodes), len(nodes)))
    _, labels = components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    roots = nodes[first][labels]
    moved = roots != nodes
    return dict(zip(nodes[moved].tolist(), roots[moved].tolist()))


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
        for item in (one for chunk in items for one in expand(chunk)):
            if item[0] == "x":
                entry = item[2]
                entry["line"] = self.where(item[1])[1]
                yield (1, dumps(entry))
                continue
            _, order, raw, length, _key, _bands, rid, hit, _set, _against = item
            parsed = type(raw) is dict  # the re-read pass hands the record itself
            if length < 0:
                counts["unchecked"] += 1
                counts["out"] += 1
                yield (0, dumps(raw) if parsed else raw)
                continue
            if hit is not None:
                counts["contaminated"] += 1
                measure = "containment" if opts.containment is not None else "jaccard"
                rec = raw if parsed else orjson.loads(raw)
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
                    rec = raw if parsed else orjson.loads(raw)
                    rec["dup_cluster"] = self.rec_id(order, rid)
                    rec["is_duplicate"] = False
                    yield (0, dumps(rec))
                else:
                    yield (0, dumps(raw) if parsed else raw)
                continue
            kept, kept_rid, sim = decision
            kept_id = self.rec_id(kept, kept_rid)
            counts["duplicates"] += 1
            rec = raw if parsed else orjson.loads(raw)
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


# --------------------------------------------------------------------------- --against


AGAINST_BROADCAST_BYTES = 256 << 20  # reference files up to this size: broadcast; above: joined by band key


def _against_mode(spark_run: SparkRun, opts: Any) -> str:
    """'broadcast' (every executor gets the local reference index) or 'join' (references
    signed on the cluster and joined to the records by band key): by the size of the
    reference files, or as `spark.llmtools.dedup.against` (auto|broadcast|join) says."""
    conf = spark_run.sc.getConf()
    mode = conf.get("spark.llmtools.dedup.against", "auto")
    if mode not in ("auto", "broadcast", "join"):
        raise UsageError(f"spark.llmtools.dedup.against={mode}: expected auto, broadcast or join")
    if mode != "auto":
        return mode
    limit = int(conf.get("spark.llmtools.dedup.againstBroadcastBytes", str(AGAINST_BROADCAST_BYTES)))
    size = 0
    for _name, uri in spark_run.resolve(opts.against):
        fs, path = spark_run._fs(uri)
        size += int(fs.getFileStatus(path).getLen())
    return "join" if size > limit else "broadcast"


class ContainmentPlan:
    """The local --containment index (datasketch's MinHashLSHEnsemble, see ops/dedup/deduper.py)
    as band keys that a join can match, so the join finds exactly the candidates the ensemble
    finds.

    The ensemble splits the references into partitions by set size (`optimal_partitions` over
    the sizes, as `index()` does) and indexes each reference in one MinHashLSH per r, with bands
    of r rows. A query of size q asks each partition (upper bound u) the first b bands of the r
    that `_get_optimal_param(u, q)` picks. A key here is (r, band j, the band's values), the
    bytes datasketch hashes. A reference emits the keys of every (r, j) a query could ask its
    partition; a query window emits each (r, j) it asks once, with a bit mask of the partitions
    it asks it of, and a joined pair counts only when the reference's partition is in the mask:
    the partition is left out of the key (a window would otherwise send one row per partition,
    8x as many) and filtered after the join, so the candidates are the ensemble's, no more."""

    def __init__(self, opts: Any, sizes: dict[int, int]) -> None:
        import numpy as np
        from datasketch.lshensemble_partition import optimal_partitions

        from llmtools.ops import dedup as ops

        ensemble = ops.containment_ensemble(opts.containment, opts.num_perm, opts.recall_target)
        self.xqs, self.params = ensemble.xqs, ensemble.params
        self.window = opts.window
        table = np.array(sorted(sizes.items())).T
        bounds = optimal_partitions(table[0], table[1], len(ensemble.indexes))
        self.uppers = [int(upper) for _lower, upper in bounds]
        # index() walks the references by size and moves to the next partition when a size
        # passes the current upper bound; the partitions are contiguous and none is empty, so
        # all the references of one size land in one partition.
        self.part: dict[int, int] = {}
        at = 0
        for size in table[0].tolist():
            if size > self.uppers[at]:
                at += 1
            if size > self.uppers[at]:
                raise RuntimeError(f"--containment: reference size {size} is past partition {at} (bound {self.uppers[at]})")
            self.part[size] = at
        # The (r, number of bands) a partition can be asked: a query's size q is 1..--window
        # (any with --window 0), so u/q, which picks the parameters, lies in [u/window, u].
        last = len(self.params) - 1
        self.reach: list[list[tuple[int, int]]] = []
        for upper in self.uppers:
            lo = 0 if self.window <= 0 else min(int(np.searchsorted(self.xqs, upper / self.window, side="left")), last)
            hi = min(int(np.searchsorted(self.xqs, float(upper), side="left")), last)
            most: dict[int, int] = {}
            for b, r in self.params[lo:hi + 1].tolist():
                most[r] = max(most.get(r, 0), b)
            self.reach.append(sorted(most.items()))

    def optimal(self, upper: int, size: int) -> tuple[int, int]:
        """The (b, r) the ensemble asks of a partition with bound `upper` for a query of `size`."""
        from datasketch import MinHashLSHEnsemble

        b, r = MinHashLSHEnsemble._get_optimal_param(self, upper, size)
        return int(b), int(r)

    @staticmethod
    def key(sig: Any, r: int, j: int) -> bytes:
        return r.to_bytes(2, "little") + j.to_bytes(2, "little") + sig[j * r:(j + 1) * r].tobytes()

    def keys_per_reference(self) -> list[int]:
        """How many keys a reference of each partition emits."""
        return [sum(b for _r, b in reach) for reach in self.reach]

    def reference_keys(self, sig: Any, size: int) -> tuple[int, list[bytes]]:
        """A reference's partition, and the keys of every band a query could ask it."""
        p = self.part[size]
        return p, [self.key(sig, r, j) for r, b in self.reach[p] for j in range(b)]

    def window_keys(self, sig: Any, size: int) -> list[tuple[bytes, int]]:
        """(key, partition mask) of the bands one query window of `size` asks."""
        asks: dict[int, list[tuple[int, int]]] = {}
        for p, upper in enumerate(self.uppers):
            b, r = self.optimal(upper, size)
            asks.setdefault(r, []).append((b, 1 << p))
        out = []
        for r, wanted in asks.items():
            for j in range(max(b for b, _bit in wanted)):
                out.append((self.key(sig, r, j), sum(bit for b, bit in wanted if j < b)))
        return out

    def query_rows(self, shingler: Any, runs: list[Any], sigs: Any) -> list[list[tuple[bytes, int, list[int]]]]:
        """Per record (its shingle sequence in `runs`, its signature in `sigs`), the
        (key, partition mask, windows) rows of its windows, as the local References.check asks:
        a key that several windows ask with one mask is one row (overlapping windows share a
        third of their MinHash values), so the records send ~a third fewer rows."""
        import numpy as np

        from llmtools.ops import dedup as ops

        windows = [ops.containment_windows(run, self.window) for run in runs]
        many = [n for n, ws in enumerate(windows) if len(ws) > 1]
        window_sigs: dict[int, Any] = {}
        if many:
            flat = [w for n in many for w in windows[n]]
            starts = np.cumsum([0] + [len(w) for w in flat[:-1]])
            signed = shingler.minhash_arrays(np.concatenate(flat), starts)
            at = 0
            for n in many:
                window_sigs[n] = signed[at:at + len(windows[n])]
                at += len(windows[n])
        out = []
        for n, ws in enumerate(windows):
            rows: dict[tuple[bytes, int], list[int]] = {}
            for w, (win, sig) in enumerate(zip(ws, window_sigs.get(n, sigs[n:n + 1]))):
                for key_mask in self.window_keys(sig, len(np.unique(win))):
                    rows.setdefault(key_mask, []).append(w)
            out.append([(key, mask, at) for (key, mask), at in rows.items()])
        return out


class RefTask:
    """Reference lines of one partition -> (order, pickled id or None, band keys, shingle set)
    for Jaccard references, or (order, pickled id or None, signature, set size, shingle set)
    for --containment (`bands` None), parsed and checked as the local References does (a bad
    reference line ends the run)."""

    def __init__(self, opts: Any, bands: tuple[int, int] | None, sources: list[str], part_file: list[int],
                 acc: Accumulators) -> None:
        self.opts, self.bands, self.sources, self.part_file, self.acc = opts, bands, sources, part_file, acc

    def __call__(self, gp: int, lines: Iterable[bytes]) -> Iterator[tuple]:
        from llmtools.io import line_text

        opts = self.opts
        seen = [0]
        chunk: list[tuple[int, Any, str]] = []
        for line, raw in numbered_lines(lines, seen):
            value, text, reason = line_text(raw, opts.field)
            if reason:
                self.acc.fails.add([(gp, line, self.sources[self.part_file[gp]], reason)])
                break
            chunk.append((line, value.get(opts.id_field) if opts.id_field else None, text))
            if len(chunk) >= CHUNK:
                yield from self._sign(gp, chunk)
                chunk = []
        yield from self._sign(gp, chunk)
        self.acc.lines.add({gp: seen[0]})

    def _sign(self, gp: int, chunk: list[tuple[int, Any, str]]) -> Iterator[tuple]:
        if not chunk:
            return
        import pickle

        import numpy as np

        sh = _shingler(self.opts)
        h, starts = sh.shingle_arrays([text for _, _, text in chunk])
        sigs = sh.minhash_arrays(h, starts)
        keys = _band_table(self.opts.num_perm, *self.bands).keys(sigs) if self.bands is not None else None
        for n, ((line, rid, _), run) in enumerate(zip(chunk, np.split(h, starts[1:]))):
            order, pid, rset = gp << PART_SHIFT | line, None if rid is None else pickle.dumps(rid), np.unique(run)
            if keys is not None:
                yield (order, pid, keys[n], rset.tobytes())
            else:
                yield (order, pid, sigs[n].tobytes(), len(rset), rset.tobytes())


class ReferenceFrame(NamedTuple):
    frame: Any  # persisted DataFrame: rorder, rid, rkeys (Jaccard) or rsig, rsize (containment), rset
    ref_id: Any  # (rorder, pickled id or None) -> the reference's id, as the local References names it
    plan: ContainmentPlan | None  # --containment: the ensemble's bands


def _reference_frame(spark_run: SparkRun, opts: Any) -> ReferenceFrame:
    """The references, signed on the cluster; for --containment also the ensemble's partitions
    of their sizes (one small aggregate: the number of distinct sizes)."""
    import pickle

    from pyspark import StorageLevel
    from pyspark.sql import types as T

    files = spark_run.resolve(opts.against)
    lines, part_file = spark_run.read(files)
    acc = Accumulators(spark_run.sc)
    containment = opts.containment is not None
    bands = None if containment else opts.lsh_bands(opts.against_threshold or opts.threshold)
    sources = [name for name, _ in files]
    fields = [T.StructField("rorder", T.LongType(), False), T.StructField("rid", T.BinaryType(), True)]
    if containment:
        fields += [T.StructField("rsig", T.BinaryType(), False), T.StructField("rsize", T.LongType(), False)]
    else:
        fields += [T.StructField("rkeys", T.ArrayType(T.LongType(), False), False)]
    schema = T.StructType(fields + [T.StructField("rset", T.BinaryType(), False)])
    frame = spark_run.spark.createDataFrame(lines.mapPartitionsWithIndex(RefTask(opts, bands, sources, part_file, acc)),
                                            schema, verifySchema=False).persist(StorageLevel.MEMORY_AND_DISK)
    count = frame.count()
    raise_first_failure(acc.fails.value, part_file, acc.lines.value)
    if not count:
        frame.unpersist()
        raise UsageError("--against: the reference files hold no records")
    starts = first_lines(part_file, acc.lines.value)
    plan = None
    if containment:
        sizes = {int(row[0]): int(row[1]) for row in frame.groupBy("rsize").count().collect()}
        plan = ContainmentPlan(opts, sizes)

    def ref_id(rorder: int, rid: bytes | None) -> Any:
        if rid is not None:
            return pickle.loads(rid)
        gp = rorder >> PART_SHIFT
        return f"{sources[part_file[gp]]}:{starts[gp] + (rorder & MASK)}"

    return ReferenceFrame(frame, ref_id, plan)


def _jaccard_hits(spark: Any, items: Any, frame: Any, opts: Any) -> Any:
    """(order, (similarity, -reference order, pickled reference id)) for each record and
    reference that share a band key (a join in the JVM) and whose exact Jaccard is at or above
    the threshold, as the local References checks them."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from llmtools.ops import dedup as ops

    schema = T.StructType([T.StructField("order", T.LongType(), False), T.StructField("qkeys", T.ArrayType(T.LongType(), False), False),
                           T.StructField("qset", T.BinaryType(), False)])
    recs = spark.createDataFrame(items.filter(lambda t: t[0] == "r" and t[9] is not None).map(lambda t: (t[1], t[9][0], t[9][1])),
                                 schema, verifySchema=False)
    cands = (recs.select("order", F.explode("qkeys").alias("k"))
             .join(frame.select("rorder", F.explode("rkeys").alias("k")), "k").select("order", "rorder").distinct())
    joined = cands.join(recs.select("order", "qset"), "order").join(frame.select("rorder", "rid", "rset"), "rorder")
    threshold = opts.against_threshold or opts.threshold

    def verify(r: Any) -> list[tuple]:
        import numpy as np

        sim = ops.exact_jaccard(np.frombuffer(r.qset, dtype=np.uint32), np.frombuffer(r.rset, dtype=np.uint32))
        return [(r.order, (sim, -r.rorder, r.rid))] if sim >= threshold else []

    return joined.rdd.flatMap(verify)


def _containment_hits(spark: Any, items: Any, frame: Any, plan: ContainmentPlan, opts: Any) -> Any:
    """(order, (containment, -reference order, pickled reference id)) for each record window
    and reference that the LSH Ensemble would make candidates (`ContainmentPlan`: a join on
    band keys, filtered by partition), verified exactly as the local References does: the share
    of the window's distinct shingles inside the reference, at or above --containment."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from llmtools.ops import dedup as ops

    recs = items.filter(lambda t: t[0] == "r" and t[9] is not None)
    qrows = spark.createDataFrame(recs.flatMap(lambda t: [(t[1], k, m, ws) for k, m, ws in t[9][0]]),
                                  "order long, k binary, m int, ws array<int>", verifySchema=False)
    qseq = spark.createDataFrame(recs.map(lambda t: (t[1], t[9][1])), "order long, qseq binary", verifySchema=False)

    def reference_rows(row: Any) -> list[tuple]:
        import numpy as np

        p, keys = plan.reference_keys(np.frombuffer(row.rsig, dtype=np.uint32), row.rsize)
        return [(k, row.rorder, p) for k in keys]

    rkeys = spark.createDataFrame(frame.select("rorder", "rsig", "rsize").rdd.flatMap(reference_rows),
                                  T.StructType([T.StructField("k", T.BinaryType(), False), T.StructField("rorder", T.LongType(), False),
                                                T.StructField("p", T.IntegerType(), False)]), verifySchema=False)
    cands = (qrows.join(rkeys, "k").where(F.expr("shiftright(m, p) & 1 = 1"))
             .select("order", F.explode("ws").alias("w"), "rorder").distinct())
    joined = cands.join(qseq, "order").join(frame.select("rorder", "rid", "rset"), "rorder")
    threshold, window = opts.containment, opts.window

    def verify(r: Any) -> list[tuple]:
        import numpy as np

        h = np.frombuffer(r.qseq, dtype=np.uint32)
        starts = ops.window_starts(len(h), window)
        query = np.unique(h if starts is None else h[starts[r.w]:starts[r.w] + window])
        inside = len(np.intersect1d(query, np.frombuffer(r.rset, dtype=np.uint32), assume_unique=True)) / len(query)
        return [(r.order, (inside, -r.rorder, r.rid))] if inside >= threshold else []

    return joined.rdd.flatMap(verify)


def _join_references(spark_run: SparkRun, items: Any, refs: ReferenceFrame, opts: Any, nparts: int) -> Any:
    """`items` with each record's --against hit set: the references a band-key join makes
    candidates, verified exactly (Jaccard, or the containment of a window); a record's hit is
    its most similar reference, the earliest on ties, as locally. Returns the new items
    (persisted; the old ones are released)."""
    from pyspark import StorageLevel

    spark, sc = spark_run.spark, spark_run.sc
    frame, ref_id = refs.frame, refs.ref_id
    if refs.plan is not None:
        verified = _containment_hits(spark, items, frame, refs.plan, opts)
    else:
        verified = _jaccard_hits(spark, items, frame, opts)
    best = verified.reduceByKey(lambda a, b: a if a[:2] >= b[:2] else b)
    hits = best.map(lambda kv: (kv[0], (ref_id(-kv[1][1], kv[1][2]), round(kv[1][0], 4)))).persist(StorageLevel.MEMORY_AND_DISK)
    limit = int(sc.getConf().get("spark.llmtools.dedup.broadcastLimit", str(BROADCAST_LIMIT)))
    if hits.count() <= limit:
        table = sc.broadcast(dict(hits.collect()))

        def attach(it: Iterable[tuple]) -> Iterator[tuple]:
            get = table.value.get
            for t in it:
                hit = get(t[1]) if t[0] == "r" else None
                yield t if hit is None else t[:7] + (hit,) + t[8:]

        out = items.mapPartitions(attach, preservesPartitioning=True)
    else:
        def merge(it: Iterable[tuple]) -> Iterator[tuple]:
            pending: dict[int, Any] = {}
            for (order, tag), value in it:
                if tag == 0:
                    pending[order] = value
                else:
                    hit = pending.pop(order, None)
                    yield value if hit is None else value[:7] + (hit,) + value[8:]

        keyed = items.map(lambda t: ((t[1], 1), t)).union(hits.map(lambda kv: ((kv[0], 0), kv[1])))
        out = keyed.repartitionAndSortWithinPartitions(nparts, lambda key: key[0] >> PART_SHIFT).mapPartitions(merge)
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    out.count()
    hits.unpersist()
    frame.unpersist()
    items.unpersist()
    return out


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
    bands = opts.lsh_bands() if opts.mode == "near" else None  # the same bands as the local run
    with SparkRun(engine, "dedup", quiet=io.quiet) as spark_run:
        sc = spark_run.sc
        files = spark_run.resolve(io.inputs)
        out_uri = spark_run.check_output(io.output, "-o")
        rej_uri = spark_run.check_output(io.rejects, "--rejects") if io.rejects else None
        refs = None
        against = _against_mode(spark_run, opts) if opts.against else None
        if against == "broadcast":
            refs = ops.References(ops.Shingler(opts.num_perm, opts.seed, opts.n, opts.shingle), opts)
        elif against == "join":
            with spark_errors():
                ref_frame = _reference_frame(spark_run, opts)
        # A partition per file (more for files larger than a block), at least one per core:
        # each task and stage costs, and small files split in two only made more of them.
        lines, part_file = spark_run.read(files, max(1, -(-sc.defaultParallelism // len(files))))
        nparts = len(part_file)
        shuffle = max(2, sc.defaultParallelism)
        acc = Accumulators(sc)
        from pyspark import StorageLevel

        sources = [name for name, _ in files]
        job_kw = dict(field=job.field, on_error=job.on_error, validate=job.validate, locate=True)
        refs_b = sc.broadcast(refs) if refs is not None else None
        joined = against == "join"
        against_bands = opts.lsh_bands(opts.against_threshold or opts.threshold) if joined and opts.containment is None else None
        against_plan = ref_frame.plan if joined else None
        # Near mode without --against: the records are read twice (signed, then written)
        # rather than stored between the passes.
        reread = opts.mode == "near" and not against
        task = SignTask(opts, bands, None, sources, part_file, acc, job_kw, against_bands, blocks=against != "join",
                        records=not reread, against_plan=against_plan)
        if refs_b is not None:
            def signed(gp: int, it: Iterable[bytes], task: SignTask = task) -> Iterator[tuple]:
                task.refs = refs_b.value
                return task(gp, it)
        else:
            signed = task
        try:
            with spark_errors():
                items = lines.mapPartitionsWithIndex(signed)
                if not reread:
                    items = items.persist(StorageLevel.MEMORY_AND_DISK)
                near = None
                if task.blocks:
                    # The first job signs, persists, and runs the band group-by in the same
                    # stage: the records are not read back for it.
                    # One reduce partition per 4 input partitions (at least one per core): a
                    # reduce task sorts ~6M rows (~150 MB) at 128 MB splits, at any input size.
                    near = _band_pairs(items, opts, max(shuffle, nparts // 4))
                else:
                    items.count()
                raise_first_failure(acc.fails.value, part_file, acc.lines.value)
                starts = first_lines(part_file, acc.lines.value)
                if against == "join":
                    items = _join_references(spark_run, items, ref_frame, opts, nparts)
                decisions, rounds = _decide(spark_run, items, opts, shuffle, near)
                if reread:
                    items = lines.mapPartitionsWithIndex(SignTask(opts, bands, None, sources, part_file, acc, job_kw,
                                                                  sign=False))
                stats = _finish(spark_run, items, decisions, opts, sources, part_file, starts, len(files) == 1, acc,
                                out_uri, rej_uri, nparts)
        except BaseException:
            spark_run.remove(out_uri)
            if rej_uri is not None:
                spark_run.remove(rej_uri)
            raise
        _add_counts(job, acc.counts.value)
        params = dict(params, components_rounds=rounds)
        if against:
            params["against_by"] = against
        if rej_uri is not None:
            spark_run.commit(rej_uri, _manifest(spark_run, "dedup", files, params, job, engine, "rejects"))
        spark_run.commit(out_uri, _manifest(spark_run, "dedup", files, params, job, engine, "output", nparts))
        return stats


def _decide(spark_run: SparkRun, items: Any, opts: Any, shuffle: int, near: Any = None) -> tuple[Any, int]:
    """The duplicates, order -> (kept order, kept id or None, similarity): a dict when the
    driver decided them (near, few edges), else an RDD of (order, (kept, kept id, similarity));
    and the number of connected-component rounds run on the cluster (0 on the driver)."""
    if near is not None:
        return _decide_near_blocks(spark_run, near, opts, shuffle)
    recs = items.filter(lambda t: t[0] == "r" and t[3] >= 0 and t[7] is None)
    if opts.mode == "exact":
        return _decide_exact(recs, opts, shuffle), 0
    return _decide_near(spark_run.spark, recs, opts, shuffle)


def _better(longest: bool) -> Any:
    def better(a: tuple, b: tuple) -> tuple:  # (order, length): the survivor of two
        if longest:
            return a if (a[1], -a[0]) >= (b[1], -b[0]) else b
        return a if a[0] <= b[0] else b

    return better


def _decide_exact(recs: Any, opts: Any, shuffle: int) -> Any:
    better = _better(opts.keep == "longest")
    keyed = recs.map(lambda t: (t[4], (t[1], t[3])))
    best = keyed.reduceByKey(better, shuffle)
    dups = keyed.join(best, shuffle).filter(lambda kv: kv[1][0][0] != kv[1][1][0])
    pairs = dups.map(lambda kv: (kv[1][1][0], (kv[1][0][0], 1.0)))  # (kept, (dup, sim))
    return _with_ids(recs, pairs, opts, shuffle)


def _with_ids(recs: Any, pairs: Any, opts: Any, shuffle: int) -> Any:
    """(kept, (dup, sim)) pairs -> (dup, (kept, kept id or None, sim))."""
    if opts.id_field:
        ids = _only(recs, pairs.keys().distinct(shuffle)).map(lambda t: (t[1], t[6]))
        return pairs.join(ids, shuffle).map(lambda kv: (kv[1][0][0], (kv[0], kv[1][1], kv[1][0][1])))
    return pairs.map(lambda kv: (kv[1][0], (kv[0], None, kv[1][1])))


# The candidate pairs of one band bucket `m` (its members' orders, sorted), as candidate_pairs
# makes them, in the JVM: every pair of a bucket of at most SMALL_BUCKET members, else each
# member with the first and with the one before it.
_PAIRS_SQL = """explode(IF(size(m) <= {small},
  flatten(transform(sequence(1, size(m) - 1), i -> transform(sequence(0, i - 1), j -> named_struct('x', m[i], 'y', m[j])))),
  concat(transform(sequence(1, size(m) - 1), i -> named_struct('x', m[i], 'y', m[0])),
         transform(sequence(1, size(m) - 1), i -> named_struct('x', m[i], 'y', m[i - 1])))))"""

# The signature estimate of a pair, as `similarity` computes it: the share of equal values.
_SIM_SQL = ("CAST(aggregate(sequence(0, {last}), 0, (acc, i) -> acc + IF(substring(sx, i * 4 + 1, 4) = "
            "substring(sy, i * 4 + 1, 4), 1, 0)) AS DOUBLE) / CAST({perm} AS DOUBLE)")


def _meta_frame(spark: Any, recs: Any, opts: Any) -> Any:
    """The records to deduplicate as a DataFrame: order, text length, band keys, signature,
    the pickled id (with --id-field) and the shingle set (with --verify). What follows runs in
    the JVM on these columns; only --verify's exact Jaccard goes back to Python."""
    import pickle

    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("order", T.LongType(), False), T.StructField("len", T.LongType(), False),
        T.StructField("bands", T.ArrayType(T.LongType(), False), False), T.StructField("sig", T.BinaryType(), False),
        T.StructField("rid", T.BinaryType(), True), T.StructField("shingles", T.BinaryType(), True)])
    with_ids = bool(opts.id_field)

    def row(t: tuple) -> tuple:
        return (t[1], t[3], t[5], t[4], pickle.dumps(t[6]) if with_ids else None, t[8])

    return spark.createDataFrame(recs.map(row), schema, verifySchema=False)


def _similar(meta: Any, pairs: Any, opts: Any) -> Any:
    """RDD of (x, y, similarity, len x, len y, id x, id y) for the pairs (a DataFrame of x, y)
    at or above --threshold: the signature estimate in the JVM, or with --verify the exact
    Jaccard of the shingle sets (in Python)."""
    from pyspark.sql import functions as F

    side = lambda s: meta.select(F.col("order").alias(s), F.col("sig").alias(f"s{s}"), F.col("len").alias(f"l{s}"),  # noqa: E731
                                 F.col("rid").alias(f"r{s}"), F.col("shingles").alias(f"h{s}"))
    joined = pairs.join(side("x"), "x").join(side("y"), "y")
    threshold = opts.threshold
    if opts.verify:
        sim = similarity(threshold, True)

        def check(r: Any) -> list[tuple]:
            return [(x, y, v, r.lx, r.ly, r.rx, r.ry)
                    for x, y, v in sim((r.y, ((r.x, (r.sx, r.hx)), (r.sy, r.hy))))]

        return joined.rdd.flatMap(check)
    value = F.expr(_SIM_SQL.format(last=opts.num_perm - 1, perm=opts.num_perm))
    edges = (joined.select("x", "y", value.alias("sim"), "lx", "ly", "rx", "ry").where(F.col("sim") >= F.lit(threshold))
             .select("x", "y", F.bround("sim", 4).alias("sim"), "lx", "ly", "rx", "ry"))
    return edges.rdd.map(tuple)


def _decide_near(spark: Any, recs: Any, opts: Any, shuffle: int, cands: Any = None) -> tuple[Any, int]:
    """Near mode in the JVM: the band group-by (unless the candidate pairs `cands`, a DataFrame
    of x, y, are given), the signature joins and the estimate; then components on the driver
    or the cluster."""
    import pickle

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    sc = recs.context
    longest = opts.keep == "longest"
    meta = _meta_frame(spark, recs, opts).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if cands is None:
            buckets = (meta.select("order", F.explode("bands").alias("key")).groupBy("key")
                       .agg(F.array_sort(F.collect_set("order")).alias("m")).where(F.size("m") > 1))
            cands = buckets.select(F.expr(_PAIRS_SQL.format(small=SMALL_BUCKET)).alias("p")).select("p.x", "p.y").distinct()
        edges = _similar(meta, cands, opts).persist(StorageLevel.MEMORY_AND_DISK)
        limit = int(sc.getConf().get("spark.llmtools.dedup.driverComponentsLimit", str(DRIVER_COMPONENTS_LIMIT)))
        n_edges = edges.count()
        if n_edges > limit:
            return _decide_near_cluster(recs, edges.map(lambda e: e[:3]), opts, shuffle)
        # Few edges: components, survivors and the greedy decisions on the driver, in one collect.
        rows = edges.collect()
        edges.unpersist()
        length: dict[int, int] = {}
        ids: dict[int, Any] = {}
        for x, y, _sim, lx, ly, rx, ry in rows:
            length[x], length[y] = lx, ly
            if rx is not None:
                ids[x], ids[y] = pickle.loads(rx), pickle.loads(ry)

        def direct(wanted: list[tuple[int, int]]) -> list[tuple]:
            pairs = spark.createDataFrame(wanted, "x long, y long")
            return [(dup, kept, sim) for dup, kept, sim, *_ in _similar(meta, pairs, opts).collect()]

        decisions = driver_decisions([(x, y, sim) for x, y, sim, *_ in rows], length, ids, longest, direct)
        return decisions, 0
    finally:
        meta.unpersist()


def driver_decisions(edges: list[tuple[int, int, float]], length: dict[int, int], ids: dict[int, Any], longest: bool,
                     direct: Any) -> dict[int, tuple]:
    """dup -> (kept, kept id or None, similarity) from the verified edges (x, y, similarity),
    on the driver: union-find components, then per component the local command's greedy
    decision (--keep first), or the longest record as survivor (--keep longest), where
    `direct(wanted)` gives (dup, survivor, similarity) for the (dup, survivor) pairs that match."""
    roots = driver_components([(x, y) for x, y, _ in edges])
    decisions: dict[int, tuple] = {}
    if longest:
        members: dict[int, list[int]] = {}
        for node in length:
            members.setdefault(roots.get(node, node), []).append(node)
        wanted = []
        for nodes in members.values():
            survivor = max(nodes, key=lambda n: (length[n], -n))
            wanted.extend((n, survivor) for n in nodes if n != survivor)
        # A duplicate must match its survivor itself (locally dup_of is always a kept
        # record); the similarity reported is the one to the survivor.
        if wanted:
            for dup, kept, sim in direct(wanted):
                decisions[dup] = (kept, ids.get(kept), sim)
    else:
        # Within each component, the local command's greedy decision over the verified edges.
        components: dict[int, list[tuple]] = {}
        for x, y, sim in edges:
            components.setdefault(roots.get(x, x), []).append((x, y, sim))
        for root, component in components.items():
            if len(component) == 1:  # two records, one match: the later is the duplicate
                x, y, sim = component[0]
                kept = min(x, y)
                decisions[max(x, y)] = (kept, ids.get(kept), sim)
                continue
            for dup, (kept, sim) in greedy_component((root, component)):
                decisions[dup] = (kept, ids.get(kept), sim)
    return decisions


# --------------------------------------------------------------------------- near mode on blocks
#
# The band group-by as a shuffle of arrays: each map task sends, per reduce partition, one
# array of band keys and one of orders (so a shuffle of 3.2M (key, order) rows is a few dozen
# records of bytes, not 3.2M pickled tuples or JVM rows); each reduce task sorts its rows and
# makes the candidate pairs of every bucket with more than one member, in numpy. Below the
# driver limits the candidates' signatures are collected and verified on the driver in numpy
# (a few hundred thousand pairs take a fraction of a second); above them the JVM path runs.


def _band_rows(partitions: int) -> Any:
    def rows(blocks: Iterable[Block]) -> Iterator[tuple[int, tuple]]:
        import numpy as np

        keys, orders = [], []
        for blk in blocks:
            keys.append(blk.keys.ravel())
            orders.append(np.repeat(blk.orders, blk.keys.shape[1]))
        if not keys:
            return
        k, o = np.concatenate(keys), np.concatenate(orders)
        dest = k % partitions  # keys are 60-bit, never negative
        by = np.argsort(dest, kind="stable")
        bounds = np.searchsorted(dest[by], np.arange(partitions + 1))
        for p in range(partitions):
            sel = by[bounds[p]:bounds[p + 1]]
            if len(sel):
                yield p, (k[sel], o[sel])

    return rows


def bucket_pairs(small: int = SMALL_BUCKET, limit: int | None = None) -> Any:
    """(band key, order) arrays of one reduce partition -> the (later, earlier) candidate pairs
    of its buckets, as `candidate_pairs` makes them, distinct within the partition: one
    (x array, y array), or (None, how many) when there are more than `limit`."""

    def pairs(items: Iterable[tuple[int, tuple]]) -> Iterator[tuple]:
        import numpy as np

        parts = [kv[1] for kv in items]
        if not parts:
            return
        k = np.concatenate([p[0] for p in parts])
        o = np.concatenate([p[1] for p in parts])
        by = np.lexsort((o, k))
        k, o = k[by], o[by]
        if len(k) > 1:  # a record in one bucket twice (two bands with one key) counts once
            keep = np.ones(len(k), dtype=bool)
            keep[1:] = (k[1:] != k[:-1]) | (o[1:] != o[:-1])
            k, o = k[keep], o[keep]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, dtype=np.int64)
        sizes = np.diff(np.r_[starts, len(k)])
        xs, ys = [], []
        for size in np.unique(sizes[(sizes > 1) & (sizes <= small)]).tolist():
            first = starts[sizes == size][:, None]
            i, j = np.tril_indices(size, -1)  # every pair, i > j: the later member first
            xs.append(o[first + i].ravel())
            ys.append(o[first + j].ravel())
        for start, size in zip(starts[sizes > small].tolist(), sizes[sizes > small].tolist()):
            m = o[start:start + size]  # sorted: each member with the first and with the one before
            xs.extend([m[1:], m[2:]])
            ys.extend([np.full(size - 1, m[0]), m[1:-1]])
        if xs:
            x, y = unique_pairs(np.concatenate(xs), np.concatenate(ys))
            yield (x, y) if limit is None or len(x) <= limit else (None, len(x))

    return pairs


def unique_pairs(x: Any, y: Any) -> tuple[Any, Any]:
    import numpy as np

    by = np.lexsort((y, x))
    x, y = x[by], y[by]
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    return x[keep], y[keep]


def _members(orders: Any, wanted: Any) -> Any:
    """Positions of `orders` that are in the sorted array `wanted`."""
    import numpy as np

    pos = np.minimum(np.searchsorted(wanted, orders), max(len(wanted) - 1, 0))
    return np.flatnonzero(wanted[pos] == orders) if len(wanted) else np.zeros(0, dtype=np.int64)


def _block_records(blk: Block) -> list[tuple]:
    """A block as the per-record tuples the JVM and cluster paths read (order, length, signature,
    band keys, id, shingle set at the places SignTask puts them)."""
    rids = blk.rids if blk.rids is not None else [None] * len(blk.orders)
    sets = blk.shingles if blk.shingles is not None else [None] * len(blk.orders)
    return [("r", order, None, length, sig.tobytes(), keys, rid, None, shingles, None)
            for order, length, sig, keys, rid, shingles in zip(blk.orders.tolist(), blk.lens.tolist(), blk.sigs,
                                                               blk.keys.tolist(), rids, sets)]


class Signatures:
    """The candidates' signatures on the driver: orders (sorted), lengths, ids, signatures and
    shingle sets; `similar` verifies pairs as `similarity` does, in numpy."""

    def __init__(self, blocks: list[Block], opts: Any) -> None:
        import numpy as np

        self.opts = opts
        orders = np.concatenate([b.orders for b in blocks]) if blocks else np.zeros(0, dtype=np.int64)
        by = np.argsort(orders)
        self.orders = orders[by]
        self.lens = (np.concatenate([b.lens for b in blocks]) if blocks else orders)[by]
        self.sigs = (np.concatenate([b.sigs for b in blocks]) if blocks else np.zeros((0, opts.num_perm), np.uint32))[by]
        rids = [r for b in blocks for r in (b.rids or ())]
        self.rids = [rids[i] for i in by.tolist()] if opts.id_field else None
        sets = [s for b in blocks for s in (b.shingles or ())]
        self.sets = [sets[i] for i in by.tolist()] if opts.verify else None

    def index(self, orders: Any) -> Any:
        import numpy as np

        return np.searchsorted(self.orders, orders)

    def similar(self, x: Any, y: Any) -> list[tuple[int, int, float]]:
        """(x, y, similarity) for the pairs at or above --threshold."""
        import numpy as np

        opts = self.opts
        ix, iy = self.index(x), self.index(y)
        if opts.verify:
            from llmtools.ops import dedup as ops

            sets = self.sets
            values = np.array([ops.exact_jaccard(np.frombuffer(sets[a], dtype=np.uint32), np.frombuffer(sets[b], dtype=np.uint32))
                               for a, b in zip(ix.tolist(), iy.tolist())], dtype=np.float64)
        else:
            equal = np.empty(len(ix), dtype=np.int64)
            step = 1 << 15  # pairs at a time: two (step x permutations) arrays in memory
            for lo in range(0, len(ix), step):
                equal[lo:lo + step] = (self.sigs[ix[lo:lo + step]] == self.sigs[iy[lo:lo + step]]).sum(axis=1)
            values = equal / self.sigs.shape[1]
        keep = np.flatnonzero(values >= opts.threshold)
        return [(a, b, round(v, 4)) for a, b, v in zip(x[keep].tolist(), y[keep].tolist(), values[keep].tolist())]


class BandPairs(NamedTuple):
    blocks: Any  # RDD of Block, persisted
    parts: list  # each reduce partition's (x, y) candidate pairs, or (None, how many)
    pairs: Any  # RDD of each reduce partition's (x, y), from the same shuffle (not run again)


def _band_pairs(items: Any, opts: Any, shuffle: int) -> BandPairs:
    """Runs the band group-by of near mode's blocks (the job that also signs the records when
    they are not computed yet): each reduce partition's candidate pairs come to the driver
    when it holds at most its share of the driver limit, else only their number."""
    from pyspark import StorageLevel

    sc = items.context
    limit = int(sc.getConf().get("spark.llmtools.dedup.driverCandidatesLimit", str(DRIVER_CANDIDATES_LIMIT)))
    blocks = items.filter(lambda t: t[2] is not None).map(lambda t: t[2]).persist(StorageLevel.MEMORY_AND_DISK)
    shuffled = blocks.mapPartitions(_band_rows(shuffle)).partitionBy(shuffle, lambda p: p)
    parts = shuffled.mapPartitions(bucket_pairs(limit=limit // shuffle)).collect()
    return BandPairs(blocks, parts, shuffled.mapPartitions(bucket_pairs()))


def _pair_frame(spark: Any, pairs: Any) -> Any:
    """The candidate pairs (an RDD of (x array, y array)) as a DataFrame of distinct x, y."""
    rows = pairs.flatMap(lambda p: zip(p[0].tolist(), p[1].tolist()))
    return spark.createDataFrame(rows, "x long, y long", verifySchema=False).distinct()


def _decide_near_blocks(spark_run: SparkRun, near: BandPairs, opts: Any, shuffle: int) -> tuple[Any, int]:
    """Near mode from the signed blocks and their candidate pairs: below the driver limits,
    verified, joined into components and decided on the driver; else the JVM path."""
    import numpy as np

    blocks, parts, pairs = near
    sc = blocks.context
    conf = sc.getConf()

    def in_the_jvm() -> tuple[Any, int]:
        spark = spark_run.spark
        return _decide_near(spark, blocks.flatMap(_block_records), opts, shuffle, _pair_frame(spark, pairs))

    try:
        if any(p[0] is None for p in parts):
            return in_the_jvm()
        x = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        y = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        x, y = unique_pairs(x, y)
        nodes = np.unique(np.concatenate([x, y]))
        budget = int(conf.get("spark.llmtools.dedup.driverSignatureBytes", str(DRIVER_SIGNATURE_BYTES)))
        if len(nodes) * opts.num_perm * 4 > budget:
            return in_the_jvm()
        wanted = sc.broadcast(nodes)

        def pick(blk: Block) -> Block:
            at = _members(blk.orders, wanted.value)
            rids = [blk.rids[i] for i in at.tolist()] if blk.rids is not None else None
            sets = [blk.shingles[i] for i in at.tolist()] if blk.shingles is not None else None
            return Block(blk.orders[at], blk.lens[at], None, blk.sigs[at], rids, sets)

        sigs = Signatures([b for b in blocks.map(pick).collect() if len(b.orders)], opts)
        wanted.unpersist()
        edges = sigs.similar(x, y)
        limit = int(conf.get("spark.llmtools.dedup.driverComponentsLimit", str(DRIVER_COMPONENTS_LIMIT)))
        if len(edges) > limit:
            recs = blocks.flatMap(_block_records)
            return _decide_near_cluster(recs, sc.parallelize(edges, max(2, sc.defaultParallelism)), opts, shuffle)
        at = sigs.index(np.array(sorted({n for e in edges for n in e[:2]}), dtype=np.int64))
        length = dict(zip(sigs.orders[at].tolist(), sigs.lens[at].tolist()))
        ids = dict(zip(sigs.orders[at].tolist(), [sigs.rids[i] for i in at.tolist()])) if sigs.rids is not None else {}

        def direct(wanted_pairs: list[tuple[int, int]]) -> list[tuple]:
            if not wanted_pairs:
                return []
            dup, kept = (np.array(v, dtype=np.int64) for v in zip(*wanted_pairs))
            return sigs.similar(dup, kept)

        return driver_decisions(edges, length, ids, opts.keep == "longest", direct), 0
    finally:
        blocks.unpersist()


def _decide_near_cluster(recs: Any, edges: Any, opts: Any, shuffle: int) -> tuple[Any, int]:
    """The path for many edges: large-star/small-star components, survivors and the greedy
    decisions as Spark jobs; and the number of component rounds."""
    longest = opts.keep == "longest"
    better = _better(longest)
    nodes = edges.flatMap(lambda e: e[:2]).distinct(shuffle)
    sigs = _only(recs, nodes).map(lambda t: (t[1], (t[4], t[8]))).persist()
    labels, rounds = connected_components(edges.map(lambda e: (e[0], e[1])), shuffle)
    if longest:
        lengths = recs.map(lambda t: (t[1], t[3]))
        members = labels.flatMap(lambda kv: [kv, (kv[1], kv[1])]).distinct(shuffle)  # (node, root), roots too
        sized = members.join(lengths, shuffle).map(lambda kv: (kv[1][0], (kv[0], kv[1][1])))  # (root, (node, len))
        kept = sized.reduceByKey(better, shuffle)  # (root, (survivor, len))
        assigned = sized.join(kept, shuffle).filter(lambda kv: kv[1][0][0] != kv[1][1][0]) \
            .map(lambda kv: (kv[1][0][0], kv[1][1][0]))  # (dup, survivor)
        # A duplicate must match its survivor itself; the similarity reported is to the survivor.
        direct = assigned.join(sigs, shuffle).map(lambda kv: (kv[1][0], (kv[0], kv[1][1])))  # (survivor, (dup, sig))
        checked = direct.join(sigs, shuffle).flatMap(similarity(opts.threshold, opts.verify))  # (dup, survivor, sim)
        pairs = checked.map(lambda e: (e[1], (e[0], e[2])))  # (kept, (dup, sim))
    else:
        by_root = edges.map(lambda e: (e[0], e)).join(labels, shuffle).map(lambda kv: (kv[1][1], kv[1][0]))
        pairs = by_root.groupByKey(shuffle).flatMap(greedy_component) \
            .map(lambda kv: (kv[1][0], (kv[0], kv[1][1])))  # (kept, (dup, sim))
    return _with_ids(recs, pairs, opts, shuffle), rounds


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
    local = decisions if isinstance(decisions, dict) else None  # decided on the driver
    limit = int(sc.getConf().get("spark.llmtools.dedup.broadcastLimit", str(BROADCAST_LIMIT)))
    if local is not None:
        count = len(local)
        if count > limit:
            decisions = sc.parallelize(sorted(local.items()), max(2, sc.defaultParallelism))
    else:
        decisions = decisions.persist(StorageLevel.MEMORY_AND_DISK)
        count = decisions.count()
    emit = Emit(opts, sources, part_file, starts, single, None, acc)
    if count <= limit:
        table = sc.broadcast(local if local is not None else dict(decisions.collect()))
        tagged = items.mapPartitions(emit.broadcast(table))
    else:
        keyed = items.flatMap(expand).map(lambda t: ((t[1], 1), t)).union(decisions.map(lambda kv: ((kv[0], 0), kv[1])))
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
    if local is not None:
        sizes = Counter((kept, rid) for kept, rid, _sim in local.values())
        top = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0][0]))[:5]
    else:
        top = decisions.map(lambda kv: ((kv[1][0], kv[1][1]), 1)).reduceByKey(lambda a, b: a + b) \
            .takeOrdered(5, key=lambda kv: (-kv[1], kv[0][0]))
    for (kept, rid), n in top:
        stats.clusters[emit.rec_id(kept, rid)] = n
    if local is None or count > limit:
        decisions.unpersist()
    items.unpersist()
    return stats
