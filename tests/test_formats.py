"""Inputs in other formats (Parquet, Arrow and `datasets` folders, CSV/TSV, text, .gz/.zst around
any): what each reads as, how bad input is told and kept, and the --format override."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys

import orjson
import pytest
from llmtools import formats
from llmtools import io as lio
from llmtools.errors import BadInputError, UsageError
from tests.conftest import run_cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")


def run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = run_cli(list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def read_all(path: str, **kw) -> list[dict]:
    with lio.Job([path], quiet=True, **kw) as job:
        return list(job.records())


NESTED = [
    {"id": 1, "meta": {"body": "First  body", "lang": "en"}, "tags": ["a", "b"], "turns": [{"role": "user", "n": 1}]},
    {"id": 2, "meta": {"body": "Second\u00a0body", "lang": "de"}, "tags": [], "turns": [{"role": "bot", "n": 2}]},
    {"id": 3, "meta": {"body": "Third body", "lang": None}, "tags": ["c"], "turns": []},
]


def write_parquet(path, records, row_group_size=None, **kw) -> str:
    pq.write_table(pa.Table.from_pylist(records), str(path), row_group_size=row_group_size, **kw)
    return str(path)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("name, fmt", [
    ("a.jsonl", "jsonl"), ("a.json", "jsonl"), ("noext", "jsonl"), ("a.parquet", "parquet"), ("a.PARQUET", "parquet"),
    ("a.csv", "csv"), ("a.tsv", "tsv"), ("a.txt", "txt"), ("a.arrow", "arrow"), ("a.csv.gz", "csv"),
    ("a.parquet.zst", "parquet"), ("a.jsonl.zst", "jsonl"), ("-", "jsonl"),
])
def test_format_by_extension(name, fmt):
    assert formats.detect(name) == fmt
    assert formats.detect(name, "csv") == "csv"


def test_option_choices_match_formats():
    from llmtools import options

    assert options.INPUT_FORMATS == formats.FORMAT_CHOICES


@pytest.mark.parametrize("where, expected", [
    ("a.jsonl:12", ("a.jsonl", 12, {})),
    ("data.parquet:row 7", ("data.parquet", None, {"row": 7})),
    ("data.parquet:row group 2", ("data.parquet", None, {"row_group": 2})),
    ("c:/x/data.arrow:record batch 0", ("c:/x/data.arrow", None, {"record_batch": 0})),
    ("ds/train/data-00000-of-00001.arrow:row 3", ("ds/train/data-00000-of-00001.arrow", None, {"row": 3})),
    ("broken.parquet", ("broken.parquet", None, {})),
])
def test_split_where(where, expected):
    assert lio._split_where(where) == expected


# --------------------------------------------------------------------------- Parquet


def test_parquet_nested_struct_and_list_columns_read_with_field(tmp_path):
    path = write_parquet(tmp_path / "nested.parquet", NESTED)
    code, out, err = run("normalize", "--field", "meta.body", path)
    assert code == 0, err
    got = jsonl(out)
    assert [r["meta"]["body"] for r in got] == ["First body", "Second body", "Third body"]
    # every other column comes through as the nested objects and lists it holds
    assert got[0]["tags"] == ["a", "b"] and got[0]["turns"] == [{"role": "user", "n": 1}]
    assert got[2]["meta"]["lang"] is None and got[1]["tags"] == []


def test_parquet_is_read_row_group_by_row_group_in_bounded_batches(tmp_path, monkeypatch):
    records = [{"text": f"record {i}", "n": i} for i in range(1000)]
    path = write_parquet(tmp_path / "many.parquet", records, row_group_size=100)
    seen = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kw):
        seen.append((tuple(kw["row_groups"]), kw["batch_size"]))
        return real(self, *args, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(formats, "BATCH_BYTES", 512)  # a few rows per batch
    assert read_all(path) == records
    assert [groups for groups, _ in seen] == [(g,) for g in range(10)]
    assert all(size < 100 for _, size in seen)


def test_parquet_values_json_has_no_type_for(tmp_path):
    import datetime
    import decimal

    table = pa.table({
        "text": ["x"],
        "when": pa.array([datetime.datetime(2024, 5, 6, 7, 8, 9)], pa.timestamp("us")),
        "day": pa.array([datetime.date(2024, 5, 6)]),
        "blob": pa.array([b"\x00\xff"], pa.binary()),
        "price": pa.array([decimal.Decimal("12.50")], pa.decimal128(10, 2)),
        "count": pa.array([decimal.Decimal("7")], pa.decimal128(10, 0)),
        "attrs": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
        "inner": pa.array([{"at": datetime.date(2020, 1, 2)}]),
    })
    path = str(tmp_path / "types.parquet")
    pq.write_table(table, path)
    rec = read_all(path)[0]
    assert rec == {"text": "x", "when": "2024-05-06T07:08:09", "day": "2024-05-06", "blob": "AP8=", "price": 12.5,
                   "count": 7, "attrs": {"k": 1}, "inner": {"at": "2020-01-02"}}
    assert orjson.loads(lio.dumps(rec)) == rec


def test_parquet_bad_text_field_names_the_row(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [{"text": "ok"}, {"text": None}, {"text": "fine"}])
    code, out, err = run("normalize", path)
    assert code == 3
    assert err.strip().splitlines()[-1].endswith(f"{path}:row 2: field 'text' is NoneType, not a string")
    rejects = tmp_path / "rej.jsonl"
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), path)
    assert code == 0 and [r["text"] for r in jsonl(out)] == ["ok", "fine"]
    (rej,) = jsonl(rejects.read_text())
    assert rej["source"] == path and rej["row"] == 2 and rej["record"] == {"text": None}


def test_truncated_parquet_is_one_line_exit_3(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", [{"text": f"r{i}"} for i in range(50)])
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    code, out, err = run("normalize", path)
    assert code == 3 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"llmtools: error: {path}: not a readable Parquet file")
    assert "Traceback" not in err
    # skip: the other inputs are still read, and the broken file is named in --rejects
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "still here"}\n')
    rejects = tmp_path / "rej.jsonl"
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), path, str(good))
    assert code == 0 and jsonl(out) == [{"text": "still here"}]
    (rej,) = jsonl(rejects.read_text())
    assert rej["source"] == path and rej["reason"].startswith("not a readable Parquet file")


def _corrupt_row_group(path: str, group: int) -> None:
    """Overwrite the data pages of one row group's column chunk with junk."""
    meta = pq.ParquetFile(path).metadata.row_group(group).column(0)
    start = meta.dictionary_page_offset or meta.data_page_offset
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(b"\xde\xad\xbe\xef" * (meta.total_compressed_size // 4))


def test_corrupt_row_group_is_named_and_skip_keeps_the_others(tmp_path):
    records = [{"text": f"row number {i}"} for i in range(30)]
    path = write_parquet(tmp_path / "c.parquet", records, row_group_size=10, compression="none")
    _corrupt_row_group(path, 1)
    code, out, err = run("normalize", path)
    assert code == 3 and "Traceback" not in err
    assert f"{path}:row group 1: corrupt row group (rows 11-20)" in err
    rejects = tmp_path / "rej.jsonl"
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), path)
    assert code == 0
    assert [r["text"] for r in jsonl(out)] == [f"row number {i}" for i in [*range(10), *range(20, 30)]]
    (rej,) = jsonl(rejects.read_text())
    assert rej["row_group"] == 1 and rej["source"] == path


