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
from typing import Any, Sequence

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_CACHE_LIMIT = 2_000_000
# Enough shingles per vectorised block to amortise numpy overhead, small enough that the
# (shingles x num_perm) uint32 matrix stays near 16 MB at 128 permutations.
BLOCK_SHINGLES = 32_768

# Fixed, seed-independent odd multipliers for combining n-gram tokens (splitmix64 output).
_M64 = (1 << 64) - 1


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
    """word -> 64-bit blake2b value; a dict, so hits cost one C lookup."""

    def __missing__(self, word: str) -> int:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        value = int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        self[word] = value
        return value


# ASCII text takes a fast path with the same result as the regex: every ASCII character that
# is not [A-Za-z0-9_] becomes a space, then str.split (about twice as fast as re.findall).
_ASCII_NONWORD = str.maketrans({i: " " for i in range(128) if not (chr(i).isalnum() or chr(i) == "_")})


def word_tokens(text: str) -> list[str]:
    if text.isascii():
        return text.translate(_ASCII_NONWORD).lower().split()
    return _WORD.findall(text.lower())


def char_text(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


class Shingler:
    """Turns texts into shingle-hash sequences and MinHash signatures."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5, unit: str = "word"):
        import numpy as np
        from datasketch import MinHash
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
        bounds = list(starts) + [len(h)]
        i = 0
        while i < len(starts):  # blocks of whole documents, about BLOCK_SHINGLES each
            j = i + 1
            while j < len(starts) and bounds[j + 1] - bounds[i] <= BLOCK_SHINGLES:
                j += 1
            lo, hi = bounds[i], bounds[j]
            # (num_perm x shingles): reducing along the contiguous axis is ~5x faster.
            with np.errstate(over="ignore"):
                phv = a * hv[None, lo:hi] + b
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
        from datasketch import MinHash

        m = object.__new__(MinHash)
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
