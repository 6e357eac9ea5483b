"""The JSONL core: field paths, streaming reads with the bad-line policy, rejects, atomic output."""

from __future__ import annotations

import gzip
import json
import os
import re
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtools import io as lio
from llmtools.errors import BadInputError, UsageError


def test_field_paths_nested_lists_and_escaped_dots():
    rec = {"a": {"b": [{"c": "x"}, {"c": "y"}]}, "d.e": 1}
    assert lio.get_field(rec, "a.b.1.c") == "y"
    assert lio.get_field(rec, "a.b.-1.c") == "y"
    assert lio.get_field(rec, "a.b.5.c", "missing") == "missing"
    assert lio.get_field(rec, r"d\.e") == 1
    assert lio.get_field(rec, "a.zz") is None
    lio.set_field(rec, "a.b.0.c", "z")
    lio.set_field(rec, "new.deep.key", 3)
    assert rec["a"]["b"][0]["c"] == "z" and rec["new"] == {"deep": {"key": 3}}
    assert lio.get_text({"t": 3}, "t") is None and lio.get_text({"t": "s"}, "t") == "s"


def test_check_text_reasons():
    assert lio.check_text({"text": "x"}, "text") is None
    assert lio.check_text({}, "text") == "missing field 'text'"
    assert "int, not a string" in lio.check_text({"text": 3}, "text")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_invalid_json(constant):
    # Python's parser (the fallback for big integers) takes them; they are not JSON, orjson
    # refuses them, and a NaN read used to be written back as null.
    for line in (b'{"text": "x", "v": ' + constant + b"}", b'{"n": 123456789012345678901234567890, "v": ' + constant + b"}"):
        value, reason = lio.loads_line(line)
        assert value is None and reason.startswith("invalid JSON")
    assert lio.loads_line(b'{"v": "NaN", "w": 1e308}')[0] == {"v": "NaN", "w": 1e308}


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"123456789012345678901234567890e300"])
def test_numbers_beyond_a_double_are_invalid_json(number):
    # orjson refuses them; the stdlib parser made them infinity, written back as null.
    for line in (b'{"v": ' + number + b"}", b'{"n": 123456789012345678901234567890, "v": ' + number + b"}"):
        value, reason = lio.loads_line(line)
        assert value is None and reason.startswith("invalid JSON"), (line, value)
    assert lio.loads_line(b'{"n": 123456789012345678901234567890, "v": 1e-400, "w": 2.5}')[0]["v"] == 0.0


def test_big_ints_round_trip():
    value, reason = lio.loads_line(b'{"n": 123456789012345678901234567890}')
    assert reason is None and value["n"] == 123456789012345678901234567890
    assert lio.dumps(value) == b'{"n":123456789012345678901234567890}'


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


BAD = b'{"text": "good 1"}\nnot json\n[1,2]\n{"text": 5}\n{"other": "x"}\n{"text": "bad \xff utf8"}\n\n{"text": "good 2"}\n'


def test_fail_names_source_and_line(tmp_path):
    path = _write(tmp_path, "in.jsonl", BAD)
    with lio.Job([path], output=str(tmp_path / "out.jsonl"), quiet=True) as job:
        it = job.records()
        assert next(it)["text"] == "good 1"
        with pytest.raises(BadInputError) as err:
            next(it)
    assert str(err.value).startswith(f"{path}:2: invalid JSON")


def test_skip_writes_every_bad_line_to_rejects(tmp_path):
    path = _write(tmp_path, "in.jsonl", BAD)
    rejects = str(tmp_path / "rej.jsonl")
    out = str(tmp_path / "out.jsonl")
    with lio.Job([path], output=out, on_error="skip", rejects=rejects, quiet=True) as job:
        for rec in job.records():
            job.write(rec)
    assert [r["text"] for r in map(orjson.loads, open(out, "rb"))] == ["good 1", "good 2"]
    rej = [orjson.loads(line) for line in open(rejects, "rb")]
    assert [r["line"] for r in rej] == [2, 3, 4, 5, 6]
    assert rej[0]["raw"] == "not json" and rej[0]["reason"].startswith("invalid JSON")
    assert rej[1]["record"] == [1, 2] or rej[1]["raw"] == "[1,2]"
    assert rej[2]["record"] == {"text": 5} and "int, not a string" in rej[2]["reason"]
    assert rej[3]["reason"] == "missing field 'text'"
    assert rej[4]["reason"].startswith("invalid UTF-8") and "\\xff" in rej[4]["raw"]
    assert all(r["source"] == path for r in rej)