def test_missing_pyarrow_exits_4_with_the_pip_line(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "d.parquet", [{"text": "x"}])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, out, err = run("normalize", path)
    assert code == 4
    assert "pip install 'llmtools[parquet]'" in err and "Traceback" not in err


def test_parquet_on_stdin_with_format(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [{"text": "from  stdin"}])
    code, out, err = run("dedup", "--format", "parquet", input=open(path, "rb").read())
    assert code == 0, err and jsonl(out) == [{"text": "from  stdin"}]
    code, out, err = run("normalize", "--input-format", "parquet", input=open(path, "rb").read())
    assert code == 0 and jsonl(out) == [{"text": "from stdin"}]


# --------------------------------------------------------------------------- Arrow and datasets folders


def _arrow_table():
    return pa.Table.from_pylist([{"text": "a  b", "label": 1}, {"text": "c", "label": 0}, {"text": "d", "label": 1}])


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_ipc_file_and_stream(tmp_path, kind):
    path = str(tmp_path / "d.arrow")
    table = _arrow_table()
    opener = pa.ipc.new_file if kind == "file" else pa.ipc.new_stream
    with pa.OSFile(path, "wb") as sink, opener(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    assert read_all(path) == table.to_pylist()


def test_datasets_save_to_disk_folder(tmp_path):
    """The layout datasets.Dataset.save_to_disk writes: stream-format shards listed in state.json."""
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(7)]
    shards = [rows[:4], rows[4:]]
    names = [f"data-0000{i}-of-00002.arrow" for i in range(2)]
    for name, shard in zip(names, shards):
        table = pa.Table.from_pylist(shard)
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    # state.json lists the shards in order (here the reverse of name order, to see it is obeyed)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in reversed(names)],
                                                   "_fingerprint": "x", "_split": None}))
    (folder / "dataset_info.json").write_text("{}")
    code, out, err = run("normalize", str(folder))
    assert code == 0, err
    assert jsonl(out) == shards[1] + shards[0]
    # a DatasetDict folder: told to pick a split
    dd = tmp_path / "dd"
    dd.mkdir()
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    code, out, err = run("normalize", str(dd))
    assert code == 2 and "train, test" in err and "dd/train" in err


