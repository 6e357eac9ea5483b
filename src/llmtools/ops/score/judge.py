"""LLM-as-judge metrics for `llmtools score`: faithfulness, answer relevance, context precision
and recall, answer correctness. Any model-layer backend can judge (a local GGUF or HF model,
or an OpenAI-compatible endpoint).

Each metric asks the judge small, closed questions and does the arithmetic itself, so the
arithmetic is exact and testable and a weak judge can only be wrong, not unparseable numbers:

- faithfulness: each sentence of the answer -> "is it supported by the context?" (0/1);
  score = supported / sentences.
- context_recall: each sentence of the reference -> "can it be attributed to the context?"
  (0/1); score = attributed / sentences.
- context_precision: each context chunk, in order -> "is it useful for answering the question
  (given the reference, when there is one)?" (0/1); score = average precision:
  sum_k(precision@k * v_k) / sum_k(v_k), 0 when no chunk is useful.
- answer_relevance: one 1-5 rating of how well the answer addresses the question.
- answer_correctness: one 1-5 rating of the answer against the reference.

1-5 ratings are mapped to 0-1 as (rating - 1) / 4. Every judgement keeps the judge's reason. A
verdict that cannot be parsed is counted (summary `judge.unparsed`), never fatal: the record's
score is null and its raw reply is kept. A prompt the judge fails on (longer than its
context, say) is counted as `judge.failed` the same way, once the judge has answered at least once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from llmtools.ops.score.metrics import Family, Item

SYSTEM = "You are a careful, strict evaluator. Reply with one JSON object and nothing else."

# Placeholders are {question}, {answer}, {context}, {reference} and {statement}; any other
# braces (the JSON example) are left alone, so a replacement prompt needs no escaping.
PROMPTS: dict[str, str] = {
    "faithfulness": (
        "Decide whether the statement is supported by the context. Answer 1 if the context "
        "states or clearly implies it, 0 otherwise.\n\n"
        "Context:\n{context}\n\nStatement:\n{statement}\n\n"
        'Reply as JSON: {"score": 0 or 1, "reason": "<one sentence>"}'
    ),
    "context_recall": (
        "Decide whether the statement can be attributed to the context. Answer 1 if the "
        "context contains the information in the statement, 0 otherwise.\n\n"
        "Context:\n{context}\n\nStatement:\n{statement}\n\n"
        'Reply as JSON: {"score": 0 or 1, "reason": "<one sentence>"}'
    ),
    "context_precision": (
        "Decide whether the context passage is useful for answering the question (the "
        "reference answer shows what a correct answer says). Answer 1 if useful, 0 if not.\n\n"
        "Question:\n{question}\n\nReference answer:\n{reference}\n\nPassage:\n{context}\n\n"
        'Reply as JSON: {"score": 0 or 1, "reason": "<one sentence>"}'
    ),
    "answer_relevance": (
        "Rate how directly and completely the answer addresses the question, from 1 (does not "
        "address it at all) to 5 (fully and only addresses it). Do not judge correctness.\n\n"
        "Question:\n{question}\n\nAnswer:\n{answer}\n\n"
        'Reply as JSON: {"score": <1-5>, "reason": "<one sentence>"}'
    ),
    "answer_correctness": (
        "Rate how correct the answer is compared with the reference answer, from 1 (wrong or "
        "contradicts it) to 5 (says the same facts, nothing wrong added).\n\n"
        "Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer:\n{answer}\n\n"
        'Reply as JSON: {"score": <1-5>, "reason": "<one sentence>"}'
    ),
}

SCALES = {
    "faithfulness": "binary",
    "context_recall": "binary",
    "context_precision": "binary",
    "answer_relevance": "1-5",
    "answer_correctness": "1-5",
}

JUDGE_METRICS = tuple(PROMPTS)

# What each judge metric reads from a record (the command validates these are present).
NEEDS = {
    "faithfulness": ("prediction", "context"),
    "context_recall": ("reference", "context"),
    "context_precision": ("question", "context"),
    "answer_relevance": ("prediction", "question"),
    "answer_correctness": ("prediction", "reference"),
}

PREFILL = '{"score": '  # how a local judge's reply is started (see JudgeMetric._complete)

MAX_STATEMENTS = 20  # sentences judged per record for faithfulness/context_recall

_PLACEHOLDER = re.compile(r"\{(question|answer|context|reference|statement)\}")


def render(template: str, **values: str) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1)) or "", template)


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def split_sentences(text: str, limit: int = MAX_STATEMENTS) -> list[str]:
    parts = [p.strip() for p in _SENTENCE_END.split(text or "")]
    return [p for p in parts if p][:limit]


# --------------------------------------------------------------------------- verdict parsing


@dataclass
class Verdict:
    score: float | None  # the judge's number on the metric's own scale, or None if unparseable
    reason: str | None
    raw: str


_KEYS = ("score", "rating", "verdict", "grade", "value")
_YES = {"yes", "true", "supported", "relevant", "useful", "correct", "y"}
_NO = {"no", "false", "unsupported", "irrelevant", "not useful", "incorrect", "n"}
# A number followed by "or 1" / "-5" is the prompt's template echoed back, not a verdict.
_ECHO = r"(?!\s*(?:or\b|-\s*\d|to\s+\d))"
_LABELLED = re.compile(r"(?i)\b(?:score|rating|verdict|grade)\b\s*[\"']?\s*[:=]?\s*[\"']?\s*(\d+(?:\.\d+)?)" + _ECHO)
_FRACTION = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*/\s*(?:5|10|1)\b")
_NUMBER = re.compile(r"(?<![\w.\-])(?<!or )(?<!to )(\d+(?:\.\d+)?)(?![\w.])" + _ECHO)
_YESNO = re.compile(r"^\W*(yes|no)\b", re.I)


def _to_number(value: Any, scale: str) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if scale == "binary" and text in _YES:
            return 1.0
        if scale == "binary" and text in _NO:
            return 0.0
        m = _NUMBER.search(text)
        if m:
            return float(m.group(1))
    return None


def _in_range(score: float | None, scale: str) -> float | None:
    if score is None:
        return None
    lo, hi = (0.0, 1.0) if scale == "binary" else (1.0, 5.0)
    return score if lo <= score <= hi else None


def _json_objects(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    found = []
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def parse_verdict(text: str, scale: str) -> Verdict:
    """Read the judge's score (and reason) from its reply; JSON first, then number patterns."""
    raw = text or ""
    body = re.sub(r"```(?:json)?", "", raw)
    for obj in _json_objects(body):
        lowered = {str(k).lower(): v for k, v in obj.items()}
        for key in _KEYS:
            if key in lowered:
                score = _in_range(_to_number(lowered[key], scale), scale)
                if score is not None:
                    reason = lowered.get("reason") or lowered.get("explanation") or lowered.get("rationale")
                    return Verdict(score, str(reason) if reason is not None else None, raw)
    reason = raw.strip()[:500] or None
    for pattern in (_LABELLED, _FRACTION):
        m = pattern.search(body)
        if m:
            score = _in_range(float(m.group(1)), scale)
            if score is not None:
                return Verdict(score, reason, raw)
    if scale == "binary":
        m = _YESNO.search(body)
        if m:
            return Verdict(1.0 if m.group(1).lower() == "yes" else 0.0, reason, raw)
    m = _NUMBER.search(body)
    if m:
        score = _in_range(float(m.group(1)), scale)
        if score is not None:
            return Verdict(score, reason, raw)
    return Verdict(None, None, raw)


