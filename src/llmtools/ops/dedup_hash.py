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
mixed with the 64-bit MurmurHash3 finalizer and cut to its top 32 bits. Word values are
blake2b digests, cached per word, so the same text hashes the same in every process and run
(Python's `hash()` is salted per process and would break persisted indexes).
"""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Any, Sequence

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_CACHE_LIMIT = 2_000_000
# Enough shingles per vectorised block to amortise numpy overhead, small enough that the
# (num_perm x shingles) uint32 buffer (4 MB at 128 permutations) stays mostly in cache:
# 8192 ran ~1.3x faster than 32768 on 1 KB documents.
BLOCK_SHINGLES = 8192

# Fixed, seed-independent odd multipliers for combining n-gram tokens (splitmix64 output).
_M64 = (1 << 64) - 1


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


def lsh_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """The (bands, rows) MinHashLSH would choose for `threshold` (its `_optimal_param`), computed
    without scipy: the same search over (b, r), minimising the weighted integrals of the false
    positive and false negative probabilities. The integrands are polynomials of degree b*r <=
    num_perm, so Gauss-Legendre with num_perm//2 + 1 nodes integrates them exactly (scipy's
    adaptive `quad` agrees to ~1e-10; a test checks both choose the same bands)."""
    import numpy as np

    nodes, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    lo_x, lo_w = threshold / 2 * (nodes + 1), threshold / 2 * w  # [0, threshold]
    hi_x, hi_w = (1 - threshold) / 2 * (nodes + 1) + threshold, (1 - threshold) / 2 * w  # [threshold, 1]
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = float(np.dot(lo_w, 1 - (1 - lo_x ** float(r)) ** float(b)))
            fn = float(np.dot(hi_w, (1 - hi_x ** float(r)) ** float(b)))
            error = fp * weights[0] + fn * weights[1]
            if error < best:
                best, opt = error, (b, r)
    return opt


def _splitmix(n: int) -> list[int]:
    out, x = [], 0x9E3779B97F4A7C15
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append((z ^ (z >> 31)) | 1)
    return out


class _TokenHashes(dict):
    """word (str or its UTF-8 bytes) -> 64-bit blake2b value; a dict, so hits cost one C lookup."""

    def __missing__(self, word: str | bytes) -> int:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        raw = word if isinstance(word, bytes) else word.encode("utf-8", "surrogatepass")
        value = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")
        self[word] = value
        return value


# Words are maximal runs of \w characters, lowercased. Text that is ASCII takes a fast path
# with the same result as the regex: its bytes go through one 256-entry table mapping every
# byte that is not [A-Za-z0-9_] to a space, then bytes.split() (2-3x faster than re.findall).
# Most non-ASCII English text is ASCII apart from typographic punctuation; those characters are
# not \w, so turning them into spaces first changes nothing and lets such text take the fast
# path too (a test checks both paths agree). Tokens are bytes on the fast path and str on the
# regex path; they hash the same (blake2b of the UTF-8 bytes).
_ASCII_NONWORD = bytes(b if b < 128 and (chr(b).isalnum() or b == 95) else 32 for b in range(256))
_NONWORD_PUNCT = "\u2019\u2018\u201c\u201d\u2026\u2014\u2013\u00a0\u00ab\u00bb\u2022\u00b7\u00b0\u00a9\u00ae\u2122\u20ac\u00a3\u00a7\u00b6"


def word_tokens(text: str) -> list:
    if not text.isascii():
        plain = text
        for ch in _NONWORD_PUNCT:
            if ch in plain:
                plain = plain.replace(ch, " ")
        if not plain.isascii():
            # The original text, not `plain`: str.lower() is context-sensitive (a capital
            # sigma before an apostrophe lowercases differently than before a space).
            return _WORD.findall(text.lower())
        text = plain
    return text.encode("ascii").translate(_ASCII_NONWORD).lower().split()


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
        self.tokens = _TokenHashes()
        self._buf: Any = None

    # -- tokens -> shingle hashes
    def _token_values(self, text: str) -> list[int]:
        if self.unit == "word":
            return list(map(self.tokens.__getitem__, word_tokens(text)))
        return [ord(c) for c in char_text(text)]

    def shingle_arrays(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """(H, starts): every document's shingle hashes (uint32, in text order, duplicates kept)
        concatenated, and where each document's run begins. Each document has at least one
        shingle: a text shorter than the n-gram is one shingle, an empty text hashes to one
        fixed value, so empty texts are duplicates of each other."""
        np = self.np
        n = self.ngram
        values: list[int] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            vals = self._token_values(text)
            lengths[i] = len(vals)
            values.extend(vals)
        tok = np.array(values, dtype=np.uint64)
        tok = np.concatenate([tok, np.zeros(n, dtype=np.uint64)])
        tok_start = np.zeros(len(texts), dtype=np.int64)
        if len(texts) > 1:
            np.cumsum(lengths[:-1], out=tok_start[1:])
        counts = np.maximum(lengths - n + 1, 1)
        starts = np.zeros(len(texts), dtype=np.int64)
        if len(texts) > 1:
            np.cumsum(counts[:-1], out=starts[1:])
        total = int(counts.sum())
        offset = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
        pos = np.repeat(tok_start, counts) + offset
        room = np.repeat(lengths, counts) - offset  # tokens left in this document from pos
        acc = np.zeros(total, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                term = tok[pos + k] * self.mult[k]
                acc += np.where(room > k, term, np.uint64(0))
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
            # (num_perm x shingles), computed in place in a reused buffer (temporaries cost
            # ~3x), then reduced along the contiguous axis (~5x faster than across it).
            phv = self._buf[:, : hi - lo] if hi - lo <= BLOCK_SHINGLES else np.empty((self.num_perm, hi - lo), dtype=np.uint32)
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
