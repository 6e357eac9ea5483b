"""augment: seeded, traceable variants of text records (WordNet, EDA and LLM methods).

    augment(records, AugmentConfig(...), where=..., on_drop=..., model=...) -> Iterator[dict]

The modules: variants (the config, the quality guard, the LLM prompts and the loop over
records) and wordnet (WordNet synonyms and EDA; nltk, imported when first needed).
"""

from __future__ import annotations

from llmtools.ops.augment.variants import (
    EDA_OPS,
    LLM_METHODS,
    METHODS,
    PROMPTS,
    WORDNET_METHODS,
    AugmentConfig,
    Guard,
    augment,
    clean_llm_output,
    derive_seed,
    similarity,
)

__all__ = [
    "EDA_OPS", "LLM_METHODS", "METHODS", "PROMPTS", "WORDNET_METHODS", "AugmentConfig", "Guard", "augment",
    "clean_llm_output", "derive_seed", "similarity",
]