def normalised(score: float, scale: str) -> float:
    return score if scale == "binary" else (score - 1.0) / 4.0


def average_precision(verdicts: Sequence[float]) -> float:
    relevant = 0.0
    total = 0.0
    for k, v in enumerate(verdicts, 1):
        if v >= 0.5:
            relevant += 1
            total += relevant / k
    return total / relevant if relevant else 0.0


# --------------------------------------------------------------------------- the family


class JudgeMetric(Family):
    """One judge metric; `score_batch` sends all of a batch's questions to the judge at once."""

    def __init__(self, name: str, judge: Any, prompt: str | None = None, max_tokens: int = 256, seed: int | None = None):
        super().__init__()
        self.name = name
        self.keys = (name,)
        self.scale = {name: "0-1"}
        self.judge = judge
        self.template = prompt or PROMPTS[name]
        self.kind = SCALES[name]
        self.max_tokens = max_tokens
        self.seed = seed
        self.unparsed = 0
        self.failed = 0
        self.calls = 0
        self.answered = False

    def _questions(self, item: Item) -> list[str]:
        ctx = "\n\n".join(item.context)
        ref = "\n".join(item.references)
        ans = item.prediction if isinstance(item.prediction, str) else ""
        q = item.question or ""
        if self.name == "faithfulness":
            return [render(self.template, context=ctx, statement=s, question=q) for s in split_sentences(ans)]
        if self.name == "context_recall":
            return [render(self.template, context=ctx, statement=s, question=q) for s in split_sentences(ref)]
        if self.name == "context_precision":
            return [render(self.template, context=c, question=q, reference=ref) for c in item.context]
        return [render(self.template, question=q, answer=ans, reference=ref, context=ctx)]

    def _ask(self, prompts: list[str]) -> list[str | Exception]:
        """The judge's replies; a prompt the judge fails on (too long for its context, say)
        gets its exception instead, so one bad record does not end the run. Until the judge has
        answered once, a failure is raised: a judge that never works is an error, not data."""
        from llmtools.errors import LLMToolsError
        from llmtools.models.base import GenerationParams

        if not prompts:
            return []
        params = GenerationParams(max_tokens=self.max_tokens, temperature=0.0, seed=self.seed)
        conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p in prompts]
        self.calls += len(prompts)
        try:
            replies: list[str | Exception] = self._complete(conversations, params)
            self.answered = True
            return replies
        except (LLMToolsError, ValueError) as exc:
            if len(conversations) == 1:
                if not self.answered:
                    raise
                return [exc]
        replies = []
        for conv in conversations:  # find which prompts fail
            try:
                replies.append(self._complete([conv], params)[0])
                self.answered = True
            except (LLMToolsError, ValueError) as exc:
                replies.append(exc)
        if not self.answered:
            raise next(r for r in replies if isinstance(r, Exception))
        return replies

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        per_item = [self._questions(item) for item in items]
        flat = [p for ps in per_item for p in ps]
        replies = iter(self._ask(flat))
        out = []
        for questions in per_item:
            answers = [next(replies) for _ in questions]
            failure = next((a for a in answers if isinstance(a, Exception)), None)
            if failure is not None:
                self.failed += 1
                self.rows.append([0.0, 0.0])
                out.append({self.name: None, "_judgement": {"error": f"judge failed: {failure}"}})
                continue
            verdicts = [parse_verdict(a, self.kind) for a in answers]
            value, detail = self._combine(verdicts)
            if value is None:
                if "raw" in detail:
                    self.unparsed += 1
                self.rows.append([0.0, 0.0])
            else:
                self.rows.append([value, 1.0])
            out.append({self.name: value, "_judgement": detail})
        return out

    def _combine(self, verdicts: list[Verdict]) -> tuple[float | None, dict]:
        if not verdicts:
            # Nothing to judge (an empty answer, or no context chunk): the score is undefined.
            return None, {"error": "nothing to judge (empty text)"}
        bad = [v for v in verdicts if v.score is None]
        if bad:
            return None, {"error": "unparseable verdict", "raw": bad[0].raw[:500]}
        if self.kind == "1-5":
            v = verdicts[0]
            return normalised(v.score, "1-5"), {"rating": v.score, "reason": v.reason}
        scores = [v.score for v in verdicts]
        if self.name == "context_precision":
            value = average_precision(scores)
        else:
            value = sum(scores) / len(scores)
        return value, {"verdicts": scores, "reasons": [v.reason for v in verdicts]}

    def _complete(self, conversations: list[list[dict]], params: Any) -> list[str]:
        """Chat with the judge. A local model (HF directory or GGUF) gets its reply started
        for it with `{"score": ` (prefilled after its own chat template), which keeps small
        models on the JSON format; an endpoint gets plain chat completions."""
        fmt = getattr(getattr(self.judge, "identity", None), "format", None)
        if fmt in ("hf", "gguf") and hasattr(self.judge, "generate_batch"):
            prompts = [self.judge.apply_chat_template(c) + PREFILL for c in conversations]
            return [PREFILL + c.text for c in self.judge.generate_batch(prompts, params)]
        return [c.text for c in self.judge.chat_batch(conversations, params)]

    def finalize(self, sums):
        return {self.name: sums[0] / sums[1] if sums and sums[1] else None}

    def extra(self):
        return {"unparsed": self.unparsed, "failed": self.failed, "judge_calls": self.calls}
