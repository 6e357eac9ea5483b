"""Shingling and MinHash signatures for many documents at once.

The MinHash itself is datasketch's (scheme "affine32"): its permutations `(a, b)` come from a
`datasketch.MinHash(num_perm, seed)` and its input pre-mix is datasketch's own finalizer. What
this module adds is batching: a chunk of documents becomes one array of shingle hashes, the
permutations are applied to the whole array at once and `np.minimum.reduceat` takes each
document's minima. The result is bit-for-bit what `MinHash(hashfunc=shingle_hashfunc(...))`
gives with `update_batch` one document at a time (a test checks this); it is just not a Python
loop per document.

Shingle hashes are seed-independent 32-bit values: each token (a word, or a character for
`char` shingles) gets a 64-bit value, an n-gram is a fixed polynomial of its tokens' values,
mixed with the 64-bit MurmurHash3 finalizer and cut to its top 32 bits. A word's value is a
polynomial hash of its UTF-8 bytes modulo 2**64 (multiplier: the 64-bit FNV prime), xored with
its length and mixed with the same finalizer; a character's value is its code point. Word
values are computed for a whole chunk at once in numpy, without a Python object per word
(about 2x faster than splitting into words and hashing each), and the same text hashes the
same in every process and run (Python's `hash()` is salted per process and would break
persisted indexes). Polynomial hashes modulo 2**64 can be made to collide on purpose with
words of thousands of bytes; a collision only merges two words' shingles.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Sequence

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
# Enough shingles per vectorised block to amortise numpy overhead, small enough that the
# (num_perm x shingles) uint32 buffer (4 MB at 128 permutations) stays mostly in cache:
# 8192 ran ~1.3x faster than 32768 on 1 KB documents.
BLOCK_SHINGLES = 8192
# Text bytes hashed per vectorised pass (see Shingler.token_arrays).
SEGMENT_BYTES = 1 << 22

# Fixed, seed-independent odd multipliers for combining n-gram tokens (splitmix64 output).
_M64 = (1 << 64) - 1
_FNV_PRIME = 0x100000001B3
_POW_CACHE = 1 << 16


def import_datasketch() -> Any:
    """`import datasketch` without paying for scipy.integrate at start-up.

    datasketch's `lsh` module does `from scipy.integrate import quad` at import time, which
    costs ~0.5 s (scipy.special, scipy.optimize, ...), the largest part of dedup's start-up;
    `quad` is only called to pick LSH bands when no `params` are given, and dedup passes
    `lsh_params()` instead. So while datasketch imports, `scipy.integrate` is a stand-in whose
    `quad` imports the real one on first call (MinHashLSHEnsemble does call it); the stand-in
    is removed right after, so any later `import scipy.integrate` gets the real module."""
    if "datasketch" in sys.modules or "scipy.integrate" in sys.modules:
        import datasketch

        return datasketch
    import importlib
    import types

    def quad(*args: Any, **kwargs: Any) -> Any:
        return importlib.import_module("scipy.integrate").quad(*args, **kwargs)

    standin = types.ModuleType("scipy.integrate")
    standin.quad = quad  # type: ignore[attr-defined]
    sys.modules["scipy.integrate"] = standin
    try:
        import datasketch
    finally:
        if sys.modules.get("scipy.integrate") is standin:
            del sys.modules["scipy.integrate"]
        scipy = sys.modules.get("scipy")
        # vars(), not getattr(): scipy's module __getattr__ would import the real submodule.
        if scipy is not None and vars(scipy).get("integrate") is standin:
            delattr(scipy, "integrate")
    return datasketch


def _legendre(m: int, x: Any) -> tuple[Any, Any]:
    """(P_m(x), d/dx P_m(x)) by the three-term recurrence."""
    import numpy as np

    p_prev, p = np.ones_like(x), x
    for k in range(2, m + 1):
        p_prev, p = p, ((2 * k - 1) * x * p - (k - 1) * p_prev) / k
    return p, m * (x * p - p_prev) / (x * x - 1)


def _gauss_legendre(m: int) -> tuple[Any, Any]:
    """Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on the Legendre
    recurrence (numpy's leggauss solves an eigenproblem through LAPACK, whose idle OpenBLAS
    threads then spin: ~0.2 CPU seconds of a 2-core machine at every start-up)."""
    import numpy as np

    x = np.cos(np.pi * (np.arange(1, m + 1) - 0.25) / (m + 0.5))
    for _ in range(100):
        p, deriv = _legendre(m, x)
        step = p / deriv
        x = x - step
        if np.abs(step).max() < 1e-15:
            break
    deriv = _legendre(m, x)[1]
    return x, 2 / ((1 - x * x) * deriv * deriv)


def lsh_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """The (bands, rows) MinHashLSH would choose for `threshold` (its `_optimal_param`), computed
    without scipy: the same search over (b, r), minimising the weighted integrals of the false
    positive and false negative probabilities. The integrands are polynomials of degree b*r <=
    num_perm, so Gauss-Legendre with num_perm//2 + 1 nodes integrates them exactly (scipy's
    adaptive `quad` agrees to ~1e-10; a test checks both choose the same bands)."""
    import numpy as np

    nodes, w = _gauss_legendre(num_perm // 2 + 1)
    lo_x, lo_w = threshold / 2 * (nodes + 1), threshold / 2 * w  # [0, threshold]
    hi_x, hi_w = (1 - threshold) / 2 * (nodes + 1) + threshold, (1 - threshold) / 2 * w  # [threshold, 1]
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = float((lo_w * (1 - (1 - lo_x ** float(r)) ** float(b))).sum())
            fn = float((hi_w * (1 - hi_x ** float(r)) ** float(b)).sum())
            error = fp * weights[0] + fn * weights[1]
            if error < best:
                best, opt = error, (b, r)
    return opt


def candidate_probability(j: float, bands: int, rows: int) -> float:
    """P(a pair at Jaccard j shares at least one band): 1 - (1 - j**rows)**bands."""
    return 1.0 - (1.0 - j**rows) ** bands


def recall_bands(threshold: float, num_perm: int, target: float = 0.99) -> tuple[int, int]:
    """(bands, rows) under which a pair at exactly `threshold` is an LSH candidate with
    probability >= `target`, using at most `num_perm` signature rows.

    Among the choices that reach the target it takes the longest bands (largest `rows`, then the
    fewest bands that reach the target): the steepest curve, so the fewest candidates below the
    threshold to verify, and no more bands than needed (each costs memory and a lookup per
    document). For 0.8 and 128 permutations: 16 bands of 6 rows, P = 0.992 at J = 0.8 (datasketch's
    "least FP + FN area" choice, 9 x 13, gives 0.40 there and 0.85 at J = 0.88). When no choice
    reaches the target (a very low threshold), every row is its own band: the most recall there is."""
    import math

    if not 0.0 < target < 1.0:
        raise ValueError("recall target must be in (0, 1)")
    for rows in range(num_perm, 0, -1):
        p = threshold**rows
        if p >= 1.0:
            return 1, rows
        if p <= 0.0:
            continue
        bands = max(1, math.ceil(math.log1p(-target) / math.log1p(-p)))
        # the float ceiling can land one short of the target: step up until it holds
        while bands * rows <= num_perm and candidate_probability(threshold, bands, rows) < target:
            bands += 1
        if bands * rows <= num_perm:
            return bands, rows
    return num_perm, 1


def accept_probability(j: float, threshold: float, num_perm: int, bands: int, rows: int) -> float:
    """P(a pair at Jaccard j is found) when a candidate is accepted on its signature estimate:
    some band of `rows` rows matches in full AND at least ceil(threshold * num_perm) of the
    `num_perm` positions match. Each position matches independently with probability j (the
    MinHash model), so this is exact under it: a dynamic programme over bands, carrying the
    number of matching positions and whether a band has matched in full yet."""
    import math

    need = math.ceil(threshold * num_perm - 1e-9)
    # dist[full][k]: probability that k positions match so far, with (full=1) or without a full band
    dist = [[0.0] * (num_perm + 1), [0.0] * (num_perm + 1)]
    dist[0][0] = 1.0
    band = [math.comb(rows, k) * j**k * (1 - j) ** (rows - k) for k in range(rows + 1)]
    for _ in range(bands):
        nxt = [[0.0] * (num_perm + 1), [0.0] * (num_perm + 1)]
        for full in (0, 1):
            for k, pk in enumerate(dist[full]):
                if pk:
                    for m, pm in enumerate(band):
                        nxt[1 if (full or m == rows) else 0][k + m] += pk * pm
        dist = nxt
    rest = num_perm - bands * rows
    tail = [math.comb(rest, k) * j**k * (1 - j) ** (rest - k) for k in range(rest + 1)]
    return sum(pk * pm for k, pk in enumerate(dist[1]) if pk for m, pm in enumerate(tail) if k + m >= need)


def estimate_error(j: float, num_perm: int) -> float:
    """Standard error of the MinHash Jaccard estimate: sqrt(j (1 - j) / num_perm) (0.035 at
    j = 0.8 with 128 permutations)."""
    return (j * (1 - j) / num_perm) ** 0.5


def new_lsh(threshold: float, num_perm: int, params: tuple[int, int] | None = None, **kwargs: Any) -> Any:
    """A datasketch MinHashLSH for `threshold` with `params` (bands, rows), by default
    `lsh_params`' choice (so neither the import nor the constructor needs scipy)."""
    params = params or lsh_params(threshold, num_perm)
    return import_datasketch().MinHashLSH(num_perm=num_perm, params=params, **kwargs)


