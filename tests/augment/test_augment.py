"""augment: WordNet synonyms, EDA, LLM methods (tiny model, HTTP endpoint), guard, determinism."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from llmtools.models.base import Completion, ModelIdentity
from llmtools.ops.augment import AugmentConfig, Guard, augment, clean_llm_output, derive_seed, similarity
from tests.helpers.openai_server import serve_backend

TEXTS = [
    {"id": "a", "text": "The quick brown fox jumps over the lazy dog near the river bank.", "label": "animals"},
    {"id": "b", "text": "My order has not arrived and the package is damaged. Email me at <EMAIL> please.", "label": "shipping"},
    {"text": "Customers want a refund because the product stopped working after a week.", "label": "refund"},
]
INPUT = "\n".join(json.dumps(t) for t in TEXTS) + "\n"


@pytest.fixture(scope="module")
def wordnet_aug():
    from llmtools.ops.augment.wordnet import WordNetAugmenter

    return WordNetAugmenter()


@pytest.mark.sysdep("wordnet")
def test_wordnet_is_found_from_the_system_dictionary(wordnet_aug):
    # CI installs Debian's wordnet-base; NLTK has no data of its own there.
    assert wordnet_aug.wn.synsets("dog", "n")
    syns = wordnet_aug.synonyms("happy", "a")
    assert syns and "happy" not in syns and all(" " not in s for s in syns)


@pytest.mark.sysdep("wordnet")
def test_prepare_system_wordnet_writes_lexnames(tmp_path):
    from llmtools.ops.augment.wordnet import SYSTEM_WORDNET_DIRS, prepare_system_wordnet

    source = next(d for d in SYSTEM_WORDNET_DIRS if os.path.exists(os.path.join(d, "index.sense")))
    target = prepare_system_wordnet(source, str(tmp_path))
    lexnames = open(os.path.join(target, "lexnames")).read().splitlines()
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[-1] == "44\tadj.ppl\t3"
    assert not os.path.islink(os.path.join(target, "data.noun"))
    mtime = os.path.getmtime(os.path.join(target, "lexnames"))
    assert prepare_system_wordnet(source, str(tmp_path)) == target  # prepared once, then reused
    assert os.path.getmtime(os.path.join(target, "lexnames")) == mtime


def test_missing_wordnet_exits_4_with_install_commands(cli, monkeypatch, tmp_path):
    from llmtools.ops.augment import wordnet

    monkeypatch.setattr(wordnet, "SYSTEM_WORDNET_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("LLMTOOLS_WORDNET_DIR", raising=False)
    monkeypatch.setattr("nltk.data.find", lambda *a, **k: (_ for _ in ()).throw(LookupError("no")))
    # The loader without its cache, so the WordNet loaded for the other tests stays loaded.
    monkeypatch.setattr(wordnet, "load_wordnet", wordnet.load_wordnet.__wrapped__)
    result = cli(["augment", "--method", "synonym"], input=INPUT)
    assert result.exit_code == 4
    assert "apt-get install wordnet-base wordnet-sense-index" in result.stderr


@pytest.mark.sysdep("wordnet")
def test_synonym_keeps_stop_words_placeholders_and_layout(wordnet_aug):
    text = "The package is damaged.\n\nEmail <EMAIL> or call <PHONE> about the broken kettle."
    for seed in range(20):
        out, changed = wordnet_aug.synonym_replace(text, random.Random(seed), 0.3)
        assert "<EMAIL>" in out and "<PHONE>" in out and "\n\n" in out
        assert out.startswith("The ") and " is " in out
        assert changed >= 1 and out != text


@pytest.mark.sysdep("wordnet")
def test_pos_inference_uses_context(wordnet_aug):
    assert wordnet_aug.infer_pos(["the", "run"], 1) == "n"
    assert wordnet_aug.infer_pos(["to", "run"], 1) == "v"
    assert wordnet_aug.infer_pos(["quickly"], 0) == "r"


@pytest.mark.sysdep("wordnet")
def test_inflected_plural_noun_gets_plural_synonym(wordnet_aug):
    syns = wordnet_aug.synonyms("cars", "n")
    assert syns and all(s.endswith("s") for s in syns)


@pytest.mark.sysdep("wordnet")
def test_eda_operations(wordnet_aug):
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    swapped, n = wordnet_aug.random_swap(text, random.Random(1), 0.1)
    assert sorted(swapped.split()) == sorted(text.split()) and swapped != text and n == 1
    deleted, n = wordnet_aug.random_delete(text, random.Random(3), 0.3)
    assert n >= 1 and len(deleted.split()) == 10 - n and "  " not in deleted
    assert set(deleted.split()) <= set(text.split())
    one, n = wordnet_aug.random_delete("single", random.Random(0), 1.0)
    assert one == "single" and n == 0
    inserted, n = wordnet_aug.random_insert("The doctor examined the patient carefully.", random.Random(2), 0.2)
    assert n >= 1 and len(inserted.split()) > 6


@pytest.mark.sysdep("wordnet")
def test_records_carry_provenance_and_copy_labels(cli):
    result = cli(["augment", "--method", "synonym,eda", "-n", "2", "--seed", "7"], input=INPUT)
    assert result.exit_code == 0, result.stderr
    recs = result.records()
    originals = [r for r in recs if "augmentation" not in r]
    assert originals == TEXTS
    variants = [r for r in recs if "augmentation" in r]
    assert variants, "no variants"
    for v in variants:
        assert v["augmentation"]["method"] in ("synonym", "eda")
        assert isinstance(v["augmentation"]["seed"], int)
        assert 0 < v["augmentation"]["similarity"] < 1
        assert v["label"] in ("animals", "shipping", "refund")
    assert {v["augmented_from"] for v in variants if v["label"] == "animals"} == {"a"}
    assert {v["augmented_from"] for v in variants if v["label"] == "refund"} == {"<stdin>:3"}
    # originals come first, then their variants, in input order
    order = [r.get("augmented_from", r.get("id", "<stdin>:3")) for r in recs]
    assert order == sorted(order, key=["a", "b", "<stdin>:3"].index)


@pytest.mark.sysdep("wordnet")
def test_no_keep_original(cli):
    result = cli(["augment", "--method", "eda", "--no-keep-original", "--seed", "1"], input=INPUT)
    assert result.exit_code == 0
    assert all("augmentation" in r for r in result.records())


@pytest.mark.sysdep("wordnet")
def test_variants_of_deeply_nested_records_leave_the_original_alone(cli):
    # A record nested 1,000 levels deep is valid input (orjson reads up to 1,024); copying it
    # for each variant used to recurse per level (copy.deepcopy) and crash.
    deep = "[" * 1000 + "]" * 1000
    line = '{"id": "d", "meta": {"body": "the quick brown fox jumps over the lazy dog by the river"}, "d": %s}\n' % deep
    result = cli(["augment", "--method", "eda", "-n", "2", "--seed", "1", "--field", "meta.body"], input=line)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout_bytes.splitlines()
    assert len(lines) == 3 and lines[0] == line.rstrip("\n").replace(": ", ":").replace(", ", ",").encode()
    variants = [json.loads(raw.replace(deep.encode(), b"[]")) for raw in lines[1:]]
    assert all(raw.count(b"[") == 1000 for raw in lines)
    assert {v["augmented_from"] for v in variants} == {"d"}
    assert all(v["meta"]["body"] != "the quick brown fox jumps over the lazy dog by the river" for v in variants)


@pytest.mark.sysdep("wordnet")
def test_deterministic_for_a_seed_and_different_across_seeds(cli):
    args = ["augment", "--method", "synonym,eda", "-n", "3"]
    a = cli(args + ["--seed", "1"], input=INPUT).stdout
    b = cli(args + ["--seed", "1"], input=INPUT).stdout
    c = cli(args + ["--seed", "2"], input=INPUT).stdout
    assert a == b and a != c


@pytest.mark.sysdep("wordnet")
def test_seed_is_independent_of_other_methods(cli):
    only = cli(["augment", "--method", "eda", "--seed", "3", "--no-keep-original"], input=INPUT).records()
    both = cli(["augment", "--method", "synonym,eda", "--seed", "3", "--no-keep-original"], input=INPUT).records()
    assert [r["text"] for r in only] == [r["text"] for r in both if r["augmentation"]["method"] == "eda"]


@pytest.mark.sysdep("wordnet")
def test_guard_drops_identical_and_out_of_range(tmp_path, cli):
    cfg = AugmentConfig(min_similarity=0.5, max_similarity=0.95)
    guard = Guard(cfg)
    assert guard.check("a b c", "a b c")[0] == "variant is identical to its source"
    assert guard.check("a b c", "  ")[0] == "variant is empty"
    assert "below" in guard.check("one two three four", "five six seven eight")[0]
    assert "above" in guard.check("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twentyone", "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twentytwo")[0]
    assert guard.check("one two three", "one two four")[0] is None
    rejects = tmp_path / "rej.jsonl"
    # a record with no replaceable words: its synonym "variant" is identical and is dropped
    result = cli(["augment", "--method", "synonym", "--rejects", str(rejects)], input='{"text": "the of and to"}\n')
    assert result.exit_code == 0 and result.records() == [{"text": "the of and to"}]
    rej = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert rej[0]["reason"] == "variant is identical to its source" and rej[0]["variant"] is True


def test_similarity_measure():
    assert similarity("a b c d", "a b c d") == 1.0
    assert similarity("a b c d", "b a c d") < 1.0
    assert similarity("a b", "c d") == 0.0


def test_derive_seed_is_stable():
    assert derive_seed(1, 2, "eda", 0) == derive_seed(1, 2, "eda", 0) != derive_seed(1, 2, "eda", 1)
    assert derive_seed(0, 1, "synonym", 0) == 4751400301519648170  # fixed across runs and machines


def test_clean_llm_output():
    assert clean_llm_output('Paraphrase: "The box is broken."') == "The box is broken."
    assert clean_llm_output("  plain  ") == "plain"


@pytest.mark.sysdep("wordnet")
def test_malformed_input(cli, tmp_path):
    bad = INPUT + "not json\n" + '{"text": 3}\n'
    assert cli(["augment", "--method", "eda"], input=bad).exit_code == 3
    rejects = tmp_path / "rej.jsonl"
    result = cli(["augment", "--method", "eda", "--on-error", "skip", "--rejects", str(rejects)], input=bad)
    assert result.exit_code == 0
    assert len([r for r in result.records() if "augmentation" not in r]) == 3
    assert [json.loads(x)["line"] for x in rejects.read_text().splitlines()] == [4, 5]
    kept = cli(["augment", "--method", "eda", "--on-error", "keep"], input=bad)
    assert {"text": 3} in kept.records()


def test_usage_errors(cli):
    assert cli(["augment", "--method", "nope"], input=INPUT).exit_code == 2
    assert cli(["augment", "--eda-ops", "swap,jump"], input=INPUT).exit_code == 2
    assert cli(["augment", "--min-similarity", "0.9", "--max-similarity", "0.1"], input=INPUT).exit_code == 2


# ----------------------------------------------------------------------------- LLM methods


class FakeModel:
    """Records the prompts it gets; answers deterministically from the prompt text."""

    class identity:  # noqa: N801
        @staticmethod
        def to_dict():
            return {"name": "fake", "format": "test"}

    def __init__(self):
        self.calls = []

    def close(self):
        pass

    def chat_batch(self, conversations, params):
        from llmtools.models import Completion

        self.calls.append((len(conversations), params.seed))
        out = []
        for conv in conversations:
            prompt = conv[-1]["content"]
            text = prompt.rsplit("Text: ", 1)[-1]
            if "into French" in prompt:
                answer = "FR " + text
            elif "into English" in prompt:
                answer = "Translation: " + text.replace("FR ", "") + " (back)"
            elif "new example" in prompt:
                answer = "A brand new example about kettles and refunds."
            else:
                answer = '"' + " ".join(reversed(text.split())) + '"'
            out.append(Completion(answer, 5, 5, "stop"))
        return out


def test_llm_methods_batched_with_prompts(tmp_path):
    model = FakeModel()
    cfg = AugmentConfig(methods=("paraphrase", "backtranslate", "synthesize"), batch_size=2, seed=4)
    recs = list(augment([dict(t) for t in TEXTS], cfg, model=model))
    variants = [r for r in recs if "augmentation" in r]
    by = {m: [v for v in variants if v["augmentation"]["method"] == m] for m in cfg.methods}
    assert [v["text"] for v in by["paraphrase"]][0] == " ".join(reversed(TEXTS[0]["text"].split()))
    assert by["backtranslate"][0]["text"] == TEXTS[0]["text"] + " (back)"
    assert by["backtranslate"][0]["augmentation"]["params"]["pivot"] == "fr"
    assert by["synthesize"][0]["text"].startswith("A brand new example")
    # batches of 2 then 1; backtranslate costs two calls per batch
    assert [n for n, _ in model.calls] == [2, 2, 2, 2, 1, 1, 1, 1]


def test_prompt_template_file(cli, tmp_path, monkeypatch):
    template = tmp_path / "p.txt"
    template.write_text("Rewrite politely: {text}")
    seen = []

    class Echo(FakeModel):
        def chat_batch(self, conversations, params):
            seen.extend(c[-1]["content"] for c in conversations)
            return super().chat_batch(conversations, params)

    monkeypatch.setattr("llmtools.models.load_model", lambda *a, **k: Echo())
    result = cli(["augment", "--method", "paraphrase", "--prompt-template", f"paraphrase={template}"], input=INPUT)
    assert result.exit_code == 0, result.stderr
    assert seen[0] == "Rewrite politely: " + TEXTS[0]["text"]
    assert cli(["augment", "--prompt-template", "bogus=x"], input=INPUT).exit_code == 2


def test_paraphrase_with_tiny_model(cli, tiny_model_dir):
    result = cli(["augment", "--method", "paraphrase", "-m", tiny_model_dir, "--max-tokens", "8", "--seed", "1", "--no-keep-original"], input=INPUT)
    assert result.exit_code == 0, result.stderr
    recs = result.records()
    for r in recs:
        assert r["augmentation"]["method"] == "paraphrase"
        assert r["augmentation"]["params"]["model"]["format"] == "hf"
    again = cli(["augment", "--method", "paraphrase", "-m", tiny_model_dir, "--max-tokens", "8", "--seed", "1", "--no-keep-original"], input=INPUT)
    assert again.stdout == result.stdout  # seeded sampling on the torch backend is deterministic


class _Paraphraser:
    """Behind the shared OpenAI test server: "paraphrases" the text of the prompt by swapping words."""

    identity = ModelIdentity(name="fake-paraphraser", format="fake")

    def chat(self, messages, params):
        text = messages[-1]["content"].rsplit("Text: ", 1)[-1]
        answer = "Paraphrase: " + text.replace("damaged", "broken").replace("quick", "fast").replace("refund", "repayment")
        return Completion(answer, prompt_tokens=3, completion_tokens=3, finish_reason="stop")


def test_paraphrase_over_http_with_retry(cli):
    with serve_backend(_Paraphraser()) as url:
        server = serve_backend.last
        server.faults, server.fault_paths = [503], {"/v1/chat/completions"}  # the first request fails once
        result = cli(["augment", "--method", "paraphrase", "-m", url, "--no-keep-original", "--retries", "2"], input=INPUT)
    assert result.exit_code == 0, result.stderr
    texts = [r["text"] for r in result.records()]
    assert texts[0] == TEXTS[0]["text"].replace("quick", "fast")
    assert texts[1] == TEXTS[1]["text"].replace("damaged", "broken")
    chats = [p for p in server.requests if p == "/v1/chat/completions"]
    assert len(chats) == 4  # three records plus one retried failure


@pytest.mark.slow
def test_paraphrase_with_default_model():
    proc = subprocess.run(
        [sys.executable, "-m", "llmtools", "augment", "--method", "paraphrase", "--seed", "1", "--max-tokens", "48", "--no-keep-original"],
        input=json.dumps({"text": "The delivery was late and the box was damaged."}) + "\n",
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["augmentation"]["params"]["model"]["name"] == "smollm2"
    assert rec["text"].strip() and rec["text"] != "The delivery was late and the box was damaged."


def test_jinja_prompt_template_uses_record_fields_and_chat_messages(cli, tmp_path, monkeypatch):
    template = tmp_path / "para.j2"
    template.write_text('<message role="system">You rewrite {{ label }} tickets.</message>\n'
                        '<message role="user">Rewrite politely: {{ text }}</message>')
    seen = []

    class Echo(FakeModel):
        def chat_batch(self, conversations, params):
            seen.extend(conversations)
            return super().chat_batch(conversations, params)

    monkeypatch.setattr("llmtools.models.load_model", lambda *a, **k: Echo())
    result = cli(["augment", "--method", "paraphrase", "--prompt-template", f"paraphrase={template}"], input=INPUT)
    assert result.exit_code == 0, result.stderr
    assert seen[0] == [{"role": "system", "content": "You rewrite animals tickets."},
                       {"role": "user", "content": "Rewrite politely: " + TEXTS[0]["text"]}]
    variant = [r for r in result.records() if "augmentation" in r][0]
    import hashlib

    assert variant["augmentation"]["params"]["prompt_templates"] == {
        "paraphrase": hashlib.sha256(template.read_bytes()).hexdigest()}


def test_jinja_prompt_missing_field_follows_on_error(cli, tmp_path, monkeypatch):
    template = tmp_path / "para.j2"
    template.write_text("Rewrite this {{ label }} text: {{ text }} (ticket {{ id }})")
    monkeypatch.setattr("llmtools.models.load_model", lambda *a, **k: FakeModel())
    args = ["augment", "--method", "paraphrase", "--prompt-template", f"paraphrase={template}"]
    failed = cli(args, input=INPUT)
    assert failed.exit_code == 3 and "<stdin>:3: template para.j2: missing field 'id'" in failed.stderr
    rejects = tmp_path / "rejects.jsonl"
    skipped = cli(args + ["--on-error", "skip", "--rejects", str(rejects)], input=INPUT)
    assert skipped.exit_code == 0, skipped.stderr
    assert {r.get("augmented_from") for r in skipped.records() if "augmentation" in r} == {"a", "b"}
    assert all(r.get("id") for r in skipped.records())
    assert json.loads(rejects.read_text())["record"] == TEXTS[2]
    kept = cli(args + ["--on-error", "keep"], input=INPUT)
    out = kept.records()
    assert TEXTS[2] in out and not [r for r in out if r.get("augmented_from") == "<stdin>:3"]
    evil = tmp_path / "evil.j2"
    evil.write_text("{{ text.__class__.__mro__ }}")
    assert cli(["augment", "--method", "paraphrase", "--prompt-template", f"paraphrase={evil}"], input=INPUT).exit_code == 2
