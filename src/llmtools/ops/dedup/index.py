"""Where dedup remembers what it has kept: in memory, in a file (`--index PATH`), or in Redis.

Every index answers one question per batch, `claim(items)`: for each item in order, either it
is new (it is added, and the answer is None) or it duplicates something already kept (the
answer is `(kept_id, similarity)`). Items of one batch see each other, so a batch behaves
exactly like the same items one at a time.

Safety: a file index is a numpy `.npz` read with `allow_pickle=False` (arrays of integers and
a JSON header; nothing in it can run code). The Redis index uses datasketch's Redis storage
with `prepickle=False` and bytes keys, so nothing read from Redis is ever unpickled either;
whoever can write to the Redis database can still corrupt the index (make records look like
duplicates), so give it the same trust as the data.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence
from urllib.parse import parse_qs, urlparse

from llmtools.errors import BadInputError, RuntimeFailure, UsageError

FORMAT = "llmtools-dedup-index"
VERSION = 1


def encode_id(rec_id: Any) -> bytes:
    import orjson

    return orjson.dumps(rec_id)


def decode_id(raw: bytes) -> Any:
    import orjson

    return orjson.loads(raw)


# --------------------------------------------------------------------------- exact


class ExactIndex:
    """digest (bytes) -> kept id, in memory."""

    def __init__(self) -> None:
        self.seen: dict[bytes, Any] = {}

    def __len__(self) -> int:
        return len(self.seen)

    def claim(self, items: Sequence[tuple[bytes, Any]]) -> list[tuple[Any, float] | None]:
        out: list[tuple[Any, float] | None] = []
        for digest, rec_id in items:
            kept = self.seen.setdefault(digest, rec_id)
            out.append(None if kept is rec_id else (kept, 1.0))
        return out

    # -- persistence
    def arrays(self) -> dict[str, Any]:
        import numpy as np

        digests = np.frombuffer(b"".join(self.seen.keys()), dtype=np.uint8).reshape(-1, 16)
        return {"digests": digests, **_pack_ids(list(self.seen.values()))}

    def load_arrays(self, data: Any) -> None:
        digests = data["digests"]
        ids = _unpack_ids(data)
        if digests.ndim != 2 or digests.shape[1] != 16 or len(ids) != digests.shape[0]:
            raise BadInputError("index arrays have inconsistent shapes")
        for row, rec_id in zip(digests, ids):
            self.seen[row.tobytes()] = rec_id


class RedisExactIndex:
    """digest -> kept id in Redis; SET NX makes the first writer win across processes."""

    def __init__(self, client: Any, basename: bytes) -> None:
        self.r = client
        self.prefix = basename + b":exact:"

    def __len__(self) -> int:
        return sum(1 for _ in self.r.scan_iter(match=self.prefix + b"*", count=1000))

    def claim(self, items: Sequence[tuple[bytes, Any]]) -> list[tuple[Any, float] | None]:
        pipe = self.r.pipeline(transaction=False)
        for digest, rec_id in items:
            pipe.set(self.prefix + digest, encode_id(rec_id), nx=True, get=True)
        out: list[tuple[Any, float] | None] = []
        for (digest, rec_id), old in zip(items, pipe.execute()):
            out.append(None if old is None else (decode_id(old), 1.0))
        return out


# --------------------------------------------------------------------------- near


class NearIndex:
    """MinHash signatures in LSH bands (bands.BandTable) plus a compact signature matrix: a
    candidate is accepted when the Jaccard estimated from the two full signatures reaches the
    threshold (or, with `verify`, the exact Jaccard of stored shingle sets)."""

    def __init__(self, shingler: Any, threshold: float, verify: bool = False, bands: tuple[int, int] | None = None) -> None:
        import numpy as np

        from llmtools.ops.dedup.bands import BandTable
        from llmtools.ops.dedup.minhash import recall_bands

        self.np = np
        self.sh = shingler
        self.threshold = threshold
        self.verify = verify
        self.bands = tuple(bands) if bands else recall_bands(threshold, shingler.num_perm)
        self.table = BandTable(shingler.num_perm, *self.bands)
        self.sigs = np.empty((1024, shingler.num_perm), dtype=np.uint32)
        self.ids: list[Any] = []
        self.sets: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _add(self, sig: Any, rec_id: Any, shingles: Any, keys: list[int]) -> None:
        key = len(self.ids)
        if key == len(self.sigs):
            self.sigs = self.np.concatenate([self.sigs, self.np.empty_like(self.sigs)])
        self.sigs[key] = sig
        self.ids.append(rec_id)
        if self.verify and shingles is not None:
            self.sets[key] = self.np.unique(shingles)
        self.table.insert(keys, key)

    def _pick(self, cands: list, cand_sigs: Any, sig: Any, shingles: Any, id_of: Any, set_of: Any) -> tuple[Any, float] | None:
        np = self.np
        # Matching positions per candidate, as Python ints: counts / num_perm is the estimate
        # (bit-identical to the float mean, at a third of the numpy overhead for the usual
        # one to three candidates).
        counts = (cand_sigs == sig).sum(axis=1).tolist()
        width = cand_sigs.shape[1]
        order = sorted(range(len(cands)), key=lambda i: (-counts[i], str(cands[i]))) if len(cands) > 1 else [0]
        query_set = np.unique(shingles) if (self.verify and shingles is not None) else None
        for i in order:
            sim = counts[i] / width
            ref = set_of(cands[i]) if query_set is not None else None
            if ref is not None:
                sim = exact_jaccard(query_set, ref)
            elif sim < self.threshold:
                break  # sorted by estimate: nothing later passes without a set to verify
            if sim >= self.threshold:
                return id_of(cands[i]), round(sim, 4)
        return None

    def claim(self, items: Sequence[tuple[Any, Any, Any]]) -> list[tuple[Any, float] | None]:
        if not items:
            return []
        out: list[tuple[Any, float] | None] = []
        table, ids = self.table, self.ids
        for (sig, rec_id, shingles), keys in zip(items, table.keys(self.np.stack([it[0] for it in items]))):
            cands = table.query(keys)
            hit = self._pick(cands, self.sigs[cands], sig, shingles, ids.__getitem__, self.sets.get) if cands else None
            if hit is None:
                self._add(sig, rec_id, shingles, keys)
            out.append(hit)
        return out

    # -- persistence (signatures and ids only: the bands are rebuilt on load, with this run's
    # (bands, rows), so an index saved under other bands is re-banded, never misread)
    def arrays(self) -> dict[str, Any]:
        return {"signatures": self.sigs[: len(self.ids)], **_pack_ids(self.ids)}

    def load_arrays(self, data: Any) -> None:
        np = self.np
        sigs = data["signatures"]
        ids = _unpack_ids(data)
        if sigs.dtype != np.uint32 or sigs.ndim != 2 or sigs.shape[1] != self.sh.num_perm or len(ids) != sigs.shape[0]:
            raise BadInputError("index arrays have inconsistent shapes or types")
        self.sigs = np.array(sigs, dtype=np.uint32)
        if not len(self.sigs):
            self.sigs = np.empty((1024, self.sh.num_perm), dtype=np.uint32)
        self.ids = ids
        for lo in range(0, len(ids), 65536):
            self.table.insert_many(self.sigs[lo : min(lo + 65536, len(ids))], lo)


class RedisNearIndex(NearIndex):
    """A MinHashLSH in Redis (datasketch storage, bytes keys, no pickling) shared by workers,
    with the (bands, rows) recorded in the index's settings; signatures are stored beside it,
    so candidates are verified on their full signatures as in memory.

    Query-then-insert must be atomic across processes, or two workers that meet two copies of
    one document at the same time would both keep theirs. Each batch therefore runs under a
    Redis lock (SET NX with a token and expiry, released by compare-and-delete: redis-py's
    Lock); signatures are computed outside it, so only the index lookups are serialised.
    """

    def __init__(self, shingler: Any, threshold: float, client: Any, basename: bytes, config: dict, bands: tuple[int, int]) -> None:
        from llmtools.ops.dedup.minhash import new_lsh

        super().__init__(shingler, threshold, verify=False, bands=bands)
        storage = {"type": "redis", "basename": basename, "redis": config}
        self.lsh = new_lsh(threshold, shingler.num_perm, params=self.bands, storage_config=storage, prepickle=False)
        self.r = client
        self.base = basename
        self.sig_key = basename + b":sig"
        self.id_key = basename + b":id"
        self.seq_key = basename + b":seq"

    def __len__(self) -> int:
        return int(self.r.hlen(self.id_key))

    def claim(self, items: Sequence[tuple[Any, Any, Any]]) -> list[tuple[Any, float] | None]:
        """One batch in a fixed number of round trips, not a few per record (16 bands would
        otherwise mean 16 lookups and 16 inserts per record): every band of every record is
        looked up with one pipeline per band (datasketch's `getmany`), candidates' signatures
        and kept ids come with one HMGET each, record numbers are reserved with one INCRBY, and
        what is kept is written with one pipeline. Records of the batch see each other through
        a local table of the batch's own band keys, so the result is the same as one at a time."""
        np = self.np
        if not items:
            return []
        lsh = self.lsh
        with self.r.lock(self.base + b":lock", timeout=60, blocking_timeout=600):
            bands = [[lsh._H(sig[lo:hi]) for lo, hi in lsh.hashranges] for sig, _, _ in items]
            found: list[set] = [set() for _ in items]
            for b, table in enumerate(lsh.hashtables):
                for i, keys in enumerate(table.getmany(*[row[b] for row in bands])):
                    found[i].update(keys)
            known = sorted(set().union(*found))
            stored = dict(zip(known, self.r.hmget(self.sig_key, known))) if known else {}
            first = int(self.r.incrby(self.seq_key, len(items))) - len(items) + 1
            local: dict[tuple[int, bytes], list[bytes]] = {}
            local_sig: dict[bytes, Any] = {}
            local_id: dict[bytes, Any] = {}
            hits: list[tuple[Any, float] | None] = []
            for i, (sig, rec_id, _) in enumerate(items):
                cands = [c for c in found[i] if stored.get(c) is not None]
                cands += [k for b, h in enumerate(bands[i]) for k in local.get((b, h), ())]
                cands = list(dict.fromkeys(cands))
                hit = None
                if cands:
                    cand_sigs = np.stack([local_sig[c] if c in local_sig else np.frombuffer(stored[c], dtype=np.uint32) for c in cands])
                    hit = self._pick(cands, cand_sigs, sig, None, lambda k: k, lambda k: None)
                if hit is None:
                    key = str(first + i).encode()
                    local_sig[key] = np.ascontiguousarray(sig, dtype=np.uint32)
                    local_id[key] = rec_id
                    for b, h in enumerate(bands[i]):
                        local.setdefault((b, h), []).append(key)
                hits.append(hit)
            need = sorted({h[0] for h in hits if h is not None and h[0] not in local_id})
            kept_ids = dict(zip(need, self.r.hmget(self.id_key, need))) if need else {}
            out: list[tuple[Any, float] | None] = [
                None if h is None else (local_id[h[0]] if h[0] in local_id else decode_id(kept_ids[h[0]]), h[1]) for h in hits
            ]
            if local_sig:
                pipe = self.r.pipeline(transaction=True)
                for key, sig in local_sig.items():
                    pipe.hset(self.sig_key, key, sig.tobytes())
                    pipe.hset(self.id_key, key, encode_id(local_id[key]))
                pipe.execute()
                with lsh.insertion_session() as session:
                    for key, sig in local_sig.items():
                        session.insert(key, self.sh.minhash(sig), check_duplication=False)
        return out


def exact_jaccard(a: Any, b: Any) -> float:
    """Jaccard of two sorted unique uint32 arrays."""
    import numpy as np

    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def _pack_ids(ids: list[Any]) -> dict[str, Any]:
    import numpy as np

    blobs = [encode_id(i) for i in ids]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    if blobs:
        np.cumsum([len(b) for b in blobs], out=offsets[1:])
    return {"id_bytes": np.frombuffer(b"".join(blobs), dtype=np.uint8), "id_offsets": offsets}


def _unpack_ids(data: Any) -> list[Any]:
    raw = data["id_bytes"].tobytes()
    off = data["id_offsets"]
    if off.ndim != 1 or (len(off) and (off[0] != 0 or off[-1] != len(raw))):
        raise BadInputError("index id table is corrupt")
    try:
        return [decode_id(raw[off[i] : off[i + 1]]) for i in range(len(off) - 1)]
    except ValueError as exc:
        raise BadInputError(f"index id table is corrupt: {exc}") from None


# --------------------------------------------------------------------------- opening


class FileStore:
    """`--index PATH`: load at start, save atomically at the end of a successful run. An
    exclusive lock on PATH.lock makes overlapping runs (two cron jobs) take turns."""

    def __init__(self, path: str, header: dict) -> None:
        self.path = path
        self.header = header
        self._lock_fh: Any = None

    def lock(self) -> None:
        import fcntl

        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._lock_fh = open(self.path + ".lock", "a")
        fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX)

    def unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def load(self, index: Any) -> int:
        import numpy as np

        if not os.path.exists(self.path):
            return 0
        try:
            with np.load(self.path, allow_pickle=False) as data:
                header = json.loads(data["header"].tobytes().decode("utf-8"))
                if header.get("format") != FORMAT:
                    raise BadInputError(f"{self.path}: not a dedup index")
                if header.get("version") != VERSION:
                    raise BadInputError(f"{self.path}: index version {header.get('version')} is not supported")
                # The bands are recorded but not compared: they are rebuilt on load (re-banding).
                mismatch = {k: (header.get(k), v) for k, v in self.header.items()
                            if k not in ("format", "version", "count", "bands") and header.get(k) != v}
                if mismatch:
                    detail = ", ".join(f"{k}: index has {a!r}, run has {b!r}" for k, (a, b) in mismatch.items())
                    raise UsageError(f"{self.path}: index was built with other settings ({detail})")
                index.load_arrays(data)
        except (OSError, ValueError, KeyError) as exc:
            raise BadInputError(f"{self.path}: cannot read index: {exc}") from None
        return len(index)

    def save(self, index: Any) -> None:
        import numpy as np

        header = dict(self.header, count=len(index))
        arrays = index.arrays()
        arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def redis_target(url: str) -> tuple[dict, bytes]:
    """redis://HOST:PORT/DB[?name=NAME] -> (redis.Redis kwargs, key prefix)."""
    parts = urlparse(url)
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError(f"--index: not a redis URL: {url}")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise UsageError(f"--index: database must be a number in {url}")
    config: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 6379, "db": int(db)}
    if parts.password:
        config["password"] = parts.password
    if parts.username:
        config["username"] = parts.username
    if parts.scheme == "rediss":
        config["ssl"] = True
    name = parse_qs(parts.query).get("name", ["default"])[0]
    return config, f"llmtools:dedup:{name}".encode()