@pytest.mark.parametrize("mode", ["skip", "keep"])
def test_rejects_hold_every_line_that_is_not_an_object(tmp_path, mode):
    # `null` used to leave an entry with neither `record` nor `raw`: the line was lost.
    path = _write(tmp_path, "in.jsonl", b'{"text": "a"}\nnull\n[1, 2]\n"s"\n42\nfalse\n')
    rejects = tmp_path / "rej.jsonl"
    with lio.Job([path], on_error=mode, rejects=str(rejects), quiet=True) as job:
        assert list(job.records()) == [{"text": "a"}]
    entries = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    originals = [e["record"] if "record" in e else orjson.loads(e["raw"]) for e in entries]
    assert originals == [None, [1, 2], "s", 42, False] and [e["line"] for e in entries] == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("gz", [False, True])
def test_a_byte_order_mark_starting_a_source_is_ignored(tmp_path, gz):
    data = b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n'
    path = _write(tmp_path, "bom.jsonl" + (".gz" if gz else ""), gzip.compress(data) if gz else data)
    with lio.Job([path, path], quiet=True) as job:
        assert [r["text"] for r in job.records()] == ["a", "b", "a", "b"]
    assert list(lio.iter_lines(path))[0] == (1, b'{"text": "a"}\r\n')
    # Only at the start: elsewhere it is a bad line, as any stray bytes are.
    path = _write(tmp_path, "mid.jsonl", b'{"text": "a"}\n\xef\xbb\xbf{"text": "b"}\n')
    with lio.Job([path], quiet=True) as job, pytest.raises(BadInputError, match=r"mid.jsonl:2: invalid JSON"):
        list(job.records())


def test_keep_passes_objects_through_unchanged(tmp_path):
    path = _write(tmp_path, "in.jsonl", BAD)
    with lio.Job([path], on_error="keep", quiet=True) as job:
        seen = list(job.records())
    assert seen == [{"text": "good 1"}, {"text": 5}, {"other": "x"}, {"text": "good 2"}]


def test_gzip_and_multiple_inputs(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(b'{"text": "from gz"}\n')
    plain = _write(tmp_path, "b.jsonl", b'{"text": "plain"}\n')
    with lio.Job([str(gz), plain], quiet=True) as job:
        assert [r["text"] for r in job.records()] == ["from gz", "plain"]


def test_corrupt_gzip_is_bad_input(tmp_path):
    path = _write(tmp_path, "x.jsonl.gz", b"\x1f\x8b\x08\x00garbage")
    broken = r"(corrupt gzip stream|compressed stream ends early or is corrupt)"  # formats._decompress_error
    with pytest.raises(BadInputError, match=rf"x.jsonl.gz:1: {broken}"):
        list(lio.iter_lines(path))
    data = gzip.compress(b"".join(b'{"text": "line %d"}\n' % i for i in range(2000)))
    path = _write(tmp_path, "cut.jsonl.gz", data[: len(data) // 2])
    lines = []
    with pytest.raises(BadInputError) as err:
        lines.extend(lio.iter_lines(path))
    assert lines and re.match(rf"{re.escape(path)}:{len(lines) + 1}: {broken}", str(err.value)), str(err.value)


def test_missing_file_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        list(lio.iter_lines(str(tmp_path / "nope.jsonl")))


def test_atomic_output_absent_after_failure(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with lio.Job([_write(tmp_path, "in.jsonl", b'{"text":"a"}\n')], output=str(out), quiet=True) as job:
            for rec in job.records():
                job.write(rec)
            raise RuntimeError("boom")
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_output_to_a_device_or_pipe_is_written_in_place(tmp_path):
    """-o /dev/null or -o FIFO writes to it: renaming a temp file over it would replace the
    device (as root, /dev/null itself) or the pipe with a plain file."""
    import stat
    import threading

    src = _write(tmp_path, "in.jsonl", b'{"text":"a"}\n{"text":"b"}\n')
    # A named pipe stands in for /dev/null: a regression must not break the machine's device.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with lio.Job([src], output=str(fifo), quiet=True) as job:
        for rec in job.records():
            job.write(rec)
    reader.join(10)
    assert got == [b'{"text":"a"}\n{"text":"b"}\n']
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_rejects_survive_a_failed_run(tmp_path):
    rejects = tmp_path / "rej.jsonl"
    with pytest.raises(RuntimeError):
        with lio.Job([_write(tmp_path, "in.jsonl", b'{"text":"a"}\n')], rejects=str(rejects), quiet=True) as job:
            for rec in job.records():
                job.reject(rec, "filtered", extra_info=1)
            raise RuntimeError("boom")
    saved = orjson.loads(rejects.read_bytes())
    assert saved == {"reason": "filtered", "source": saved["source"], "line": 1, "extra_info": 1, "record": {"text": "a"}}


def test_validate_hook_replaces_field_check(tmp_path):
    path = _write(tmp_path, "in.jsonl", b'{"prompt": "p", "completion": "c"}\n{"prompt": "p"}\n')
    validate = lambda r: None if "completion" in r else "missing completion"  # noqa: E731
    with lio.Job([path], field=None, on_error="skip", validate=validate, quiet=True) as job:
        assert len(list(job.records())) == 1
    assert job.counts["bad"] == 1


def test_big_ints_survive_job_records_in_short_and_long_lines(tmp_path):
    # Job.records() clears most lines by looking at the parsed floats instead of counting
    # digits; an integer beyond 64 bits must come through exact either way, wherever it sits.
    pad = "x" * 2000
    big, neg = 123456789012345678901234567890, -(2**70)
    rows = [
        {"text": "short", "n": big},
        {"text": pad, "n": big},
        {"text": pad, "deep": {"list": [1, 2.5, {"n": neg}]}},
        {"text": pad, "u64": 2**64 - 1, "i64": -(2**63), "f": 1e300, "digits": "1234567890123456789012"},
        {"text": pad, "many": list(range(100)) + [big]},
        {"text": "s", "m": {"n": big}},
        {"text": "s", "l": [neg]},
    ]
    path = _write(tmp_path, "big.jsonl", b"".join(lio.dumps(r) + b"\n" for r in rows))
    with lio.Job([path]) as job:
        assert list(job.records()) == rows


@pytest.mark.parametrize("value, expected", [
    ({"a": 1, "b": "x", "c": 0.5, "d": None, "e": [1.5, -2.0e18]}, False),
    ({"a": 1.8446744073709552e19}, True),
    ({"a": {"b": [{"c": -9.3e18}]}}, True),  # deeper than one level: the digit count decides
    ({"a": {"b": -9.3e18}}, True),
    ({"a": {"b": [1]}}, True),
    ({"a": {"b": 1.5}, "c": [0.5, 2]}, False),
    ({"a": list(range(65))}, True),  # too many values to look at: the digit count decides
])
def test_may_hold_rounded_int(value, expected):
    assert lio._may_hold_rounded_int(value) is expected
    if lio._SPEEDUPS is not None:  # the C version the reader uses when built
        assert lio._SPEEDUPS.may_hold_rounded_int(value) is expected


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
              st.sampled_from([9.2e18, -9.2e18, 9.3e18, -9.3e18, 1.8e19, 1e300]), st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=70), st.dictionaries(st.text(max_size=3), inner, max_size=70)),
    max_leaves=200,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=3), _json_values, max_size=8))