def test_folder_of_parquet_shards(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_parquet(folder / "train-00001-of-00002.parquet", [{"text": "second"}])
    write_parquet(folder / "train-00000-of-00002.parquet", [{"text": "first"}])
    assert [r["text"] for r in read_all(str(folder))] == ["first", "second"]


def test_a_folder_that_is_no_dataset_is_a_usage_error(tmp_path):
    code, out, err = run("normalize", str(tmp_path))
    assert code == 2 and "not a dataset folder" in err


# --------------------------------------------------------------------------- CSV and TSV


CSV = 'id,text,meta\n1,"Hello, ""world""",{"a": 1}\n2,"two\nlines",[1]\n\n3,plain,\n'


def test_csv_values_stay_strings_unless_typed(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(CSV)
    assert read_all(str(path)) == [
        {"id": "1", "text": 'Hello, "world"', "meta": '{"a": 1}'},
        {"id": "2", "text": "two\nlines", "meta": "[1]"},
        {"id": "3", "text": "plain", "meta": ""},
    ]
    code, out, err = run("normalize", "--csv-types", "id=number,meta=json", str(path))
    assert code == 0, err
    assert jsonl(out) == [{"id": 1, "text": 'Hello, "world"', "meta": {"a": 1}},
                          {"id": 2, "text": "two\nlines", "meta": [1]}, {"id": 3, "text": "plain", "meta": None}]


def test_csv_types_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("n,text\n1.5,a\nabc,b\n")
    code, out, err = run("normalize", "--csv-types", "n=number", str(path))
    assert code == 3 and f"{path}:3: column 'n': 'abc' is not a number" in err
    assert jsonl(out) == [{"n": 1.5, "text": "a"}]
    code, out, err = run("normalize", "--csv-types", "nope=number", str(path))
    assert code == 2 and "no column 'nope'" in err
    code, out, err = run("normalize", "--csv-types", "n=date", str(path))
    assert code == 2 and "unknown type 'date'" in err


def test_csv_wrong_field_count_names_the_line_and_keeps_the_raw_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\nfine,1\n"too",many,fields\nalso fine,0\n')
    code, out, err = run("normalize", str(path))
    assert code == 3
    assert err.strip().splitlines()[-1] == f"llmtools: error: {path}:3: 3 fields, the header has 2"
    rejects = tmp_path / "rej.jsonl"
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), str(path))
    assert code == 0 and [r["text"] for r in jsonl(out)] == ["fine", "also fine"]
    (rej,) = jsonl(rejects.read_text())
    assert rej == {"reason": "3 fields, the header has 2", "source": str(path), "line": 3, "raw": '"too",many,fields'}