def open_redis(url: str, header: dict, bands: tuple[int, int] | None = None, explicit: bool = False) -> tuple[Any, dict, bytes, tuple[int, int] | None, str | None]:
    """Connect, and check (or record, first come) the settings the shared index was built with.

    A near index's LSH lives in Redis, so its (bands, rows) cannot change under it: they are
    part of the recorded settings. An index recorded without them was built before they were
    (datasketch's `lsh_params` bands). When the run's bands differ from the index's, a run that
    asked for bands (--bands, --recall-target) is refused; otherwise the index's bands are used
    and the returned note says so. Returns (client, redis kwargs, key prefix, bands, note)."""
    from llmtools.errors import require

    redis = require("redis", "redis", purpose="--index redis://")
    config, base = redis_target(url)
    client = redis.Redis(**config)
    wanted = dict(header, bands=list(bands)) if bands else header
    try:
        client.set(base + b":config", json.dumps(wanted, sort_keys=True), nx=True)
        stored = json.loads(client.get(base + b":config"))
    except redis.exceptions.ConnectionError as exc:
        raise RuntimeFailure(f"--index {url}: cannot connect to redis: {exc}") from None
    if {k: v for k, v in stored.items() if k != "bands"} != header:
        diff = ", ".join(f"{k}: index has {stored.get(k)!r}, run has {v!r}" for k, v in header.items() if stored.get(k) != v)
        raise UsageError(f"--index {url}: index was built with other settings ({diff})")
    if not bands:
        return client, config, base, None, None
    from llmtools.ops.dedup.minhash import lsh_params

    have = tuple(stored["bands"]) if "bands" in stored else lsh_params(header["threshold"], header["num_perm"])
    if have == tuple(bands):
        return client, config, base, have, None
    b, r = have
    if explicit:
        raise UsageError(f"--index {url}: index was built with {b}x{r} LSH bands, the run asks for "
                         f"{bands[0]}x{bands[1]}: pass --bands {b}x{r}, or start a new index (?name=...)")
    from llmtools.ops.dedup.minhash import candidate_probability

    note = (f"--index {url}: using the index's {b}x{r} LSH bands (P(candidate | J={header['threshold']}) = "
            f"{candidate_probability(header['threshold'], b, r):.3f}); a new index (?name=...) gets "
            f"{bands[0]}x{bands[1]} ({candidate_probability(header['threshold'], *bands):.3f})")
    return client, config, base, have, note
