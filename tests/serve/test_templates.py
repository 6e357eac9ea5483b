"""Prompt templates in serve --batch: rendering, few-shot draws, chat vs plain, bad records, the
sandbox, variants, --extract and the manifest."""

from __future__ import annotations

import json

import orjson
import pytest
from tests.helpers.fake_backend import FakeBackend, Loader

from llmtools.errors import UsageError
from llmtools.ops.serve.batch import Prompting, batch, compile_extract
from llmtools.prompts import Examples, PromptTemplate, TemplateError, parse_messages


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_fields_and_nested_fields_render():
    tpl = PromptTemplate("Q: {{ question }} ({{ meta.channel }}, {{ record['meta']['lang'] }})")
    kind, text = tpl.render({"question": "how much?", "meta": {"channel": "email", "lang": "en"}})
    assert (kind, text) == ("generate", "Q: how much? (email, en)")


def test_missing_field_is_an_error_never_an_empty_string():
    tpl = PromptTemplate("Q: {{ question }} via {{ meta.channel }}", name="t.j2")
    with pytest.raises(TemplateError, match="missing field 'question'"):
        tpl.render({"meta": {"channel": "x"}})
    with pytest.raises(TemplateError, match="missing field 'channel'"):
        tpl.render({"question": "q", "meta": {}})
    # `is defined` still lets a template make a field optional on purpose
    opt = PromptTemplate("{{ question }}{% if hint is defined %} (hint: {{ hint }}){% endif %}")
    assert opt.render_text({"question": "q"}) == "q"
    assert opt.render_text({"question": "q", "hint": "h"}) == "q (hint: h)"


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ record.__class__.__init__.__globals__ }}",
    "{{ examples.__class__.__subclasses__() }}",
])
def test_sandbox_refuses_python_internals(source):
    tpl = PromptTemplate(source, name="evil.j2")
    with pytest.raises(UsageError, match="sandbox refused"):
        tpl.render_text({"x": 1})


def test_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.j2", "line one\n{% for x in %}\n")
    with pytest.raises(UsageError, match=r"bad\.j2:2: template syntax error"):
        PromptTemplate.load(path)


def test_few_shot_draw_is_deterministic_and_seeded(tmp_path):
    path = _jsonl(tmp_path / "ex.jsonl", [{"id": f"e{i}", "q": f"q{i}", "a": f"a{i}"} for i in range(10)])
    a = Examples.load(path, shots=3, seed=7)
    b = Examples.load(path, shots=3, seed=7)
    c = Examples.load(path, shots=3, seed=8)
    assert a.ids == b.ids and len(a.ids) == 3 and len(set(a.ids)) == 3
    assert a.ids != c.ids
    assert [r["id"] for r in a.records] == a.ids
    assert Examples.load(path).ids == [f"e{i}" for i in range(10)]  # no --shots: all, in file order
    with pytest.raises(UsageError, match="only 10"):
        Examples.load(path, shots=11)
    tpl = PromptTemplate("{% for ex in examples %}Q: {{ ex.q }}\nA: {{ ex.a }}\n{% endfor %}Q: {{ q }}\nA:", examples=a)
    text = tpl.render_text({"q": "new"})
    assert text.count("Q: ") == 4 and text.endswith("Q: new\nA:")
    assert [line[3:] for line in text.splitlines() if line.startswith("Q: ")][:3] == [r["q"] for r in a.records]


def test_examples_without_ids_use_line_numbers(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"q": "a"}\n\n{"q": "b"}\n', encoding="utf-8")
    assert Examples.load(str(path)).ids == ["line:1", "line:3"]


def test_chat_versus_plain():
    plain = PromptTemplate("Answer: {{ q }}")
    assert plain.render({"q": "x"}) == ("generate", "Answer: x")
    assert plain.render({"q": "x"}, chat=True) == ("chat", [{"role": "user", "content": "Answer: x"}])
    tags = PromptTemplate('<message role="system">Be brief.</message>\n<message role="user">{{ q }}</message>')
    assert tags.render({"q": "x < y"}) == ("chat", [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "x < y"}])
    as_json = PromptTemplate('[{"role": "system", "content": "S"}, {"role": "user", "content": {{ q | tojson }}}]')
    assert as_json.render({"q": 'say "hi"'}) == ("chat", [{"role": "system", "content": "S"},
                                                          {"role": "user", "content": 'say "hi"'}])
    with pytest.raises(TemplateError, match="unknown role"):
        parse_messages('<message role="robot">x</message>')
    with pytest.raises(TemplateError, match="outside"):
        parse_messages('stray <message role="user">x</message>')


def test_batch_with_template_variant_and_stamp():
    backend = FakeBackend("m")
    tpl = PromptTemplate("Q: {{ q }}", variant="v1")
    out = list(batch([{"id": 1, "q": "a b"}], backend, prompting=Prompting(template=tpl, variant="v1")))
    assert out[0]["prediction"] == "m Q: a b"
    assert out[0]["variant"] == "v1"
    assert out[0]["_llmtools"]["prompt"] == {"template": tpl.sha256, "examples": []}


def test_extract_takes_the_answer_group():
    backend = FakeBackend("m")
    prompting = Prompting(extract=compile_extract(r"Answer:\s*(?P<answer>\w+)"))
    a, b = batch([{"prompt": "think think Answer: 42 more"}, {"prompt": "no answer here"}], backend, prompting=prompting)
    assert a["prediction"] == "42" and a["raw_prediction"].startswith("m think") and a["_llmtools"]["extracted"] is True
    assert b["prediction"] == "" and b["_llmtools"]["extracted"] is False
    with pytest.raises(ValueError, match="bad regular expression"):
        compile_extract("(")