def test_csv_broken_quote(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,n\nok,1\n"bad"x,2\nnext,3\n"never closed,4\nlost,5\n')
    code, out, err = run("normalize", str(path))
    assert code == 3 and f"{path}:3: invalid CSV" in err and "Traceback" not in err
    rejects = tmp_path / "rej.jsonl"
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), str(path))
    assert code == 0 and [r["text"] for r in jsonl(out)] == ["ok", "next"]
    rej = jsonl(rejects.read_text())
    assert [r["line"] for r in rej] == [3, 5]
    assert rej[0]["raw"] == '"bad"x,2'
    assert rej[1]["raw"] == '"never closed,4\nlost,5'  # an open quote takes the rest of the file with it


def test_tsv_and_csv_on_stdin(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\nsome  text\tx\n")
    assert read_all(str(path)) == [{"text": "some  text", "label": "x"}]
    code, out, err = run("normalize", "--format", "csv", input=b"text,label\nsome  text,x\n")
    assert code == 0 and jsonl(out) == [{"text": "some text", "label": "x"}]


def test_csv_invalid_utf8_and_bom(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbftext\nok\nbad \xff\n")
    rejects = tmp_path / "rej.jsonl"
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), str(path))
    assert jsonl(out) == [{"text": "ok"}]
    (rej,) = jsonl(rejects.read_text())
    assert rej["reason"] == "invalid UTF-8" and rej["raw"] == "bad \\xff" and rej["line"] == 3


# --------------------------------------------------------------------------- text


