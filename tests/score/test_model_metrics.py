"""`llmtools score` with models: perplexity under a model-layer backend, embedding similarity."""

from __future__ import annotations

import math

import pytest

from tests.helpers.score_data import jsonl

TEXTS = [
    {"text": "The quick brown fox jumps over the lazy dog.", "prediction": "Paris is the capital of France.", "old": "hello world"},
    {"text": "Data cleaning removes noise, duplicates and personal information.", "prediction": "one two three four five", "old": "Fine-tuning adapts a pretrained model."},
    {"text": "A", "prediction": "Monitoring tracks latency, errors and drift after deployment.", "old": "x"},
]


def test_perplexity_equals_the_backend(cli, tiny_model_dir):
    from llmtools.models import load_model

    res = cli(["score", "--metric", "perplexity", "-m", tiny_model_dir, "--text-field", "text"], input=jsonl(TEXTS))
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    model = load_model(tiny_model_dir)
    texts = [t["text"] for t in TEXTS]
    lls = model.loglikelihood(texts)
    for rec, ll in zip(recs[:-1], lls):
        if ll.n_tokens:
            assert rec["scores"]["perplexity"] == pytest.approx(math.exp(-ll.logprob / ll.n_tokens), rel=1e-6)
        else:
            assert rec["scores"]["perplexity"] is None
    summary = recs[-1]
    assert summary["metrics"]["perplexity"] == pytest.approx(model.perplexity(texts), rel=1e-6)
    assert summary["perplexity_model"]["format"] == "hf"
    assert summary["scale"]["perplexity"].endswith("lower is better")


def test_perplexity_defaults_to_the_prediction_and_compares_a_baseline(cli, tiny_model_dir):
    from llmtools.models import load_model

    res = cli(
        ["score", "--metric", "ppl", "-m", tiny_model_dir, "--baseline-field", "old", "--bootstrap", "50", "--fail-over", "perplexity=1e9"],
        input=jsonl(TEXTS),
    )
    assert res.exit_code == 0, res.stderr
    summary = res.records()[-1]
    model = load_model(tiny_model_dir)
    assert summary["metrics"]["perplexity"] == pytest.approx(model.perplexity([t["prediction"] for t in TEXTS]), rel=1e-6)
    assert summary["baseline"]["metrics"]["perplexity"] == pytest.approx(model.perplexity([t["old"] for t in TEXTS]), rel=1e-6)
    assert 0 < summary["comparison"]["perplexity"]["p_value"] <= 1
    assert summary["gates"][0]["passed"] is True


def test_perplexity_needs_a_string_text(cli, tiny_model_dir):
    res = cli(["score", "--metric", "perplexity", "-m", tiny_model_dir, "--text-field", "body"], input=jsonl(TEXTS))
    assert res.exit_code == 3 and "missing field 'body'" in res.stderr


def test_missing_model_exits_4(cli, tmp_path):
    res = cli(["score", "--metric", "perplexity", "-m", str(tmp_path / "nope.gguf")], input=jsonl(TEXTS))
    assert res.exit_code in (2, 4), res.stderr  # the model layer decides usage vs missing
    assert "nope.gguf" in res.stderr


PAIRS = [
    {"prediction": "The cat sits on the mat.", "reference": "A cat is sitting on a mat."},
    {"prediction": "Stock markets fell sharply today.", "reference": ["The weather is lovely.", "Shares dropped steeply on the markets today."]},
    {"prediction": "I like green tea.", "reference": "I like green tea."},
]


@pytest.fixture(scope="module")
def embedder():
    from llmtools.models.embedder import load_embedder

    return load_embedder()