def _splitmix(n: int) -> list[int]:
    out, x = [], 0x9E3779B97F4A7C15
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append((z ^ (z >> 31)) | 1)
    return out


# Words are maximal runs of \w characters, lowercased. Text that is ASCII takes a fast path
# with the same result as the regex: its bytes go through one 256-entry table mapping every
# byte that is not [A-Za-z0-9_] to a space, then bytes.split() (2-3x faster than re.findall).
# Most non-ASCII English text is ASCII apart from typographic punctuation; those characters are
# not \w, so turning them into spaces first changes nothing and lets such text take the fast
# path too (a test checks both paths agree).
_ASCII_NONWORD = bytes(b if b < 128 and (chr(b).isalnum() or b == 95) else 32 for b in range(256))
_NONWORD_PUNCT = "\u2019\u2018\u201c\u201d\u2026\u2014\u2013\u00a0\u00ab\u00bb\u2022\u00b7\u00b0\u00a9\u00ae\u2122\u20ac\u00a3\u00a7\u00b6"


def word_bytes(text: str) -> bytes:
    """The text's words, lowercased, as UTF-8 bytes separated by runs of spaces."""
    if not text.isascii():
        plain = text
        for ch in _NONWORD_PUNCT:
            if ch in plain:
                plain = plain.replace(ch, " ")
        if not plain.isascii():
            # The original text, not `plain`: str.lower() is context-sensitive (a capital
            # sigma before an apostrophe lowercases differently than before a space).
            return " ".join(_WORD.findall(text.lower())).encode("utf-8", "surrogatepass")
        text = plain
    return text.encode("ascii").translate(_ASCII_NONWORD).lower()


