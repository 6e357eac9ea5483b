"""Every command against every kind of malformed input: a generated matrix (issue 25).

Each cell runs one command (in-process, through the real entry point) on one input kind, under
`--on-error fail`, and, where the input has bad lines, `skip` and `keep` with `--rejects`. It checks
what the README promises for bad input: no traceback; the documented exit code; one stderr line
naming `source:line` for a stop; stdout that is JSONL; and, with `--rejects`, that every record
read is accounted for (records out + rejects = records in) and that every reject holds the
original line or record.

quantize's GGUF pipeline is replaced by a recorder of the evaluation texts it is given: the cells
test how it reads stdin; tests/quantize runs the pipeline itself.

Below the matrix, Hypothesis feeds the shared reader (io.Job) arbitrary bytes split into lines:
it never crashes, every line is accounted for, and `--on-error keep` passes every JSON object
through unchanged.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtools import io as lio
from llmtools.errors import BadInputError
from llmtools.io import loads_line, set_field

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "A language model predicts the next token from the tokens that came before it.",
    "Fine tuning adapts a pretrained model to a task with a small dataset of examples.",
    "Monitoring tracks latency, errors and drift after a model is deployed to users.",
]
BIG_INT = 123456789012345678901234567890
PAD = 10 * 1024 * 1024  # the 10 MB line


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    name: str
    args: Callable[[Any], list[str]]  # the command line before the inputs, given the fixtures
    field_option: str | None  # the option naming the text field; None: the command has none
    base: Callable[[str], dict]  # a good record around a text
    count: Callable[[list[dict]], int]  # how many input records the output stands for
    stdin_only: bool = False
    outputs_kept: bool = True  # a record kept under --on-error keep counts in the output

    def good(self, i: int, path: str | None = None) -> dict:
        rec = self.base(SENTENCES[i % len(SENTENCES)] + f" Record {i}.")
        if path is not None:  # move the text to a nested path
            text = rec.pop(self.default_field)
            set_field(rec, path, text)
        return rec

    @property
    def default_field(self) -> str:
        return {"score": "prediction", "serve-batch": "prompt"}.get(self.name, "text")


def _records(out: list[dict]) -> int:
    return len(out)


def _originals(out: list[dict]) -> int:
    return sum(1 for r in out if "augmented_from" not in r)


def _scored(out: list[dict]) -> int:
    return sum(1 for r in out if not r.get("_summary"))


def _windows(out: list[dict]) -> int:
    return sum(r["count"] for r in out if r.get("type") == "metrics")


def _trained(out: list[dict]) -> int:
    (final,) = [r for r in out if r.get("type") == "final"]
    return final["train_examples"]


def _eval_texts(out: list[dict]) -> int:
    (report,) = out
    return report["eval_texts"]


def _text(t: str) -> dict:
    return {"id": abs(hash(t)) % 10**6, "text": t}


COMMANDS = [
    Command("normalize", lambda fx: ["normalize"], "--field", _text, _records),
    Command("dedup-exact", lambda fx: ["dedup", "--exact"], "--field", _text, _records),
    Command("dedup-near", lambda fx: ["dedup"], "--field", _text, _records),
    Command("dedup-against", lambda fx: ["dedup", "--against", fx.reference], "--field", _text, _records),
    Command("augment-eda", lambda fx: ["augment", "--method", "eda", "--seed", "1"], "--field", _text, _originals),
    Command("augment-synonym", lambda fx: ["augment", "--method", "synonym", "--seed", "1"], "--field", _text, _originals),
    Command("score", lambda fx: ["score", "--metric", "exact_match,bleu,rouge"], "--prediction-field",
            lambda t: {"prediction": t, "reference": t}, _scored),
    Command("watch", lambda fx: ["watch", "--once", "--window", "1000"], None, lambda t: {"latency_ms": len(t), "text": t},
            _windows),
    Command("serve-batch", lambda fx: ["serve", "--batch", fx.tiny, "--max-tokens", "1"], "--field",
            lambda t: {"prompt": t}, _records),
    Command("finetune", lambda fx: ["finetune", "--base", fx.tiny, "-o", fx.tmp / "model", "--overwrite",
                                    "--max-steps", "1", "--batch-size", "1", "--save-every", "0"], "--field",
            lambda t: {"text": t}, _trained),
    Command("quantize", lambda fx: ["quantize", fx.tiny, "--to", "q8_0", "-o", fx.tmp / "m.gguf"], "--field", _text,
            _eval_texts, stdin_only=True, outputs_kept=False),
]
BY_NAME = {c.name: c for c in COMMANDS}


# --------------------------------------------------------------------------- input kinds


@dataclass
class Input:
    """One input: its bytes (or None for a file that does not exist), the numbers of its bad
    lines, and the records it holds that a command keeps under `--on-error keep`."""

    data: bytes | None
    bad: list[int] = field(default_factory=list)
    keepable: list[int] = field(default_factory=list)  # bad lines that are JSON objects
    field_path: str | None = None  # run with the text field at this path
    fatal: int | None = None  # the exit code under every --on-error mode
    gz: bool = False
    good_lines: int = 0


def _lines(*parts: bytes | dict, nl: bytes = b"\n") -> bytes:
    return b"".join((orjson.dumps(p) if isinstance(p, dict) else p) + nl for p in parts)


def _with_bad(cmd: Command, *bad: bytes | dict, path: str | None = None, keep: bool = False) -> Input:
    """Good line, the bad lines, good line."""
    g0, g1 = cmd.good(0, path), cmd.good(1, path)
    n = len(bad)
    return Input(_lines(g0, *bad, g1), bad=list(range(2, 2 + n)), keepable=list(range(2, 2 + n)) if keep else [],
                 field_path=path, good_lines=2)


def _benign(data: bytes, good: int, path: str | None = None) -> Input:
    return Input(data, field_path=path, good_lines=good)


def _nested(depth: int) -> bytes:
    return b'{"text": "deep", "d": ' + b"[" * depth + b"]" * depth + b"}"


def make_input(kind: str, cmd: Command) -> Input:
    f = cmd.default_field
    g = cmd.good
    if kind == "invalid-json":
        return _with_bad(cmd, b'{"' + f.encode() + b'": "broken')
    if kind == "non-objects":
        return _with_bad(cmd, b"[1, 2]", b'"a string"', b"42", b"null")
    if kind == "invalid-utf8":
        return _with_bad(cmd, b'{"' + f.encode() + b'": "caf\xe9 au lait"}')
    if kind == "json-then-junk":
        return _with_bad(cmd, orjson.dumps(g(2)) + b" trailing junk")
    if kind == "nested-5000":
        return _with_bad(cmd, _nested(5000))
    if kind == "nan-literal":  # not JSON, though Python's parser takes it
        return _with_bad(cmd, orjson.dumps(g(2))[:-1] + b', "score": NaN}')
    if kind in ("missing-field", "ill-typed-field", "null-field"):
        rec = {k: v for k, v in g(2).items() if k != f}
        if kind != "missing-field":
            rec[f] = 5 if kind == "ill-typed-field" else None
        if cmd.field_option is None:  # watch reads no text field: these are good records
            return _benign(_lines(g(0), rec, g(1)), 3)
        return _with_bad(cmd, rec, keep=True)
    if kind in ("field-through-list", "field-through-string"):
        rec = {"id": 7, "a": ["x"] if kind == "field-through-list" else "x"}
        if cmd.field_option is None:
            return _benign(_lines(g(0), rec, g(1)), 3)
        return _with_bad(cmd, rec, path="a.b", keep=True)
    if kind == "empty":
        return _benign(b"", 0)
    if kind == "blank-lines":
        return _benign(_lines(g(0)) + b"\n   \n\t\n" + _lines(g(1)) + b"\n", 2)
    if kind == "crlf":
        return _benign(_lines(g(0), g(1), g(2), nl=b"\r\n"), 3)
    if kind == "bom":
        return _benign(b"\xef\xbb\xbf" + _lines(g(0), g(1)), 2)
    if kind == "duplicate-keys":
        dup = orjson.dumps(g(2))[:-1] + b', "' + f.encode() + b'": ' + orjson.dumps(SENTENCES[3] + " Again.") + b"}"
        return _benign(_lines(g(0), dup, g(1)), 3)
    if kind == "nul-escapes":
        rec = g(2)
        rec[f] = rec[f].replace(" ", "\u0000", 1)
        return _benign(_lines(g(0), rec, g(1)), 3)
    if kind == "lone-surrogate":  # a valid JSON escape that is not valid UTF-8
        line = orjson.dumps(g(2))[:-1] + b', "note": "\\ud800 alone"}'
        return _benign(_lines(g(0), line, g(1)), 3)
    if kind == "big-int":
        rec = g(2)
        rec["n"] = 0
        line = orjson.dumps(rec).replace(b'"n":0', b'"n":' + str(BIG_INT).encode())
        return _benign(_lines(g(0), line, g(1)), 3)
    if kind == "nested-1000":  # within orjson's limit: a good record
        line = orjson.dumps(g(2))[:-1] + b', "d": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        return _benign(_lines(g(0), line, g(1)), 3)
    if kind == "line-10mb":
        rec = g(2)
        rec["blob"] = "x" * PAD
        return _benign(_lines(g(0), rec, g(1)), 3)
    if kind == "truncated-gz":
        data = gzip.compress(_lines(*(g(i) for i in range(40))))
        return Input(data[: len(data) * 2 // 3], fatal=3, gz=True)
    if kind == "missing-file":
        return Input(None, fatal=2)
    raise AssertionError(kind)


KINDS = [
    "invalid-json", "non-objects", "invalid-utf8", "missing-field", "ill-typed-field", "null-field", "empty",
    "blank-lines", "line-10mb", "nul-escapes", "big-int", "truncated-gz", "nested-5000", "nested-1000", "bom",
    "crlf", "json-then-junk", "duplicate-keys", "field-through-list", "field-through-string", "missing-file",
    "nan-literal", "lone-surrogate",
]

# Cells where a command documents another outcome than the input kind's.
EXPECTED_CODE = {
    ("finetune", "empty"): 2,  # "no training records in the input" (docs/finetune.md)
}
NOT_APPLICABLE = {
    ("quantize", "missing-file"): "quantize reads its evaluation texts from stdin only",
}


# --------------------------------------------------------------------------- running a cell


@dataclass
class Fixtures:
    tmp: Path
    request: Any
    reference: str = ""  # dedup --against's file, with the text where the cell's --field says

    @property
    def tiny(self) -> str:  # built on first use: the light commands need no torch
        return self.request.getfixturevalue("tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch

    from tests.helpers.tiny import build_tiny_llama

    torch.set_num_threads(1)
    return build_tiny_llama(tmp_path_factory.mktemp("battery") / "tiny")


@pytest.fixture
def fx(tmp_path, request) -> Fixtures:
    return Fixtures(tmp_path, request)


@pytest.fixture
def fake_quantize(monkeypatch):
    """quantize_model, recording the evaluation texts it is handed (None: the bundled sample)."""
    import llmtools.ops.quantize as ops

    def fake(source, output, to, texts, **kw):
        return {"output": output, "type": to, "input_bytes": 0, "output_bytes": 0, "bits_per_weight": {"after": 8.5},
                "tensor_types": {"after": {}}, "seconds": {"total": 0.0}, "eval_set": kw.get("eval_set"),
                "eval_texts": len(texts) if texts is not None else 0}

    monkeypatch.setattr(ops, "quantize_model", fake)


@dataclass
class Run:
    code: int
    stdout: bytes
    stderr: str
    source: str
    rejects: list[dict] | None

    def records(self) -> list[dict]:
        out = []
        for line in self.stdout.splitlines():
            value, reason = loads_line(line)  # exact big integers and deep nesting, like the tools
            assert reason is None and isinstance(value, dict), (reason, line[:200])
            out.append(value)
        return out


def run_cell(cli, fx: Fixtures, cmd: Command, inp: Input, mode: str) -> Run:
    ref: dict = {}
    set_field(ref, inp.field_path or "text", "An unrelated reference sentence about gardening and tomatoes in spring.")
    fx.reference = str(fx.tmp / "reference.jsonl")
    Path(fx.reference).write_bytes(orjson.dumps(ref) + b"\n")
    args = [str(a) for a in cmd.args(fx)]
    if inp.field_path and cmd.field_option:
        args += [cmd.field_option, inp.field_path]
    rejects = fx.tmp / f"rejects-{mode}.jsonl"
    if mode != "fail":
        args += ["--on-error", mode, "--rejects", str(rejects)]
    stdin = b""
    if cmd.stdin_only:
        stdin, source = inp.data or b"", "<stdin>"
    else:
        path = fx.tmp / ("input.jsonl.gz" if inp.gz else "input.jsonl")
        if inp.data is not None:
            path.write_bytes(inp.data)
        args.append(str(path))
        source = str(path)
    res = cli(args, input=stdin)
    got = None
    if rejects.exists():
        got = [json.loads(line) for line in rejects.read_text().splitlines()]
    return Run(res.exit_code, res.stdout_bytes, res.stderr, source, got)


def _check_common(run: Run, cmd: Command) -> list[dict]:
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "internal error" not in run.stderr, run.stderr[-2000:]
    assert run.code in (0, 1, 2, 3, 4, 130), run.code
    return run.records()  # stdout is JSONL: one JSON object per line


def _original_line(inp: Input, lineno: int) -> bytes:
    return inp.data.splitlines()[lineno - 1].rstrip(b"\r")


def _check_rejects(run: Run, inp: Input, expect_lines: list[int]) -> None:
    assert run.rejects is not None, "no --rejects file written"
    bad = [r for r in run.rejects if r["line"] in inp.bad]
    assert sorted(r["line"] for r in bad) == sorted(expect_lines), run.rejects
    for entry in bad:
        assert entry["source"] == run.source and entry["reason"]
        line = _original_line(inp, entry["line"])
        if "raw" in entry:
            assert entry["raw"].encode("utf-8", "surrogateescape") == line or line.decode("utf-8", "backslashreplace") == entry["raw"]
        else:
            assert entry["record"] == json.loads(line.decode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- the matrix


# Cells that do not apply (NOT_APPLICABLE says why) are left out of the matrix, not skipped:
# CI counts a skip as a failure.
CELLS = [(c.name, k) for c in COMMANDS for k in KINDS if (c.name, k) not in NOT_APPLICABLE]


def _setup(request, name: str, kind: str) -> tuple[Command, Input]:
    if (name, kind) in NOT_APPLICABLE:
        pytest.skip(NOT_APPLICABLE[name, kind])
    if name == "augment-synonym":
        from tests.helpers import sysdeps

        sysdeps.require("wordnet")
    if name == "quantize":
        request.getfixturevalue("fake_quantize")
    cmd = BY_NAME[name]
    return cmd, make_input(kind, cmd)


@pytest.mark.parametrize("name,kind", CELLS, ids=[f"{c}-{k}" for c, k in CELLS])
def test_fail(cli, fx, request, name, kind):
    """--on-error fail: a bad line stops the run with exit 3 and one stderr line naming it;
    good input runs through, each record accounted for."""
    cmd, inp = _setup(request, name, kind)
    run = run_cell(cli, fx, cmd, inp, "fail")
    expected = EXPECTED_CODE.get((name, kind), inp.fatal if inp.fatal is not None else (3 if inp.bad else 0))
    assert run.code == expected, run.stderr[-2000:]
    out = _check_common(run, cmd)
    if expected == 0:
        assert cmd.count(out) == inp.good_lines
        if kind == "big-int" and cmd.count is _records:
            assert any(r.get("n") == BIG_INT for r in out)  # exact, not rounded to a float
        if kind == "duplicate-keys" and cmd.count is _records:
            assert out[1][cmd.default_field] == SENTENCES[3] + " Again."  # the last one wins
        return
    errors = [line for line in run.stderr.splitlines() if line.startswith("llmtools: error: ")]
    assert len(errors) == 1 and run.stderr.strip() == errors[0], run.stderr[-2000:]
    if inp.bad:
        assert errors[0].startswith(f"llmtools: error: {run.source}:{inp.bad[0]}: "), errors[0]
    elif inp.gz:  # named at the line the stream broke in
        broken = r"(corrupt gzip stream|compressed stream ends early or is corrupt)"
        assert re.match(rf"llmtools: error: {re.escape(run.source)}:\d+: {broken}", errors[0]), errors[0]
    else:  # a whole-source error (missing, empty): it names the source
        assert run.source in errors[0], errors[0]


# Under skip and keep, only inputs with bad lines (or a fatal fault) run: the others are the same
# run as under fail. watch reads no text field, so the field kinds hold no bad line for it.
FIELD_KINDS = {"missing-field", "ill-typed-field", "null-field", "field-through-list", "field-through-string"}
BAD_KINDS = {"invalid-json", "non-objects", "invalid-utf8", "json-then-junk", "nested-5000", "nan-literal",
             "truncated-gz", "missing-file"} | FIELD_KINDS
POLICY_CELLS = [(c.name, k) for c in COMMANDS for k in KINDS
                if k in BAD_KINDS and not (c.field_option is None and k in FIELD_KINDS) and (c.name, k) not in NOT_APPLICABLE]


@pytest.mark.parametrize("mode", ["skip", "keep"])
@pytest.mark.parametrize("name,kind", POLICY_CELLS, ids=[f"{c}-{k}" for c, k in POLICY_CELLS])
def test_skip_and_keep_account_for_every_record(cli, fx, request, name, kind, mode):
    """skip: bad lines go to --rejects, unchanged, and the run goes on; keep: bad JSON objects
    pass through (or, where the command cannot use them, go to --rejects) and lines that are not
    objects are skipped. Either way records in = records out + rejects."""
    cmd, inp = _setup(request, name, kind)
    assert inp.bad or inp.fatal is not None
    run = run_cell(cli, fx, cmd, inp, mode)
    if inp.fatal is not None:
        assert run.code == inp.fatal, run.stderr[-2000:]
        _check_common(run, cmd)
        return
    assert run.code == 0, run.stderr[-2000:]
    out = _check_common(run, cmd)
    for line in inp.bad:  # a warning per bad line, naming it
        assert re.search(rf"^llmtools [\w-]+: {re.escape(run.source)}:{line}: ", run.stderr, re.M), run.stderr[-2000:]
    kept = inp.keepable if mode == "keep" else []
    passed = [n for n in kept if not _rejected(run, n)]
    _check_rejects(run, inp, [n for n in inp.bad if n not in passed])
    assert cmd.count(out) == inp.good_lines + (len(passed) if cmd.outputs_kept else 0)
    if passed and cmd.count is _records:
        lines = [orjson.loads(_original_line(inp, n)) for n in passed]
        assert all(any(_contains(r, rec) for r in out) for rec in lines)


def _rejected(run: Run, line: int) -> bool:
    return any(r["line"] == line for r in run.rejects or [])


def _contains(out: dict, original: dict) -> bool:
    """`out` is `original` with keys added (the command's own), every original key unchanged."""
    return all(k in out and out[k] == v for k, v in original.items())


# --------------------------------------------------------------------------- the shared reader


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=5))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=4), inner, max_size=4)),
                       max_leaves=12)
