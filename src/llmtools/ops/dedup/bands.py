"""LSH banding over MinHash signatures, held in one Python dict.

A signature's first `bands * rows` values are cut into `bands` bands of `rows` values; each band
becomes one 60-bit key (its values and its band number through a multiply-add and the 64-bit
MurmurHash3 finalizer, computed for a whole batch in numpy). Two documents are candidates when
they share a key. All bands share one dict, key -> document number (an int), or a list of
numbers once a second document lands in the same bucket.

Why not datasketch's MinHashLSH here: its in-memory storage keeps, per band and document, a
bytes key, a set and a list entry (~330 bytes), which is fine at 9 bands but would cost ~6.4 KB
per document at the 16 bands recall needs (see benchmarks/dedup/README.md); this table costs
~90 bytes per band and document, and its lookups are one `dict.get` per band. The Redis index
still uses datasketch's MinHashLSH (with the same (bands, rows)), so that workers share it.

Two different bands can map to one key (probability ~2**-32 per pair and band for this hash):
that only makes an extra candidate, and every candidate is verified on its signature.
"""

from __future__ import annotations

from typing import Any, Iterable


def _odd_constants(n: int, start: int) -> list[int]:
    """n fixed odd 64-bit constants (splitmix64 from `start`)."""
    mask = (1 << 64) - 1
    out, x = [], start
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & mask
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append((z ^ (z >> 31)) | 1)
    return out


class BandTable:
    """Documents' band keys -> document numbers; `query` then `insert` per document."""

    def __init__(self, num_perm: int, bands: int, rows: int) -> None:
        import numpy as np

        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"{bands} bands of {rows} rows need more than {num_perm} permutations")
        self.np = np
        self.bands, self.rows = bands, rows
        self.mult = np.array(_odd_constants(rows, 0x5EED), dtype=np.uint64)
        self.salt = np.array(_odd_constants(bands, 0xBA4D), dtype=np.uint64)
        self.table: dict[int, Any] = {}

    def __getstate__(self) -> dict:  # picklable (a Spark broadcast of --against references): no module
        state = dict(self.__dict__)
        del state["np"]
        return state

    def __setstate__(self, state: dict) -> None:
        import numpy as np

        self.__dict__.update(state)
        self.np = np

    def __len__(self) -> int:
        return len(self.table)

    def keys(self, sigs: Any) -> list[list[int]]:
        """Each signature's band keys (a list of `bands` ints per row of `sigs`)."""
        # 60 bits: a Python int below 2**60 is 32 bytes, above it 36
        return self.key_array(sigs).tolist()

    def key_array(self, sigs: Any) -> Any:
        """The band keys of `keys` as an int64 array (len(sigs) x bands), for batch work."""
        np = self.np
        b, r = self.bands, self.rows
        cut = np.ascontiguousarray(sigs[:, : b * r]).reshape(len(sigs), b, r)
        with np.errstate(over="ignore"):
            h = np.broadcast_to(self.salt, (len(sigs), b)).copy()
            for k in range(r):
                h += cut[:, :, k].astype(np.uint64) * self.mult[k]
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xC4CEB9FE1A85EC53)
            h ^= h >> np.uint64(33)
        return (h >> np.uint64(4)).astype(np.int64)

    def query(self, keys: list[int]) -> list[int]:
        """Document numbers sharing at least one band key, each once, in first-seen order."""
        found = [v for v in map(self.table.get, keys) if v is not None]
        if not found:
            return []
        out: list[int] = []
        for v in found:
            if type(v) is list:
                out.extend(v)
            else:
                out.append(v)
        return list(dict.fromkeys(out)) if len(out) > 1 else out

    def insert(self, keys: Iterable[int], doc: int) -> None:
        table = self.table
        for k in keys:
            v = table.setdefault(k, doc)
            if type(v) is list:
                v.append(doc)
            elif v != doc:
                table[k] = [v, doc]

    def insert_many(self, sigs: Any, first: int) -> None:
        """Insert rows of `sigs` as documents first, first + 1, ... (e.g. an index being loaded)."""
        for offset, keys in enumerate(self.keys(sigs)):
            self.insert(keys, first + offset)