def _segments(data: bytes, size: int) -> list[bytes]:
    """`data` cut at spaces into pieces of about `size` bytes (a word longer than that stays
    whole)."""
    if len(data) <= size:
        return [data]
    out, start = [], 0
    while len(data) - start > size:
        cut = data.rfind(b" ", start, start + size)
        if cut <= start:
            cut = data.find(b" ", start + size)
            if cut == -1:
                break
        out.append(data[start:cut])
        start = cut + 1
    out.append(data[start:])
    return out


def char_text(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


class Shingler:
    """Turns texts into shingle-hash sequences and MinHash signatures."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5, unit: str = "word"):
        import numpy as np

        MinHash = import_datasketch().MinHash
        from datasketch.minhash import _fmix

        if unit not in ("word", "char"):
            raise ValueError(f"unknown shingle unit {unit!r}")
        if ngram < 1:
            raise ValueError("ngram must be at least 1")
        self.np = np
        self.num_perm, self.seed, self.ngram, self.unit = num_perm, seed, ngram, unit
        self.template = MinHash(num_perm=num_perm, seed=seed, scheme="affine32")
        self.perm_a = self.template.permutations[0].astype(np.uint32)
        self.perm_b = self.template.permutations[1].astype(np.uint32)
        self._fmix = _fmix
        self.mult = np.array(_splitmix(ngram), dtype=np.uint64)
        self._buf: Any = None
        self._pow = np.ones(1, dtype=np.uint64)

    # Picklable (a Spark broadcast, a worker process): without the numpy module and the buffer.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["np"]
        state["_buf"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        import numpy as np

        self.__dict__.update(state)
        self.np = np

    # -- tokens -> shingle hashes
    def _powers(self, size: int) -> Any:
        """FNV_PRIME ** i modulo 2**64 for i < size: cached up to 64K (words longer than that,
        say a base64 blob, get a table of their own that is not kept)."""
        np = self.np
        if len(self._pow) >= size:
            return self._pow
        grown = np.full(max(size, min(2 * len(self._pow), _POW_CACHE)), _FNV_PRIME, dtype=np.uint64)
        grown[0] = 1
        with np.errstate(over="ignore"):
            table = np.cumprod(grown, dtype=np.uint64)
        if len(table) <= _POW_CACHE:
            self._pow = table
        return table

    def token_arrays(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """(values, lengths): every document's token values (uint64) concatenated, and how many
        each document has."""
        np = self.np
        if self.unit == "char":
            runs = [np.frombuffer(char_text(t).encode("utf-32-le", "surrogatepass"), dtype=np.uint32) for t in texts]
            lengths = np.fromiter(map(len, runs), dtype=np.int64, count=len(runs))
            values = np.concatenate(runs).astype(np.uint64) if runs else np.zeros(0, dtype=np.uint64)
            return values, lengths
        # Hashed a segment of up to SEGMENT_BYTES of text at a time: the vectorised pass needs
        # ~70 bytes of temporaries per byte of text, so one huge record (a book, a dump) is
        # cut at spaces into segments, which changes no word.
        group: list[bytes] = []
        owners: list[int] = []
        size = 0
        values: list[Any] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            for piece in _segments(word_bytes(text), SEGMENT_BYTES):
                if group and size + len(piece) > SEGMENT_BYTES:
                    self._hash_group(group, owners, values, lengths)
                    group, owners, size = [], [], 0
                group.append(piece)
                owners.append(i)
                size += len(piece)
        if group:
            self._hash_group(group, owners, values, lengths)
        if not values:
            return np.zeros(0, dtype=np.uint64), lengths
        return (values[0] if len(values) == 1 else np.concatenate(values)), lengths

    def _hash_group(self, pieces: list[bytes], owners: list[int], values: list[Any], lengths: Any) -> None:
        np = self.np
        v, counts = self._hash_words(pieces)
        values.append(v)
        np.add.at(lengths, np.asarray(owners, dtype=np.int64), counts)

    def _hash_words(self, pieces: list[bytes]) -> tuple[Any, Any]:
        """Word values of every piece (words separated by spaces), concatenated, and how many
        words each piece has."""
        np = self.np
        # All pieces' words as one byte array: words are runs of bytes > 32 (UTF-8 of \w
        # characters), separated by spaces; a newline ends each piece.
        arr = np.frombuffer(b"\n".join(pieces) + b"\n", dtype=np.uint8)
        word = arr > 32
        edge = np.diff(word.view(np.int8), prepend=np.int8(0))
        starts = np.flatnonzero(edge == 1)
        lens = np.flatnonzero(edge == -1) - starts
        counts = np.bincount(np.searchsorted(np.flatnonzero(arr == 10), starts), minlength=len(pieces)).astype(np.int64)
        if not len(lens):
            return np.zeros(0, dtype=np.uint64), counts
        inside = np.flatnonzero(word)
        ends = np.cumsum(lens)
        with np.errstate(over="ignore"):
            # sum of byte * P**(index in word), per word: differences of one running sum
            terms = arr[inside].astype(np.uint64) * self._powers(int(lens.max()))[inside - np.repeat(starts, lens)]
            run = np.cumsum(terms, dtype=np.uint64)[ends - 1]
            poly = run.copy()
            poly[1:] -= run[:-1]
        return self._fmix(poly ^ lens.astype(np.uint64), 64), counts

    def _token_values(self, text: str) -> list[int]:
        return self.token_arrays([text])[0].tolist()

    def shingle_arrays(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """(H, starts): every document's shingle hashes (uint32, in text order, duplicates kept)
        concatenated, and where each document's run begins. Each document has at least one
        shingle: a text shorter than the n-gram is one shingle, an empty text hashes to one
        fixed value, so empty texts are duplicates of each other."""
        np = self.np
        n = self.ngram
        values, lengths = self.token_arrays(texts)
        # Token values with n zeros after each document, so an n-gram that would run past its
        # document's end reads zeros (short and empty documents), and every n-gram sum is a
        # sum of n contiguous slices instead of n gathers.
        size = len(values) + len(texts) * n
        tok = np.zeros(size + n, dtype=np.uint64)
        tok[np.arange(len(values), dtype=np.int64) + np.repeat(np.arange(len(texts), dtype=np.int64) * n, lengths)] = values
        counts = np.maximum(lengths - n + 1, 1)
        starts = np.zeros(len(texts), dtype=np.int64)
        if len(texts) > 1:
            np.cumsum(counts[:-1], out=starts[1:])
        doc_start = np.zeros(len(texts), dtype=np.int64)
        if len(texts) > 1:
            np.cumsum(lengths[:-1] + n, out=doc_start[1:])
        total = int(counts.sum())
        pos = np.arange(total, dtype=np.int64) + np.repeat(doc_start - starts, counts)
        with np.errstate(over="ignore"):
            full = tok[:size] * self.mult[0]
            for k in range(1, n):
                full += tok[k : size + k] * self.mult[k]
        acc = full[pos]
        h = self._fmix(acc, 64) >> np.uint64(32)
        return h.astype(np.uint32), starts

    def shingles(self, text: str) -> Any:
        return self.shingle_arrays([text])[0]

    # -- shingle hashes -> signatures (datasketch affine32)
    def minhash_arrays(self, h: Any, starts: Any) -> Any:
        """Signatures (len(starts) x num_perm, uint32) of the runs of `h` beginning at `starts`."""
        np = self.np
        out = np.empty((len(starts), self.num_perm), dtype=np.uint32)
        if not len(starts):
            return out
        a, b = self.perm_a[:, None], self.perm_b[:, None]
        hv = self._fmix(h.astype(np.uint32), 32)
        bounds = np.append(starts, len(h)).tolist()
        if self._buf is None:
            self._buf = np.empty((self.num_perm, BLOCK_SHINGLES), dtype=np.uint32)
        i, n = 0, len(starts)
        while i < n:  # blocks of whole documents, about BLOCK_SHINGLES each
            j = i + 1
            while j < n and bounds[j + 1] - bounds[i] <= BLOCK_SHINGLES:
                j += 1
            lo, hi = bounds[i], bounds[j]
            if hi - lo > BLOCK_SHINGLES:  # one document bigger than a block: a running minimum
                acc = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
                for s0 in range(lo, hi, BLOCK_SHINGLES):
                    phv = self._buf[:, : min(BLOCK_SHINGLES, hi - s0)]
                    np.multiply(a, hv[None, s0 : s0 + phv.shape[1]], out=phv)
                    np.add(phv, b, out=phv)
                    np.minimum(acc, phv.min(axis=1), out=acc)
                out[i] = acc
                i = j
                continue
            # (num_perm x shingles), computed in place in a reused buffer (temporaries cost
            # ~3x), then reduced along the contiguous axis (~5x faster than across it).
            phv = self._buf[:, : hi - lo]
            np.multiply(a, hv[None, lo:hi], out=phv)
            np.add(phv, b, out=phv)
            out[i:j] = np.minimum.reduceat(phv, np.asarray(bounds[i:j], dtype=np.int64) - lo, axis=1).T
            i = j
        return out

    def signatures(self, texts: Sequence[str]) -> Any:
        h, starts = self.shingle_arrays(texts)
        return self.minhash_arrays(h, starts)

    def minhash(self, signature: Any) -> Any:
        """A datasketch MinHash holding `signature` (for MinHashLSH insert/query).

        It is a copy of the validated template with new hash values: going through the
        constructor would re-check the shared permutations for every document (~20 us)."""
        m = object.__new__(type(self.template))
        m.__dict__.update(self.template.__dict__)
        m.hashvalues = signature
        return m

    def hashfunc(self):
        """The per-shingle hash as a datasketch `hashfunc` over a tuple of token values, so
        `MinHash(hashfunc=...).update_batch(...)` reproduces `signatures` one document at a time."""
        np = self.np
        mult = [int(m) for m in self.mult]

        def shingle_hash(tokens: tuple) -> int:
            acc = sum(int(t) * m for t, m in zip(tokens, mult)) & _M64
            return int(self._fmix(np.array([acc], dtype=np.uint64), 64)[0] >> np.uint64(32))

        return shingle_hash

    def token_shingles(self, text: str) -> list[tuple]:
        """The document's shingles as tuples of token values (for the reference path)."""
        vals = self._token_values(text)
        n = self.ngram
        if len(vals) < n:
            return [tuple(vals)]
        return [tuple(vals[i : i + n]) for i in range(len(vals) - n + 1)]


def _init_worker(params: dict) -> None:
    global _WORKER
    _WORKER = Shingler(**params)


def _worker_batch(job: tuple[list[str], bool]) -> tuple[Any, Any]:
    texts, want_shingles = job
    h, starts = _WORKER.shingle_arrays(texts)
    sigs = _WORKER.minhash_arrays(h, starts)
    return sigs, ((h, starts) if want_shingles else None)


_WORKER: Shingler | None = None