_object_lines = st.dictionaries(st.sampled_from(["text", "id", "a", "ü", "\u0000"]), _values, max_size=4).map(
    lambda d: lio.dumps(d))
_line = st.one_of(
    st.binary(max_size=30),  # anything at all
    _object_lines,
    _values.map(lio.dumps),  # JSON that is not an object
    st.sampled_from([b"NaN", b'{"a": NaN}', b'{"a": 1e400}', b'{"a": "\\ud800"}', b'{"a": 1} junk', b"\xef\xbb\xbf{}",
                     b'{"text": "x", "text": 5}', b"[" * 1100, b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}", b"\r", b""]),
)
_inputs = st.lists(_line, max_size=12).map(lambda lines: b"\n".join(lines))


def _oracle(raw: bytes) -> Any:
    """What a strict JSON reader makes of one line: the value, or None for a bad line."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    stack = [(value, 1)]  # no number out of a double's range, no more than 1024 levels (orjson's)
    while stack:
        v, depth = stack.pop()
        if depth > 1024 or (isinstance(v, float) and not math.isfinite(v)):
            return None
        if isinstance(v, (dict, list)):
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return value


def _read(tmp_path: Path, data: bytes, mode: str, field: str | None) -> tuple[list, list[dict]]:
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    with lio.Job([str(src)], output=str(out), field=field, on_error=mode, rejects=str(rej), quiet=True) as job:
        job.write_all(job.records())
    written = [lio.loads_line(line) for line in out.read_bytes().splitlines()]
    assert all(reason is None for _, reason in written)
    return [v for v, _ in written], [json.loads(line) for line in rej.read_bytes().splitlines()]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=_inputs)
def test_any_bytes_never_crash_the_reader_and_every_line_is_accounted_for(tmp_path, data):
    lines = [raw for raw in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if raw.strip()]
    for mode in ("fail", "skip"):
        try:
            out, rejects = _read(tmp_path, data, mode, "text")
        except BadInputError as exc:
            assert mode == "fail" and re.match(r".*in\.jsonl:\d+: ", str(exc)), exc
            continue
        assert all(type(r) is dict and type(r.get("text")) is str for r in out)
        assert len(out) + len(rejects) == len(lines)
        for entry in rejects:  # each holds its line, or the record parsed from it
            assert "record" in entry or "raw" in entry


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=_inputs)
def test_keep_passes_every_json_object_through_unchanged(tmp_path, data):
    out, rejects = _read(tmp_path, data, "keep", None)
    lines = [raw for raw in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if raw.strip()]
    expected = [v for v in map(_oracle, lines) if v is not None]
    assert out == expected
    assert len(out) + len(rejects) == len(lines)
