"""Model-based metrics for `llmtools score`: perplexity and embedding similarity."""

from __future__ import annotations

import math
from typing import Any, Sequence

from llmtools.ops.score.metrics import Family, Item


class Perplexity(Family):
    """Perplexity of a text field under a model-layer backend.

    Per record: exp(-logprob / tokens) of that text. Corpus: token-weighted,
    exp(-sum logprob / sum tokens), as `Backend.perplexity` defines it. A text with no scored
    token (empty, or a single token) has no perplexity: null, and it adds nothing to the corpus.
    """

    keys = ("perplexity",)
    scale = {"perplexity": ">= 1, lower is better"}
    lower_is_better = frozenset({"perplexity"})

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        texts = [item.text or "" for item in items]
        results = self.model.loglikelihood(texts) if texts else []
        out = []
        for r in results:
            if r.n_tokens > 0:
                self.rows.append([float(r.logprob), float(r.n_tokens)])
                out.append({"perplexity": math.exp(-r.logprob / r.n_tokens)})
            else:
                self.rows.append([0.0, 0.0])
                out.append({"perplexity": None})
        return out

    def finalize(self, sums):
        if not sums or not sums[1]:
            return {"perplexity": None}
        try:
            return {"perplexity": math.exp(-sums[0] / sums[1])}
        except OverflowError:
            return {"perplexity": math.inf}


class EmbeddingSimilarity(Family):
    """Cosine similarity of prediction and reference embeddings (the best reference counts)."""

    keys = ("embedding_similarity",)
    scale = {"embedding_similarity": "-1..1 (cosine)"}

    def __init__(self, embedder: Any):
        super().__init__()
        self.embedder = embedder

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        from llmtools.models.embedder import cosine

        texts: list[str] = []
        for item in items:
            texts.append(item.prediction)
            texts.extend(item.references)
        vectors = self.embedder.embed(texts) if texts else []
        vectors = [list(v) for v in vectors]
        out = []
        pos = 0
        for item in items:
            pred = vectors[pos]
            refs = vectors[pos + 1: pos + 1 + len(item.references)]
            pos += 1 + len(item.references)
            value = max(cosine(pred, r) for r in refs)
            self.rows.append([value, 1.0])
            out.append({"embedding_similarity": value})
        return out

    def finalize(self, sums):
        return {"embedding_similarity": sums[0] / sums[1] if sums and sums[1] else None}