def test_may_hold_rounded_int_in_c_equals_python(value):
    if lio._SPEEDUPS is None:
        pytest.skip("llmtools._speedups is not loaded (not built, or LLMTOOLS_PURE_PYTHON=1)")
    assert lio._SPEEDUPS.may_hold_rounded_int(value) is lio._may_hold_rounded_int(value)


@given(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
))
@pytest.mark.slow
@settings(max_examples=500, deadline=None)
def test_orjson_agrees_with_json_except_on_big_ints(literal):
    # Why Job.records() may skip the stdlib re-read for a record without a float of 2**63 or
    # more: wherever orjson parses a number, it parses it as json does, except integers
    # beyond 64 bits, which it turns into such floats.
    try:
        fast = orjson.loads(literal)
    except orjson.JSONDecodeError:
        return  # such lines take the careful path anyway
    exact = json.loads(literal)
    if isinstance(fast, float) and not -lio._ROUNDED < fast < lio._ROUNDED:
        return
    assert type(fast) is type(exact) and repr(fast) == repr(exact)


def test_write_all_is_write_in_a_loop(tmp_path, capsysbinary):
    rows = [{"text": "a", "n": 2**70}, {"text": "é"}, {"text": "b", "f": 0.1}]
    with lio.Job(["-"], output=str(tmp_path / "one.jsonl")) as job:
        for r in rows:
            job.write(r)
    with lio.Job(["-"], output=str(tmp_path / "all.jsonl")) as job2:
        job2.write_all(iter(rows))
    assert (tmp_path / "all.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert job2.counts["out"] == job.counts["out"] == 3 and job2._writer.count == 3


@pytest.mark.parametrize("path", ["a", "a.b", "a.b.c", "a.0", "a.-1", "a.0.b", "a.5", "x", "a\\.b", "n.0.0"])
def test_field_getter_equals_get_field(path):
    records = [
        {"a": {"b": {"c": 3}}}, {"a": [{"b": 1}, 2]}, {"a": "text"}, {"a.b": 7}, {"n": [[5]]}, {"a": None},
        {"a": {"b": [1, 2]}}, {},
    ]
    get = lio.field_getter(path)
    for rec in records:
        assert get(rec) == lio.get_field(rec, path), (path, rec)
    assert lio.field_getter(None)({"a": 1}) is None
    assert lio.top_key(path) == (lio.split_path(path)[0] if len(lio.split_path(path)) == 1 else None)


def test_job_reads_a_live_stream_of_lines_with_idle_markers(tmp_path):
    lines = [b'{"a": 1}\n', None, b"\n", b"not json\n", b"[1]\n", None, b'{"a": 2}\n']
    rejects = tmp_path / "rejects.jsonl"
    job = lio.Job(["live.jsonl"], field=None, on_error="skip", rejects=str(rejects), quiet=True, lines=iter(lines))
    with job:
        got = list(job.records())
    assert got == [{"a": 1}, None, None, {"a": 2}]
    assert job.counts["in"] == 4 and job.counts["bad"] == 2
    assert [json.loads(x)["line"] for x in rejects.read_text().splitlines()] == [3, 4]  # None is no line
    with pytest.raises(ValueError):
        lio.Job(["a", "b"], lines=iter(()))


def test_job_summary_rows(capsys):
    job = lio.Job(["-"], verbose=True, command="llmtools x")
    job.counts.update({"in": 3, "out": 2, "bad": 1})
    job.reasons["empty"] = 1
    job.summary({"changed": 2})
    job.summary({"events": 5}, title="done", records=False)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "llmtools x: summary: records in=3, records out=2, bad lines=1, dropped: empty=1, changed=2"
    assert err[1] == "llmtools x: done: events=5, bad lines=1"


# --------------------------------------------------------------------------- nesting


def _nested(depth: int, big_int: bool = False) -> bytes:
    """A record whose `d` holds lists `depth` levels deep (the record itself is one more)."""
    extra = b'"n": 123456789012345678901234567890, ' if big_int else b""
    return b'{"text": "x", ' + extra + b'"d": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("big_int", [False, True], ids=["orjson", "stdlib"])
def test_nesting_beyond_orjson_limit_is_a_bad_line_not_a_crash(big_int):
    # 1024 levels in all is what orjson reads; both parsers behind loads_line agree on it
    # (the stdlib one, for exact big integers, recurses, and used to raise RecursionError).
    for depth in (1024, 5000, 100_000):
        assert lio.loads_line(_nested(depth, big_int)) == (None, lio.TOO_DEEP)
    value, reason = lio.loads_line(_nested(1022, big_int))
    assert reason is None and value["text"] == "x"


@pytest.mark.parametrize("depth", [300, 1022])
def test_records_orjson_reads_but_cannot_write_round_trip(depth):
    # orjson writes 255 levels at most; deeper records go to the stdlib encoder, with room.
    raw = _nested(depth, big_int=True)
    value, reason = lio.loads_line(raw)
    assert reason is None
    limit = sys.getrecursionlimit()
    assert lio.dumps(value) == raw.replace(b": ", b":").replace(b", ", b",")
    assert lio.dumps_line(value).endswith(b"]}\n")
    assert sys.getrecursionlimit() == limit  # the room is given back


def _deep_input(tmp_path):
    return _write(tmp_path, "deep.jsonl", b'{"text": "a"}\n' + _nested(5000) + b'\n{"text": "b"}\n' + _nested(1000) + b"\n")


def test_deep_line_fails_with_source_and_line(tmp_path):
    path = _deep_input(tmp_path)
    with lio.Job([path], output=str(tmp_path / "out.jsonl"), quiet=True) as job:
        with pytest.raises(BadInputError) as err:
            list(job.records())
    assert str(err.value) == f"{path}:2: JSON nested too deeply"


@pytest.mark.parametrize("mode", ["skip", "keep"])
def test_deep_line_is_skipped_and_kept_raw_in_rejects(tmp_path, mode):
    path, out, rej = _deep_input(tmp_path), tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    with lio.Job([path], output=str(out), on_error=mode, rejects=str(rej), quiet=True) as job:
        job.write_all(job.records())
    # Under keep too: a line that cannot be parsed cannot be passed through (as for invalid JSON).
    got = [orjson.loads(line) if len(line) < 100 else line for line in out.read_bytes().splitlines()]
    assert got[:2] == [{"text": "a"}, {"text": "b"}] and len(got) == 3
    assert got[2] == _nested(1000).replace(b": ", b":").replace(b", ", b",")  # within the limit: unchanged
    (entry,) = [json.loads(line) for line in rej.read_text().splitlines()]
    assert entry["reason"] == lio.TOO_DEEP and (entry["source"], entry["line"]) == (path, 2)
    assert entry["raw"].encode() == _nested(5000)


def test_deep_line_from_a_shell_pipe_exits_3_naming_stdin(cli):
    # The reproduction, through the real entry point.
    line = '{"text": "x", "d": ' + "[" * 5000 + "]" * 5000 + "}\n"
    res = cli(["normalize"], input=line)
    assert res.exit_code == 3
    assert res.stderr.strip() == "llmtools: error: <stdin>:1: JSON nested too deeply"
    assert "Traceback" not in res.stderr and res.stdout == ""
