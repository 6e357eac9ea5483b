"""`llmtools score` judge metrics: verdict parsing, exact arithmetic through a fake OpenAI-compatible
judge server (fixed verdicts), prompt replacement, and the plumbing with a tiny local model."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers.score_data import jsonl

# --------------------------------------------------------------------------- verdict parsing


@pytest.mark.parametrize(
    "reply, scale, score, reason",
    [
        ('{"score": 4, "reason": "mostly on topic"}', "1-5", 4.0, "mostly on topic"),
        ('```json\n{"Score": "1", "Reason": "supported"}\n```', "binary", 1.0, "supported"),
        ('Sure! {"verdict": "yes", "explanation": "it says so"}', "binary", 1.0, "it says so"),
        ('{"score": 0, "reason": "not in the context"} trailing text', "binary", 0.0, "not in the context"),
        ("Score: 3/5. The answer drifts.", "1-5", 3.0, "Score: 3/5. The answer drifts."),
        ("Rating = 2", "1-5", 2.0, "Rating = 2"),
        ("No, the context does not mention it.", "binary", 0.0, "No, the context does not mention it."),
        ("5", "1-5", 5.0, "5"),
        ('{"score": 0.5}', "binary", 0.5, None),
    ],
)
def test_parse_verdict(reply, scale, score, reason):
    from llmtools.ops.score.judge import parse_verdict

    v = parse_verdict(reply, scale)
    assert v.score == score
    assert v.reason == reason


@pytest.mark.parametrize(
    "reply, scale",
    [
        ("I cannot tell.", "1-5"),
        ('{"score": 9, "reason": "out of range"}', "1-5"),
        ('{"score": 7}', "binary"),
        ("", "binary"),
        ("The answer has 12 facts", "1-5"),  # a number, but out of the 1-5 range
        ('{"reason": "forgot the score"}', "binary"),
        ('{"score": 0 or 1, "reason": "echoes the template"}', "binary"),
        ("Score: 1-5", "1-5"),
    ],
)
def test_unparseable_verdicts(reply, scale):
    from llmtools.ops.score.judge import parse_verdict

    assert parse_verdict(reply, scale).score is None


def test_average_precision():
    from llmtools.ops.score.judge import average_precision

    assert average_precision([0, 1, 1]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision([1, 0, 0]) == 1.0
    assert average_precision([0, 0]) == 0.0


# --------------------------------------------------------------------------- a fake judge server

RAG = [
    {
        "id": "paris",
        "question": "What is the capital of France?",
        "context": ["France borders Spain.", "Paris is the capital of France.", "The capital has the Louvre."],
        "prediction": "Paris is the capital. It has 70 million people.",
        "reference": "The capital of France is Paris.",
    },
    {
        "id": "garbled",
        "question": "Who wrote Hamlet?",
        "context": "Hamlet is a tragedy by William Shakespeare.",
        "prediction": "GARBLE GARBLE.",
        "reference": "William Shakespeare wrote Hamlet. He wrote it around 1600.",
    },
]


def verdict_for(prompt: str) -> str:
    """The fixed rules of the fake judge, keyed on what each prompt contains."""
    if "GARBLE" in prompt:
        return "I am not sure what to say."
    if "CUSTOM-PROMPT" in prompt:
        return '{"score": 2, "reason": "custom prompt seen"}'
    if "Passage:" in prompt:  # context_precision: a passage mentioning "capital" is useful
        passage = prompt.split("Passage:", 1)[1]
        return json.dumps({"score": 1 if "capital" in passage else 0, "reason": "passage check"})
    if "Statement:" in prompt:  # faithfulness / context_recall: statements about a capital are supported
        statement = prompt.split("Statement:", 1)[1]
        ok = "capital" in statement or "Shakespeare wrote" in statement
        return json.dumps({"score": 1 if ok else 0, "reason": "supported" if ok else "not supported"})
    if "addresses the question" in prompt:  # answer_relevance: plain text, exercises the regex fallback
        return "Score: 4/5 - it addresses the question."
    if "compared with the reference" in prompt:  # answer_correctness: fenced JSON
        return '```json\n{"score": 5, "reason": "same facts"}\n```'
    return "??"


class FakeJudge:
    def __init__(self):
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, payload: dict):
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send({"object": "list", "data": [{"id": "fake-judge", "object": "model", "owned_by": "test"}]})
                else:
                    self.send_error(404)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/").endswith("/chat/completions"):
                    prompt = req["messages"][-1]["content"]
                    with judge.lock:
                        judge.prompts.append(prompt)
                    text = verdict_for(prompt)
                    self._send({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-judge",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    })
                elif self.path.rstrip("/").endswith("/completions"):
                    text = verdict_for(req.get("prompt", ""))
                    self._send({
                        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "fake-judge",
                        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    })
                else:
                    self.send_error(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_judge():
    judge = FakeJudge()
    yield judge
    judge.close()


class InProcessJudge:
    """The same fixed rules behind the Backend interface, without HTTP."""

    from llmtools.models.base import ModelIdentity

    identity = ModelIdentity(name="in-process-judge", format="http")

    def __init__(self):
        self.conversations = []

    def chat_batch(self, conversations, params=None):
        from llmtools.models.base import Completion

        self.conversations.extend(conversations)
        return [Completion(verdict_for(c[-1]["content"]), 1, 1, "stop") for c in conversations]


def expected_judgements():
    # paris: faithfulness sentences [capital -> 1, 70 million -> 0] = 0.5
    #        context_recall: one reference sentence about the capital -> 1.0
    #        context_precision: chunks [0, 1, 1] -> AP = (1/2 + 2/3) / 2
    #        answer_relevance: 4/5 -> (4 - 1) / 4 = 0.75; answer_correctness: 5 -> 1.0
    # garbled: every prompt holding the answer is unparseable; context_recall sentences
    #        ["William Shakespeare wrote Hamlet." -> 1, "He wrote it around 1600." -> 0] = 0.5;
    #        context_precision: one chunk without "capital" -> [0] -> 0.0
    return [
        {"faithfulness": 0.5, "answer_relevance": 0.75, "context_precision": (1 / 2 + 2 / 3) / 2, "context_recall": 1.0, "answer_correctness": 1.0},
        {"faithfulness": None, "answer_relevance": None, "context_precision": 0.0, "context_recall": 0.5, "answer_correctness": None},
    ]


def check_judge_output(out, summary):
    exp = expected_judgements()
    for rec, want in zip(out, exp):
        for k, v in want.items():
            if v is None:
                assert rec["scores"][k] is None, k
            else:
                assert rec["scores"][k] == pytest.approx(v), (rec["id"], k)
    m = summary["metrics"]
    assert m["faithfulness"] == pytest.approx(0.5)  # the unparsed record is left out, not zeroed
    assert m["answer_relevance"] == pytest.approx(0.75)
    assert m["context_precision"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0.0) / 2)
    assert m["context_recall"] == pytest.approx(0.75)
    assert m["answer_correctness"] == pytest.approx(1.0)
    assert summary["judge"]["unparsed"] == {
        "faithfulness": 1, "answer_relevance": 1, "context_precision": 0, "context_recall": 0, "answer_correctness": 1,
    }
    # 2 + 1 + 3 + 1 + 1 prompts for paris, 1 + 1 + 1 + 2 + 1 for garbled
    assert summary["judge"]["calls"] == 14
    paris = out[0]["judgements"]
    assert paris["faithfulness"] == {"verdicts": [1.0, 0.0], "reasons": ["supported", "not supported"]}
    assert paris["answer_correctness"] == {"rating": 5.0, "reason": "same facts"}
    assert paris["answer_relevance"]["rating"] == 4.0
    assert "addresses the question" in paris["answer_relevance"]["reason"]
    garbled = out[1]["judgements"]
    assert garbled["faithfulness"] == {"error": "unparseable verdict", "raw": "I am not sure what to say."}


def test_judge_arithmetic_in_process():
    from llmtools.ops.score import ScoreConfig, Scorer

    judge = InProcessJudge()
    scorer = Scorer(ScoreConfig(metrics=["judge"], batch_size=8), judge_loader=lambda: judge)
    out = list(scorer.run([dict(r) for r in RAG]))
    check_judge_output(out, scorer.summary())
    # every conversation is a system + user pair, rendered with the record's fields
    assert all(c[0]["role"] == "system" and c[1]["role"] == "user" for c in judge.conversations)
    assert any("Paris is the capital of France." in c[1]["content"] for c in judge.conversations)


def test_judge_through_a_fake_openai_server(cli, fake_judge):
    res = cli(["score", "--metric", "judge", "--judge", fake_judge.url, "--batch-size", "1"], input=jsonl(RAG))
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    check_judge_output(recs[:-1], recs[-1])
    assert recs[-1]["judge"]["model"]["format"] == "http"
    assert len(fake_judge.prompts) == 14


def test_judge_prompt_replacement(cli, fake_judge, tmp_path):
    prompt = tmp_path / "relevance.txt"
    prompt.write_text('CUSTOM-PROMPT Q={question} A={answer} {"score": <1-5>}', encoding="utf-8")
    res = cli(
        ["score", "--metric", "answer_relevance", "--judge", fake_judge.url, "--judge-prompt", f"answer_relevance={prompt}"],
        input=jsonl(RAG[:1]),
    )
    assert res.exit_code == 0, res.stderr
    assert fake_judge.prompts == ['CUSTOM-PROMPT Q=What is the capital of France? A=Paris is the capital. It has 70 million people. {"score": <1-5>}']
    rec = res.records()[0]
    assert rec["scores"]["answer_relevance"] == 0.25
    assert rec["judgements"]["answer_relevance"] == {"rating": 2.0, "reason": "custom prompt seen"}


def test_judge_prompt_errors(cli, tmp_path):
    res = cli(["score", "--metric", "faithfulness", "--judge-prompt", "bleu=x.txt"], input=jsonl(RAG))
    assert res.exit_code == 2
    res = cli(["score", "--metric", "faithfulness", "--judge-prompt", f"faithfulness={tmp_path / 'missing.txt'}"], input=jsonl(RAG))
    assert res.exit_code == 2 and "cannot read" in res.stderr


def test_judge_metrics_validate_their_fields(cli, fake_judge):
    res = cli(["score", "--metric", "faithfulness", "--judge", fake_judge.url], input=jsonl([{"prediction": "x"}]))
    assert res.exit_code == 3
    assert "missing field 'context'" in res.stderr


def test_documented_prompts_are_the_ones_used():
    """docs/score.md shows every default prompt verbatim, so users can copy and edit them."""
    from pathlib import Path

    from llmtools.ops.score.judge import PROMPTS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "score.md").read_text(encoding="utf-8")
    for name, text in PROMPTS.items():
        assert text in doc, name


# --------------------------------------------------------------------------- a tiny local judge


def test_tiny_local_model_as_judge_plumbing(cli, tiny_model_dir, tmp_path):
    """The tiny model's replies are random: check the plumbing, not the verdicts. Its context is
    256 tokens, so it gets short replacement prompts."""
    (tmp_path / "rel.txt").write_text("Q: {question}\nA: {answer}\nScore 1-5:", encoding="utf-8")
    (tmp_path / "prec.txt").write_text("Q: {question}\nP: {context}\nUseful 0/1:", encoding="utf-8")
    res = cli(
        [
            "score", "--metric", "answer_relevance,context_precision", "--judge", tiny_model_dir,
            "--judge-max-tokens", "8", "-v",
            "--judge-prompt", f"answer_relevance={tmp_path / 'rel.txt'}",
            "--judge-prompt", f"context_precision={tmp_path / 'prec.txt'}",
        ],
        input=jsonl(RAG),
    )
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    summary = recs[-1]
    assert summary["judge"]["calls"] == 2 + 3 + 1
    assert summary["judge"]["model"]["format"] == "hf"
    for rec in recs[:-1]:
        for metric in ("answer_relevance", "context_precision"):
            value = rec["scores"][metric]
            detail = rec["judgements"][metric]
            if value is None:
                assert detail["error"] == "unparseable verdict" and isinstance(detail["raw"], str)
            else:
                assert 0.0 <= value <= 1.0
    parsed = sum(1 for r in recs[:-1] if r["scores"]["answer_relevance"] is not None)
    assert summary["judge"]["unparsed"]["answer_relevance"] == 2 - parsed
    assert summary["judge"]["failed"] == {"answer_relevance": 0, "context_precision": 0}


class FailingJudge(InProcessJudge):
    """Fails on prompts that mention a marker, as a local model does on an over-long prompt."""

    def chat_batch(self, conversations, params=None):
        from llmtools.errors import LLMToolsError

        if any("TOO-LONG" in c[-1]["content"] for c in conversations):
            raise LLMToolsError("prompt has 9999 tokens, which fills the context of 2048")
        return super().chat_batch(conversations, params)


def test_a_prompt_the_judge_fails_on_is_counted_not_fatal():
    from llmtools.ops.score import ScoreConfig, Scorer

    data = [dict(RAG[0]), dict(RAG[0], question="TOO-LONG " * 3), dict(RAG[0])]
    scorer = Scorer(ScoreConfig(metrics=["answer_relevance"], batch_size=8), judge_loader=FailingJudge)
    out = list(scorer.run(data))
    assert [r["scores"]["answer_relevance"] for r in out] == [0.75, None, 0.75]
    assert out[1]["judgements"]["answer_relevance"]["error"].startswith("judge failed: prompt has 9999 tokens")
    summary = scorer.summary()
    assert summary["judge"]["failed"] == {"answer_relevance": 1}
    assert summary["judge"]["unparsed"] == {"answer_relevance": 0}
    assert summary["metrics"]["answer_relevance"] == 0.75


def test_a_judge_that_never_answers_is_an_error():
    from llmtools.errors import LLMToolsError
    from llmtools.ops.score import ScoreConfig, Scorer

    scorer = Scorer(ScoreConfig(metrics=["answer_relevance"]), judge_loader=FailingJudge)
    with pytest.raises(LLMToolsError, match="9999 tokens"):
        list(scorer.run([dict(RAG[0], question="TOO-LONG")]))