def test_txt_lines_and_paragraphs(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("first line\nsecond line\n\n\nthird\nfourth\n")
    assert read_all(str(path)) == [{"text": t} for t in ["first line", "second line", "third", "fourth"]]
    code, out, err = run("normalize", "--txt-paragraphs", "--field", "body", str(path))
    assert code == 0, err
    assert jsonl(out) == [{"body": "first line\nsecond line"}, {"body": "third\nfourth"}]
    rejects = tmp_path / "rej.jsonl"
    path.write_bytes(b"good\nbad \xff\n")
    code, out, err = run("normalize", "--on-error", "skip", "--rejects", str(rejects), str(path))
    assert jsonl(out) == [{"text": "good"}] and jsonl(rejects.read_text())[0]["line"] == 2


# --------------------------------------------------------------------------- compression


def _zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("codec", ["gz", "zst"])
def test_compression_around_every_format(tmp_path, codec):
    pack = gzip.compress if codec == "gz" else _zst
    parquet = write_parquet(tmp_path / "p.parquet", [{"text": "from parquet"}])
    sources = {
        "a.jsonl": b'{"text": "from jsonl"}\n',
        "b.csv": b"text\nfrom csv\n",
        "c.txt": b"from txt\n",
        "d.parquet": open(parquet, "rb").read(),
    }
    paths = []
    for name, data in sources.items():
        path = tmp_path / f"{name}.{codec}"
        path.write_bytes(pack(data))
        paths.append(str(path))
    code, out, err = run("normalize", *paths)
    assert code == 0, err
    assert [r["text"] for r in jsonl(out)] == ["from jsonl", "from csv", "from txt", "from parquet"]
    # and on stdin, recognised by its magic bytes
    code, out, err = run("normalize", "--format", "csv", input=pack(b"text\nvia stdin\n"))
    assert code == 0 and jsonl(out) == [{"text": "via stdin"}]


def test_zst_stream_that_ends_early(tmp_path):
    lines = b"".join(b'{"text": "line %d"}\n' % i for i in range(2000))
    data = _zst(lines)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[: len(data) * 3 // 4])
    code, out, err = run("normalize", str(path))
    assert code == 3 and "Traceback" not in err
    assert re.match(rf"llmtools: error: {re.escape(str(path))}:\d+: corrupt zstd stream: it ends in the middle of a frame",
                    err.strip().splitlines()[-1])
    # CSV in a cut stream: with skip, every row before the cut is saved
    rows = b"text\n" + b"".join(b"row %d\n" % i for i in range(100_000))  # zstd blocks hold 128 KiB: several
    data = _zst(rows)
    path = tmp_path / "cut.csv.zst"
    path.write_bytes(data[: len(data) // 2])
    code, out, err = run("normalize", "--on-error", "skip", str(path))
    got = [r["text"] for r in jsonl(out)]
    assert code == 0 and 1000 < len(got) < 100_000 and got == [f"row {i}" for i in range(len(got))]
    assert "corrupt zstd stream" in err


def test_a_whole_zst_file_reads_across_frames(tmp_path):
    path = tmp_path / "two.jsonl.zst"
    path.write_bytes(_zst(b'{"text": "one"}\n') + _zst(b'{"text": "two"}\n'))
    assert [r["text"] for r in read_all(str(path))] == ["one", "two"]


# --------------------------------------------------------------------------- real pipes


def test_a_real_shell_pipe_reads_parquet(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", NESTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        f"{sys.executable} -m llmtools normalize --field meta.body {path} | {sys.executable} -m llmtools dedup --field meta.body",
        shell=True, capture_output=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in jsonl(proc.stdout.decode())] == [1, 2, 3]


def test_job_read_options_reach_every_format(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,n\na,1\n")
    opts = formats.ReadOptions(csv_types={"n": "number"})
    assert read_all(str(path), read_options=opts) == [{"text": "a", "n": 1}]
    with pytest.raises(UsageError):
        formats.parse_csv_types(["n"])
    with pytest.raises(BadInputError):
        path.write_text("a,a\n1,2\n")
        read_all(str(path), field=None)


# --------------------------------------------------------------------------- writers


ROUND_TRIP = [
    {"id": 1, "text": "Hello, “world” \u00e9\u4e2d\U0001f600", "score": 0.25, "ok": True,
     "meta": {"lang": "en", "tags": ["a", "b"], "deep": {"n": 1}}, "turns": [{"role": "user", "content": "hi"}],
     "none": None},
    {"id": 2, "text": "line one\nline two, with a comma and \"quotes\"", "score": -1.5e-300, "ok": False,
     "meta": {"lang": "de", "tags": [], "deep": {"n": 2}}, "turns": [], "none": None},
    {"id": 9007199254740993, "text": "", "score": 1e300, "ok": True,
     "meta": {"lang": None, "tags": ["c"], "deep": {"n": None}}, "turns": [{"role": "bot", "content": ""}], "none": None},
]


def _jsonl_file(tmp_path, records, name="in.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


def test_jsonl_parquet_jsonl_round_trip_is_identical(tmp_path):
    src = _jsonl_file(tmp_path, ROUND_TRIP)
    out = str(tmp_path / "out.parquet")
    code, stdout, err = run("normalize", "--steps", "none", "--keep-empty", "-o", out, src)
    assert code == 0 and stdout == "", err
    pf = pq.ParquetFile(out)
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    assert pf.schema_arrow.field("meta").type.num_fields == 3  # nested objects are structs, not JSON strings
    code, stdout, err = run("normalize", "--steps", "none", "--keep-empty", out)
    assert code == 0, err
    assert jsonl(stdout) == ROUND_TRIP
    # and key order too: byte-identical JSONL
    assert stdout.encode() == open(src, "rb").read()


def test_parquet_row_groups_and_what_parquet_cannot_carry(tmp_path):
    """The documented rules: a key a record lacks comes back null; a column holding integers and
    fractions comes back as floats; an object no record gives a key is null."""
    records = [{"text": f"t{i}", "n": i if i % 2 else i + 0.5, "empty": {}} for i in range(10)]
    records[3]["extra"] = "only here"
    out = str(tmp_path / "out.parquet")
    code, _, err = run("normalize", "--row-group-size", "4", "-o", out, _jsonl_file(tmp_path, records))
    assert code == 0, err
    pf = pq.ParquetFile(out)
    assert [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)] == [4, 4, 2]
    back = read_all(out)
    assert back[3]["extra"] == "only here" and back[0]["extra"] is None
    assert [r["n"] for r in back] == [float(r["n"]) for r in records] and type(back[1]["n"]) is float
    assert all(r["empty"] is None for r in back)


def test_parquet_writer_names_the_records_that_do_not_fit(tmp_path):
    out = tmp_path / "out.parquet"
    # a new key after the first row group
    records = [{"text": f"t{i}"} for i in range(5)] + [{"text": "late", "new": 1}]
    code, stdout, err = run("normalize", "--row-group-size", "3", "-o", str(out), _jsonl_file(tmp_path, records))
    assert code == 3 and "Traceback" not in err
    assert f"{out}: cannot write records 4-6 as Parquet: new field(s) 'new'" in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic
    # one field with two types
    records = [{"text": "a", "v": 1}, {"text": "b", "v": "one"}]
    code, stdout, err = run("normalize", "-o", str(out), _jsonl_file(tmp_path, records))
    assert code == 3 and f"{out}: cannot write records 1-2 as Parquet" in err and not out.exists()


def test_parquet_writer_with_no_records_and_on_stdout(tmp_path):
    out = tmp_path / "none.parquet"
    code, _, err = run("normalize", "-o", str(out), input=b"")
    assert code == 0 and pq.read_table(str(out)).num_rows == 0
    # stdout stays JSONL whatever the input
    path = write_parquet(tmp_path / "in.parquet", [{"text": "x"}])
    code, stdout, _ = run("normalize", path)
    assert jsonl(stdout) == [{"text": "x"}]


def test_writing_parquet_without_pyarrow_exits_4_before_reading(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "out.parquet"
    code, _, err = run("normalize", "-o", str(out), input=b"not even json\n")
    assert code == 4 and "pip install 'llmtools[parquet]'" in err and not out.exists()


def test_jsonl_csv_jsonl_round_trip(tmp_path):
    strings = [{"id": "1", "text": 'Hello, "world"\nsecond line', "note": ""}, {"id": "2", "text": "tab\there", "note": "x"}]
    src = _jsonl_file(tmp_path, strings)
    for ext in ("csv", "tsv"):
        out = str(tmp_path / f"out.{ext}")
        code, _, err = run("normalize", "--steps", "none", "-o", out, src)
        assert code == 0, err
        code, stdout, err = run("normalize", "--steps", "none", out)
        assert code == 0 and jsonl(stdout) == strings, err
    # other values are written as JSON text and come back with --csv-types
    out = str(tmp_path / "out.csv")
    code, _, err = run("normalize", "--steps", "none", "--keep-empty", "-o", out, _jsonl_file(tmp_path, ROUND_TRIP))
    assert code == 0, err
    header, row1 = open(out, encoding="utf-8").read().split("\n")[:2]
    assert header == "id,text,score,ok,meta,turns,none" and row1.startswith('1,"Hello, “world”')
    code, stdout, _ = run("normalize", "--steps", "none", "--keep-empty", "--csv-types", "id=number,score=number",
                          "--csv-types", "ok=json,meta=json,turns=json,none=json", out)
    assert jsonl(stdout) == ROUND_TRIP
    # untyped, they stay strings; null and a missing key are both an empty cell
    code, stdout, _ = run("normalize", "--steps", "none", "--keep-empty", out)
    first = jsonl(stdout)[0]
    assert first["id"] == "1" and first["ok"] == "true" and first["none"] == "" and first["meta"].startswith('{"lang":"en"')


def test_csv_header_has_every_key_in_first_seen_order(tmp_path):
    records = [{"text": "a", "x": "1"}, {"y": "2", "text": "b"}]
    out = str(tmp_path / "out.csv")
    code, _, err = run("normalize", "-o", out, _jsonl_file(tmp_path, records))
    assert code == 0, err
    assert open(out).read() == "text,x,y\na,1,\nb,,2\n"


# --------------------------------------------------------------------------- memory


def write_big_parquet(path: str, total_bytes: int, text_bytes: int = 2048, rows_per_group: int = 16384) -> int:
    """A Parquet file of about `total_bytes` of incompressible text (written uncompressed, so the
    file is that big), built row group by row group; returns its row count."""
    import base64

    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("meta", pa.struct([("n", pa.int64())]))])
    blob = base64.b64encode(os.urandom(rows_per_group * text_bytes)).decode()  # twice what one group needs
    n = 0
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        while n * text_bytes < total_bytes:
            shift = (n // rows_per_group * 7919) % (len(blob) // 2)
            texts = [blob[shift + i * (text_bytes // 2): shift + i * (text_bytes // 2) + text_bytes] for i in range(rows_per_group)]
            ids = pa.array(range(n, n + rows_per_group), pa.int64())
            writer.write_table(pa.table({"id": ids, "text": texts, "meta": pa.StructArray.from_arrays([ids], names=["n"])},
                                        schema=schema))
            n += rows_per_group
    return n


@pytest.mark.slow
def test_a_2gb_parquet_file_streams_through_normalize_in_bounded_memory(tmp_path):
    path = str(tmp_path / "big.parquet")
    rows = write_big_parquet(path, 2 << 30)
    assert os.path.getsize(path) > 2 << 30
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", PEAK_RSS, "normalize", "--field", "text", "-q", path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    count = 0
    last = b""
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        count += 1
        last = line
    err = proc.stderr.read().decode()
    assert proc.wait() == 0, err
    assert count == rows and orjson.loads(last)["meta"] == {"n": rows - 1}
    peak_mb = int(re.search(r"peak-rss-kb=(\d+)", err)[1]) / 1024
    assert peak_mb < 500, f"peak RSS {peak_mb:.0f} MB"


# The child's own peak (VmHWM is per address space, so it starts afresh at exec; ru_maxrss would
# count the forking parent's size too), written to stderr as llmtools exits.
PEAK_RSS = """
import atexit, re, sys
def peak():
    status = open("/proc/self/status").read()
    sys.stderr.write("peak-rss-kb=%s\\n" % re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
atexit.register(peak)
from llmtools.cli import main
main(sys.argv[1:])
"""


def test_side_files_in_other_formats(tmp_path):
    """dedup --against, finetune --eval-file and watch --reference read any format too."""
    text = "the kettle arrived broken and nobody answered my three emails about a refund for it"
    ref = write_parquet(tmp_path / "heldout.parquet", [{"id": "h1", "text": text}])
    data = tmp_path / "train.csv"
    data.write_text(f"id,text\nt1,{text}\nt2,a completely different ticket about a missing bike lock part\n")
    res = run_cli(["dedup", "--against", ref, str(data)])
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in res.records()] == ["t2"]
    assert list(lio.read_jsonl(ref)) == [{"id": "h1", "text": text}]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1\n")
    with pytest.raises(BadInputError, match=r"bad.csv:2: 1 fields, the header has 2"):
        list(lio.read_jsonl(str(bad)))


def test_spark_engine_takes_jsonl_only(tmp_path):
    """Spark reads lines of text: a Parquet input is a usage error there, not a stream of bad lines."""
    from llmtools.engines import EngineConfig
    from llmtools.engines.spark import SparkRun

    path = write_parquet(tmp_path / "d.parquet", [{"text": "x"}])
    run = SparkRun(EngineConfig.__new__(EngineConfig), "normalize")
    with pytest.raises(UsageError, match="--engine spark reads JSONL inputs; .*d.parquet is parquet"):
        run.resolve([path])
    ok = tmp_path / "d.jsonl"
    ok.write_text('{"text": "x"}\n')
    assert run.resolve([str(ok)]) == [(str(ok), "file://" + str(ok))]
