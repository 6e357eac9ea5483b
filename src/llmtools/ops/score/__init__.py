"""score: metrics over predictions and references, corpus scores, bootstrap, and CI gates.

    scorer = Scorer(ScoreConfig(metrics=("bleu", "chrf")))
    for record in scorer.run(records): ...   # each record gains `scores`
    summary = scorer.summary(gates=[...])

The modules: scorer (the config, the Scorer, gates), metrics (text and classification metrics:
sacrebleu, rouge-score), model_metrics (perplexity and embedding similarity, which need a
model), judge (LLM-judge metrics), bootstrap (confidence intervals and the paired test),
groups (--by: per-group metrics, disparities, the paired ranking of variants, the gap gate),
partial (scoring in parts: what a part hands on, and how the parts add up to the whole).
"""

from __future__ import annotations

from llmtools.ops.score.groups import GapGate
from llmtools.ops.score.partial import absorb as absorb_part
from llmtools.ops.score.partial import check_splittable
from llmtools.ops.score.partial import export as export_part
from llmtools.ops.score.scorer import (
    DEFAULT_METRICS,
    JUDGE_METRICS,
    Gate,
    ScoreConfig,
    Scorer,
    check_gate_names,
    parse_metrics,
)

__all__ = ["DEFAULT_METRICS", "GapGate", "absorb_part", "check_splittable", "export_part", "JUDGE_METRICS", "Gate", "ScoreConfig", "Scorer", "check_gate_names", "parse_metrics"]
