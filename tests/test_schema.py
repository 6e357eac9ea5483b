"""--schema: records checked against a JSON Schema (normalize, finetune, score), the failing path
and message in --rejects, --schema-only, and the fast path agreeing with jsonschema."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtools import schema as lschema
from llmtools.errors import UsageError
from tests.conftest import run_cli

jsonschema = pytest.importorskip("jsonschema")

TICKET = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "text", "meta"],
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "text": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {
            "type": "object",
            "required": ["lang"],
            "properties": {"lang": {"enum": ["en", "de"]}, "turns": {"type": "array", "items": {"$ref": "#/$defs/turn"}}},
        },
    },
    "$defs": {"turn": {"type": "object", "required": ["role"], "properties": {"role": {"enum": ["user", "bot"]}}}},
}

GOOD = [
    {"id": 1, "text": "Hello   there", "meta": {"lang": "en"}},
    {"id": 2, "text": "Hallo", "tags": ["x"], "meta": {"lang": "de", "turns": [{"role": "user"}]}},
]
BAD_NESTED = {"id": 3, "text": "Bonjour", "meta": {"lang": "fr"}}
BAD_DEEP = {"id": 4, "text": "Hi", "meta": {"lang": "en", "turns": [{"role": "user"}, {"role": "admin"}]}}


def _files(tmp_path, records, schema=TICKET):
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    sch = tmp_path / "schema.json"
    sch.write_text(json.dumps(schema))
    return str(data), str(sch)


def test_valid_records_pass_and_are_normalized(tmp_path):
    data, sch = _files(tmp_path, GOOD)
    res = run_cli(["normalize", "--schema", sch, data])
    assert res.exit_code == 0, res.stderr
    assert [r["text"] for r in res.records()] == ["Hello there", "Hallo"]


def test_invalid_record_fails_with_the_nested_path(tmp_path):
    data, sch = _files(tmp_path, GOOD + [BAD_NESTED])
    res = run_cli(["normalize", "--schema", sch, data])
    assert res.exit_code == 3 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"llmtools: error: {data}:3: schema: meta.lang: 'fr' is not one of ['en', 'de']")


def test_rejects_name_the_path_and_message(tmp_path):
    data, sch = _files(tmp_path, [BAD_NESTED] + GOOD + [BAD_DEEP, {"id": 5, "meta": {"lang": "en"}}])
    rejects = tmp_path / "rej.jsonl"
    res = run_cli(["normalize", "--schema", sch, "--on-error", "skip", "--rejects", str(rejects), data])
    assert res.exit_code == 0
    assert [r["id"] for r in res.records()] == [1, 2]
    rej = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["reason"], r["line"], r["path"]) for r in rej] == [
        ("schema", 1, "meta.lang"), ("schema", 4, "meta.turns.1.role"), ("schema", 5, "")]
    assert rej[1]["message"] == "'admin' is not one of ['user', 'bot']"
    assert rej[2]["message"] == "'text' is a required property"
    assert rej[0]["record"] == BAD_NESTED  # unchanged


def test_schema_only_checks_without_rewriting(tmp_path):
    records = [{"id": 1, "body": "Spaces   kept\u200b", "meta": {"lang": "en"}}]
    schema = {"type": "object", "required": ["body"], "properties": {"body": {"type": "string"}}}
    data, sch = _files(tmp_path, records + [{"id": 2}], schema)
    res = run_cli(["normalize", "--schema", sch, "--schema-only", "--on-error", "keep", data])
    assert res.exit_code == 0
    assert res.records() == records + [{"id": 2}]  # keep: the bad one passes through, told on stderr
    assert f"{data}:2: schema: the record: 'body' is a required property" in res.stderr
    res = run_cli(["normalize", "--schema", sch, "--schema-only", data])
    assert res.exit_code == 3 and res.records() == records
    res = run_cli(["normalize", "--schema-only", data])
    assert res.exit_code == 2 and "--schema-only needs --schema" in res.stderr


def test_schema_checks_every_input_format(tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text("id,text\n1,fine\nx,bad id\n")
    sch = tmp_path / "s.json"
    sch.write_text(json.dumps({"properties": {"id": {"type": "integer"}}}))
    res = run_cli(["normalize", "--schema", str(sch), "--csv-types", "id=json", "--on-error", "skip", str(csv)])
    assert res.records() == [{"id": 1, "text": "fine"}]
    assert f"{csv}:3: column 'id'" in res.stderr  # an untyped cell fails before the schema is asked


@pytest.mark.parametrize("bad, message", [
    ({"type": "objekt"}, "not a valid JSON Schema"),
    ({"properties": {"a": {"minLength": -1}}}, "(at properties.a.minLength)"),
    ([1, 2], "a schema is an object"),
])
def test_a_schema_that_is_itself_invalid_is_exit_2(tmp_path, bad, message):
    data, sch = _files(tmp_path, GOOD, bad)
    res = run_cli(["normalize", "--schema", sch, data])
    assert res.exit_code == 2 and message in res.stderr and res.stdout == ""


def test_schema_file_problems_are_exit_2(tmp_path):
    data, _ = _files(tmp_path, GOOD)
    res = run_cli(["normalize", "--schema", str(tmp_path / "missing.json"), data])
    assert res.exit_code == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    res = run_cli(["normalize", "--schema", str(broken), data])
    assert res.exit_code == 2 and "not valid JSON" in res.stderr
    yml = tmp_path / "s.yaml"
    yml.write_text("type: object\nrequired: [text]\n")
    assert run_cli(["normalize", "--schema", str(yml), data]).exit_code == 0


# --------------------------------------------------------------------------- fast path


def test_fast_path_is_used_only_for_keywords_that_mean_the_same():
    assert lschema.SchemaCheck(TICKET).engine == "fastjsonschema+jsonschema"
    for only_2020 in ({"prefixItems": [{"type": "string"}]}, {"unevaluatedProperties": False},
                      {"dependentRequired": {"a": ["b"]}}, {"properties": {"a": {"$ref": "#/$defs/x", "minimum": 1}},
                                                           "$defs": {"x": {"type": "integer"}}}):
        assert lschema.SchemaCheck(only_2020).engine == "jsonschema", only_2020
    # 2020-12 semantics hold where draft 7 would differ: prefixItems checks, `dependencies` is no keyword
    check = lschema.SchemaCheck({"prefixItems": [{"type": "string"}, {"type": "integer"}]})
    assert check(["a", 1]) is None and check(["a", "b"]) == ("1", "'b' is not of type 'integer'")
    assert lschema.SchemaCheck({"$schema": "http://json-schema.org/draft-07/schema#"}).engine == "jsonschema"


def test_the_fast_path_does_not_fill_in_defaults():
    check = lschema.SchemaCheck({"properties": {"a": {"type": "string", "default": "x"}}})
    record = {"b": 1}
    assert check(record) is None and record == {"b": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False) | st.sampled_from(["", "en", "de", "user", "x" * 5]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "text", "meta", "lang", "role", "turns", "tags"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "text", "meta", "tags", "extra"]), json_values, max_size=5))
def test_fast_path_agrees_with_jsonschema(record):
    check = _CHECK
    expected = jsonschema.Draft202012Validator(TICKET).is_valid(record)
    assert (check(record) is None) == expected


_CHECK = lschema.SchemaCheck(TICKET)


def test_load_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        lschema.load(str(tmp_path / "nope.json"))


# --------------------------------------------------------------------------- before any model


def test_score_fails_on_bad_data_before_loading_any_model(tmp_path):
    """perplexity needs a model that does not exist (exit 4 when it is loaded): bad data is found
    first (exit 3), also from stdin, which is read twice through a temp file."""
    sch = tmp_path / "s.json"
    sch.write_text(json.dumps({"required": ["prediction"], "properties": {"prediction": {"type": "string"}}}))
    good = [{"prediction": f"text {i}"} for i in range(50)]
    lines = b"".join(orjson.dumps(r) + b"\n" for r in good + [{"prediction": 7}])
    args = ["score", "--metric", "perplexity", "-m", str(tmp_path / "no-model"), "--schema", str(sch)]
    res = run_cli(args, input=lines)
    assert res.exit_code == 3, res.stderr
    assert "<stdin>:51: schema: prediction: 7 is not of type 'string'" in res.stderr
    res = run_cli(args, input=lines.rsplit(b"\n", 2)[0] + b"\n")  # the good records only: now the model is looked for
    assert res.exit_code == 4, res.stderr


def test_finetune_fails_on_bad_data_before_loading_any_model(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    sch = tmp_path / "s.json"
    sch.write_text(json.dumps({"required": ["text", "source"]}))
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"text": "a", "source": "x"}\n{"text": "b"}\n')
    res = run_cli(["finetune", "--base", str(tmp_path / "no-model"), "-o", str(tmp_path / "out"), "--schema", str(sch), str(data)])
    assert res.exit_code == 3, res.stderr
    assert f"{data}:2: schema: the record: 'source' is a required property" in res.stderr