def test_embedding_similarity_equals_direct_cosines(cli, embedder):
    from llmtools.models.embedder import cosine

    res = cli(["score", "--metric", "embedding"], input=jsonl(PAIRS))
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    expected = []
    for rec, pair in zip(recs[:-1], PAIRS):
        refs = [pair["reference"]] if isinstance(pair["reference"], str) else pair["reference"]
        vecs = embedder.embed([pair["prediction"], *refs])
        best = max(cosine(vecs[0], v) for v in vecs[1:])
        expected.append(best)
        assert rec["scores"]["embedding_similarity"] == pytest.approx(best, abs=1e-5)
    assert recs[2]["scores"]["embedding_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert recs[0]["scores"]["embedding_similarity"] > 0.7  # a paraphrase
    # the second record's best reference is the paraphrase, not the unrelated one
    vecs = embedder.embed([PAIRS[1]["prediction"], "The weather is lovely."])
    assert recs[1]["scores"]["embedding_similarity"] > cosine(vecs[0], vecs[1]) + 0.3
    summary = recs[-1]
    assert summary["metrics"]["embedding_similarity"] == pytest.approx(sum(expected) / 3, abs=1e-5)
    assert summary["embedder"]["name"] == "all-MiniLM-L6-v2" and summary["embedder"]["sha256"]


def test_embedder_vectors_are_normalised_and_identity(embedder):
    vecs = embedder.embed(["hello world", "bonjour le monde"])
    assert len(vecs) == 2 and len(vecs[0]) == 384
    assert sum(x * x for x in vecs[0]) == pytest.approx(1.0, abs=1e-4)
    assert embedder.identity.format == "hf"
    assert embedder.embed([]) == []


def test_embedder_plain_transformers_fallback(tmp_path, embedder):
    """A plain HF encoder directory (no sentence-transformers config) is mean-pooled, and
    all-MiniLM-L6-v2 is mean-pooled too, so both paths must agree."""
    import shutil

    from llmtools.models.embedder import load_embedder

    plain = tmp_path / "minilm-plain"
    shutil.copytree(embedder.path, plain, ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "config_sentence_transformers.json", "sentence_bert_config.json"))
    other = load_embedder(str(plain))
    assert other._st is None and other._hf is not None
    a = embedder.embed(["A small test sentence."])[0]
    b = other.embed(["A small test sentence."])[0]
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4


def test_embedder_missing_is_exit_4(cli, tmp_path):
    res = cli(["score", "--metric", "embedding", "--embedder", str(tmp_path)], input=jsonl(PAIRS))
    assert res.exit_code == 4
    assert "config.json" in res.stderr
    res = cli(["score", "--metric", "embedding", "--embedder", "no-such-embedding-package"], input=jsonl(PAIRS))
    assert res.exit_code == 4
    assert "pip install no-such-embedding-package" in res.stderr


@pytest.mark.slow
def test_default_model_perplexity_and_judge(cli):
    """The real default model (SmolLM2-135M GGUF): perplexity is sane, the judge runs end to end."""
    from llmtools.models import load_model

    data = [
        {
            "question": "What is the capital of France?",
            "context": ["France borders Spain.", "Paris is the capital of France."],
            "prediction": "Paris is the capital of France.",
            "reference": "The capital of France is Paris.",
        },
        {
            "question": "What colour is the sky?",
            "context": "On a clear day the sky is blue.",
            "prediction": "The sky is blue on a clear day.",
            "reference": "Blue.",
        },
    ]
    res = cli(["score", "--metric", "perplexity,answer_relevance,context_precision", "--judge-max-tokens", "24"], input=jsonl(data))
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    summary = recs[-1]
    model = load_model("smollm2")
    expected = model.perplexity([d["prediction"] for d in data])
    assert summary["metrics"]["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert 1.0 < summary["metrics"]["perplexity"] < 1000.0
    assert summary["judge"]["model"]["name"] == "smollm2"
    # 1 + 1 relevance ratings, 2 + 1 context chunks
    assert summary["judge"]["calls"] == 5
    for rec in recs[:-1]:
        for metric in ("answer_relevance", "context_precision"):
            value = rec["scores"][metric]
            assert value is None or 0.0 <= value <= 1.0
            assert metric in rec["judgements"]