# --------------------------------------------------------------------------- the command


@pytest.fixture
def serve(monkeypatch, cli):
    """`serve([...])`: `llmtools serve --batch ...` through the real entry point, on fake models."""
    import llmtools.ops.serve as ops

    monkeypatch.setattr(ops, "make_loader", lambda **kw: Loader())
    return lambda args, stdin=None: cli(["serve", "--batch", *args], input=stdin)


def _records(output: str) -> list[dict]:
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def eval_set(tmp_path):
    return _jsonl(tmp_path / "eval.jsonl", [{"id": 1, "q": "one"}, {"id": 2}, {"id": 3, "q": "three"}])


def test_missing_field_under_each_on_error_mode(tmp_path, eval_set, serve):
    tpl = _write(tmp_path / "t.j2", "Q: {{ q }}")
    failed = serve(["fake", "--template", tpl, eval_set])
    assert failed.exit_code == 3
    assert "eval.jsonl:2: template t.j2: missing field 'q'" in failed.stderr

    rejects = tmp_path / "rejects.jsonl"
    skipped = serve(["fake", "--template", tpl, "--on-error", "skip", "--rejects", str(rejects), eval_set])
    assert skipped.exit_code == 0, skipped.stderr
    assert [r["id"] for r in _records(skipped.stdout)] == [1, 3]
    (rej,) = _records(rejects.read_text())
    assert rej["record"] == {"id": 2} and rej["line"] == 2 and "missing field 'q'" in rej["reason"]

    kept = serve(["fake", "--template", tpl, "--on-error", "keep", eval_set])
    assert kept.exit_code == 0
    out = _records(kept.stdout)
    assert [r["id"] for r in out] == [1, 2, 3]
    assert out[1] == {"id": 2}  # passed through unchanged: no prediction, no variant
    assert out[0]["prediction"].endswith("Q: one")


def test_command_few_shot_variant_and_manifest(tmp_path, eval_set, serve):
    examples = _jsonl(tmp_path / "train.jsonl", [{"id": f"t{i}", "q": f"q{i}", "a": f"a{i}"} for i in range(6)])
    tpl = _write(tmp_path / "fs.j2", "{% for ex in examples %}{{ ex.q }}={{ ex.a }} {% endfor %}{{ q }}=")
    out_path = tmp_path / "out.jsonl"
    result = serve(["fake", "--template", tpl, "--examples", examples, "--shots", "2", "--shots-seed", "3",
                     "--variant", "fs2", "--on-error", "skip", "-o", str(out_path), eval_set])
    assert result.exit_code == 0, result.stderr
    out = _records(out_path.read_text())
    chosen = Examples.load(examples, shots=2, seed=3).ids
    assert all(r["variant"] == "fs2" and r["_llmtools"]["prompt"]["examples"] == chosen for r in out)
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["kind"] == "serve-batch"
    import hashlib

    assert manifest["template"]["sha256"] == hashlib.sha256(open(tpl, "rb").read()).hexdigest()
    assert manifest["template"]["examples"]["ids"] == chosen
    assert manifest["template"]["examples"]["shots"] == 2 and manifest["params"]["variant"] == "fs2"
    assert eval_set in manifest["inputs"]


def test_command_usage_errors(tmp_path, eval_set, serve, cli):
    tpl = _write(tmp_path / "t.j2", "{{ q }}")
    assert serve(["fake", "--examples", eval_set, eval_set]).exit_code == 2
    assert serve(["fake", "--template", tpl, "--extract", "(", eval_set]).exit_code == 2
    evil = _write(tmp_path / "evil.j2", "{{ q.__class__ }}")
    result = serve(["fake", "--template", evil, eval_set])
    assert result.exit_code == 2 and "sandbox refused" in result.stderr
    assert cli(["serve", "--template", tpl]).exit_code == 2  # a batch-mode option without --batch


def test_tiny_model_template_request_equals_the_same_request_written_out(tmp_path, cli, tiny_model_dir):
    """On a real (tiny) model: a chat template and a plain template send exactly what a record
    with those messages or that prompt sends (same tokens, same greedy text)."""
    chat_tpl = _write(tmp_path / "chat.j2", '<message role="system">Be brief.</message>\n'
                                            '<message role="user">{{ q }}</message>')
    plain_tpl = _write(tmp_path / "plain.j2", "Q: {{ q }}\nA:")
    records = [{"id": i, "q": q} for i, q in enumerate(["the quick brown fox", "hello world"])]
    data = "".join(json.dumps(r) + "\n" for r in records)
    opts = ["--max-tokens", "6", "--batch-size", "2"]
    by_template = cli(["serve", "--batch", tiny_model_dir, "--template", chat_tpl, *opts], input=data).records()
    written = "".join(json.dumps({"id": r["id"], "messages": [{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": r["q"]}]}) + "\n"
                      for r in records)
    direct = cli(["serve", "--batch", tiny_model_dir, *opts], input=written).records()
    assert [r["prediction"] for r in by_template] == [r["prediction"] for r in direct]
    assert [r["usage"] for r in by_template] == [r["usage"] for r in direct]
    plain = cli(["serve", "--batch", tiny_model_dir, "--template", plain_tpl, *opts], input=data).records()
    prompts = "".join(json.dumps({"prompt": f"Q: {r['q']}\nA:"}) + "\n" for r in records)
    plain_direct = cli(["serve", "--batch", tiny_model_dir, *opts], input=prompts).records()
    assert [r["prediction"] for r in plain] == [r["prediction"] for r in plain_direct]
    assert plain[0]["usage"]["prompt_tokens"] < by_template[0]["usage"]["prompt_tokens"]  # no chat wrapping
