"""Records in the formats users have: Parquet, Arrow IPC (and `datasets` folders), CSV/TSV, text.

io.Job reads JSONL itself (its fast path); every other format comes through `read()` here as
(location, record, reason, raw) items: `location` is a line number (CSV, text) or "row N" /
"row group N" / "record batch N" (Parquet, Arrow), and a bad item has a `reason` and, where there
is one, the raw text to keep in --rejects. Formats are chosen by extension (`detect`) unless
`--format` says otherwise, and `.gz`/`.zst` may wrap any of them. pyarrow is imported only when a
Parquet or Arrow file is read or written; the `datasets` package is never used.
"""

from __future__ import annotations

import io as _stdio
import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from llmtools.errors import BadInputError, MissingDependency, UsageError

# Input formats (`--format`); `auto` picks by extension.
FORMATS = ("jsonl", "parquet", "arrow", "csv", "tsv", "txt")
FORMAT_CHOICES = ("auto",) + FORMATS
# Output formats, chosen by -o's extension; stdout is always JSONL.
OUTPUT_FORMATS = ("jsonl", "parquet", "csv", "tsv")
CSV_TYPES = ("string", "number", "json")

_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".txt": "txt", ".text": "txt",
}
_COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
_GZIP_MAGIC, _ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"

PYARROW_HINT = "pip install 'llmtools[parquet]'"

Item = tuple[Any, Any, "str | None", "bytes | None"]  # (location, record, reason, raw)


class Rows:
    """A run of good rows from a table reader (Parquet, Arrow), numbered from `first` (1 is the
    file's first row): yielded instead of one Item per row, which costs more than the row's
    own conversion."""

    __slots__ = ("first", "records", "file")

    def __init__(self, first: int, records: list[dict], file: str | None = None):
        self.first = first
        self.records = records
        self.file = file  # a file of a dataset folder


@dataclass
class ReadOptions:
    """How non-JSONL inputs are read (the --format, --csv-types and --txt-paragraphs options)."""

    format: str = "auto"
    csv_types: dict[str, str] = field(default_factory=dict)
    txt_paragraphs: bool = False
    text_field: str = "text"  # where a .txt line goes


def parse_csv_types(specs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`score=number,meta=json` (repeatable) -> {"score": "number", "meta": "json"}."""
    out: dict[str, str] = {}
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, kind = item.rpartition("=")
            kind = kind.strip().lower()
            if not sep or not name.strip():
                raise UsageError(f"--csv-types wants COLUMN=TYPE, got {item!r}")
            if kind not in CSV_TYPES:
                raise UsageError(f"--csv-types {name}: unknown type {kind!r} (choose from {', '.join(CSV_TYPES)})")
            out[name.strip()] = kind
    return out


# --------------------------------------------------------------------------- detection


def split_compression(path: str) -> tuple[str, str | None]:
    """(path without a compression suffix, "gz" | "zst" | None)."""
    root, ext = os.path.splitext(path)
    codec = _COMPRESSIONS.get(ext.lower())
    return (root, codec) if codec else (path, None)


def detect(path: str, override: str = "auto") -> str:
    """The format of input `path`: `override` unless it is auto, else by extension (a folder is
    an Arrow dataset folder, or a folder of Parquet or Arrow files); JSONL when nothing says."""
    if override and override != "auto":
        return override
    if path == "-":
        return "jsonl"
    if os.path.isdir(path):
        return "parquet" if _folder_files(path)[0] == "parquet" else "arrow"
    base, _ = split_compression(path)
    return _EXTENSIONS.get(os.path.splitext(base)[1].lower(), "jsonl")


def output_format(path: str | None) -> str:
    """The format `-o path` is written in: by extension; JSONL for stdout and anything else."""
    if not path or path == "-":
        return "jsonl"
    fmt = _EXTENSIONS.get(os.path.splitext(path)[1].lower(), "jsonl")
    return fmt if fmt in OUTPUT_FORMATS else "jsonl"


# --------------------------------------------------------------------------- bytes in


def open_binary(path: str) -> IO[bytes]:
    """FILE or `-` opened for binary reading, `.gz`/`.zst` (by suffix, or by magic bytes on
    stdin) decompressed as it is read."""
    if path == "-":
        stream: Any = sys.stdin.buffer
        head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
        if head[:2] == _GZIP_MAGIC:
            import gzip

            return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
        if head == _ZSTD_MAGIC:
            return zstd_reader(stream)
        return stream
    codec = split_compression(path)[1]
    try:
        if codec == "gz":
            import gzip

            return gzip.open(path, "rb")  # type: ignore[return-value]
        fh = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    return zstd_reader(fh) if codec == "zst" else fh


def zstd_reader(raw: IO[bytes]) -> IO[bytes]:
    """A buffered reader of the zstd stream in `raw` that raises EOFError when it ends early."""
    try:
        import zstandard
    except ImportError as exc:
        raise MissingDependency(f"reading .zst needs the 'zstandard' package ({exc}). Install it with: pip install zstandard") from None
    return _stdio.BufferedReader(_ZstdStream(zstandard, raw), buffer_size=1 << 16)  # type: ignore[return-value]


class _ZstdStream(_stdio.RawIOBase):
    """The decompressed bytes of a zstd stream, noticing one cut short (zstandard's own stream
    reader returns what it has and stops, silently). Frames may follow one another."""

    def __init__(self, zstandard: Any, raw: IO[bytes]):
        super().__init__()
        self._z = zstandard
        self._raw = raw
        self._dec = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                if self._in_frame:
                    raise EOFError(_ZSTD_TAG + "it ends in the middle of a frame (truncated?)")
                return 0
            self._feed(chunk)
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, chunk: bytes) -> None:
        while chunk:
            self._in_frame = True
            try:
                self._pending += self._dec.decompress(chunk)
            except self._z.ZstdError as exc:
                raise EOFError(f"{_ZSTD_TAG}{exc}") from None
            if not self._dec.eof:
                return
            chunk = self._dec.unused_data  # the next frame, if any
            self._dec = self._z.ZstdDecompressor().decompressobj()
            self._in_frame = False

    def close(self) -> None:
        if not self.closed and self._raw is not sys.stdin.buffer:
            self._raw.close()
        super().close()


def _seekable_copy(path: str) -> Any:
    """A seekable file with the bytes of `path` (stdin or a compressed file, spooled to a temp
    file: Parquet and Arrow files are read from their end first), or the path itself."""
    if path != "-" and split_compression(path)[1] is None:
        return path
    import shutil
    import tempfile

    tmp = tempfile.TemporaryFile(prefix="llmtools-")
    src = open_binary(path)
    try:
        shutil.copyfileobj(src, tmp, 1 << 20)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    tmp.seek(0)
    return tmp


def _decompress_error(exc: BaseException) -> str | None:
    """The reason when `exc` is a broken .gz/.zst stream, else None."""
    if isinstance(exc, EOFError) and str(exc).startswith(_ZSTD_TAG):
        return f"corrupt zstd stream: {str(exc)[len(_ZSTD_TAG):]}"
    if isinstance(exc, EOFError) or type(exc).__name__ == "BadGzipFile" or "gzip" in str(exc).lower():
        return f"corrupt gzip stream: {exc}"
    return None


_ZSTD_TAG = "zstd: "  # how _ZstdStream's errors begin, so they are told apart from gzip's


# --------------------------------------------------------------------------- readers


def read(path: str, fmt: str, opts: ReadOptions) -> Iterator[Any]:
    """The items of `path` in `fmt` (not jsonl: io.Job reads that itself): Items, and Rows
    from the table formats."""
    reader = _READERS[fmt]
    try:
        yield from reader(path, opts)
    except (OSError, EOFError) as exc:
        reason = _decompress_error(exc)
        if reason is None:
            raise
        yield None, None, reason, None


def _lines(path: str) -> Iterator[bytes]:
    fh = open_binary(path)
    try:
        yield from fh
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def _read_txt(path: str, opts: ReadOptions) -> Iterator[Item]:
    """One record per non-blank line, or per blank-line-separated paragraph."""
    key = opts.text_field
    para: list[str] = []  # the paragraph's lines, decoded
    raws: list[bytes] = []  # and as read: a line that is not UTF-8 is only here
    start = 0
    lineno = 0
    for lineno, raw in enumerate(_lines(path), 1):
        blank = raw.isspace() or not raw
        if not opts.txt_paragraphs:
            if blank:
                continue
            try:
                yield lineno, _text_record(key, raw.rstrip(b"\r\n").decode("utf-8")), None, None
            except UnicodeDecodeError as exc:
                yield lineno, None, f"invalid UTF-8 at byte {exc.start}", raw
            continue
        if blank:
            if raws:
                yield _paragraph(key, start, para, raws)
            para, raws = [], []
            continue
        if not raws:
            start = lineno
        raws.append(raw)
        try:
            para.append(raw.rstrip(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError:
            pass
    if raws:
        yield _paragraph(key, start, para, raws)


def _paragraph(key: str, start: int, para: list[str], raws: list[bytes]) -> Item:
    if len(para) != len(raws):
        return start, None, "invalid UTF-8 in the paragraph", b"".join(raws)
    return start, _text_record(key, "\n".join(para)), None, None


def _text_record(key: str, text: str) -> dict:
    if "." not in key:
        return {key: text}
    from llmtools.io import set_field

    rec: dict = {}
    set_field(rec, key, text)
    return rec


class _TrackedLines:
    """The lines of a binary stream, decoded for csv.reader, keeping the raw lines of the record
    being parsed (for --rejects) and the line number."""

    def __init__(self, lines: Iterator[bytes]):
        self._lines = lines
        self.lineno = 0
        self.raw: list[bytes] = []
        self.bad_utf8 = False

    def __iter__(self) -> "_TrackedLines":
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        self.lineno += 1
        self.raw.append(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_utf8 = True
            return raw.decode("utf-8", errors="replace")

    def start(self) -> None:
        self.raw = []
        self.bad_utf8 = False


def _read_tsv(path: str, opts: ReadOptions) -> Iterator[Item]:
    return _read_csv(path, opts, delimiter="\t")


def _read_csv(path: str, opts: ReadOptions, delimiter: str = ",") -> Iterator[Item]:
    """Rows as objects keyed by the header; values are strings unless --csv-types says."""
    import csv

    csv.field_size_limit(2**31 - 1)  # a training text can be longer than the 128 KiB default
    lines = _TrackedLines(_lines(path))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    name = "<stdin>" if path == "-" else path
    while True:
        lines.start()
        first = lines.lineno + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if header is None:
                raise BadInputError(f"invalid CSV header: {exc}", where=f"{name}:{first}") from None
            yield first, None, f"invalid CSV: {exc}", b"".join(lines.raw)
            continue
        if lines.bad_utf8:
            if header is None:
                raise BadInputError("invalid UTF-8 in the CSV header", where=f"{name}:{first}")
            yield first, None, "invalid UTF-8", b"".join(lines.raw)
            continue
        if not row:  # a blank line
            continue
        if header is None:
            header = _header(row, name, first, opts.csv_types)
            convert = _csv_converters(header, opts.csv_types)
            continue
        if len(row) != len(header):
            yield first, None, f"{len(row)} fields, the header has {len(header)}", b"".join(lines.raw)
            continue
        record = dict(zip(header, row))
        if convert:
            reason = _convert_row(record, convert)
            if reason is not None:
                yield first, None, reason, b"".join(lines.raw)
                continue
        yield first, record, None, None


def _header(row: list[str], name: str, lineno: int, types: dict[str, str]) -> list[str]:
    if row and row[0].startswith("\ufeff"):
        row[0] = row[0][1:]
    seen: set[str] = set()
    for col in row:
        if col in seen:
            raise BadInputError(f"the CSV header names column {col!r} twice", where=f"{name}:{lineno}")
        seen.add(col)
    missing = [c for c in types if c not in seen]
    if missing:
        raise UsageError(f"--csv-types: {name} has no column {', '.join(map(repr, missing))} (columns: {', '.join(row)})")
    return row


def _csv_converters(header: list[str], types: dict[str, str]) -> list[tuple[str, str, Callable[[str], Any]]]:
    import orjson

    def number(text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("not a finite number") from None
            return value

    parse = {"number": number, "json": orjson.loads}
    return [(col, kind, parse[kind]) for col, kind in types.items() if kind != "string"]


def _convert_row(record: dict, convert: list[tuple[str, str, Callable[[str], Any]]]) -> str | None:
    for col, kind, parse in convert:
        text = record[col]
        if text == "":
            record[col] = None
            continue
        try:
            record[col] = parse(text.strip() if kind == "number" else text)
        except ValueError:
            shown = text if len(text) <= 40 else text[:37] + "..."
            return f"column '{col}': {shown!r} is not {'a number' if kind == 'number' else 'JSON'}"
    return None


# --------------------------------------------------------------------------- Arrow and Parquet

# About this much Arrow data is turned into Python objects at a time, so a row group of long
# texts does not become gigabytes of str objects at once.
BATCH_BYTES = 16 << 20
MAX_BATCH_ROWS = 8192


def require_pyarrow(purpose: str) -> Any:
    try:
        import pyarrow

        return pyarrow
    except ImportError as exc:
        raise MissingDependency(f"{purpose} needs pyarrow ({exc}). Install it with: {PYARROW_HINT}") from None


def _read_parquet(path: str, opts: ReadOptions) -> Iterator[Item]:
    """Row group by row group, a few MB of rows at a time: memory stays bounded on any file size."""
    if os.path.isdir(path):
        for file in _folder_files(path)[1]:
            yield from _located(file, _read_parquet(file, opts))
        return
    pa = require_pyarrow("reading Parquet")
    import pyarrow.parquet as pq

    src = _seekable_copy(path)
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield None, None, f"not a readable Parquet file (truncated or corrupt?): {exc}", None
        return
    convert = record_converter(pf.schema_arrow)
    meta = pf.metadata
    row = 0
    for group in range(meta.num_row_groups):
        info = meta.row_group(group)
        first_row = row
        rows = max(1, min(MAX_BATCH_ROWS, BATCH_BYTES * info.num_rows // max(1, info.total_byte_size)))
        try:
            for batch in pf.iter_batches(batch_size=rows, row_groups=[group], use_threads=False):
                records = _batch_records(batch, convert)
                yield Rows(row + 1, records)
                row += len(records)
        except (pa.ArrowException, OSError, ValueError) as exc:
            yield f"row group {group}", None, f"corrupt row group (rows {first_row + 1}-{first_row + info.num_rows}): {exc}", None
            row = first_row + info.num_rows


def _read_arrow(path: str, opts: ReadOptions) -> Iterator[Item]:
    """An Arrow IPC file or stream (what `datasets.Dataset.save_to_disk` writes), or such a folder."""
    if os.path.isdir(path):
        for file in _folder_files(path)[1]:
            yield from _located(file, _read_arrow(file, opts))
        return
    pa = require_pyarrow("reading Arrow files")
    import pyarrow.ipc as ipc

    src = _seekable_copy(path)
    try:
        if isinstance(src, str):
            src = pa.memory_map(src, "r")
        head = src.read(6)
        src.seek(0)
        if head == b"ARROW1":
            file_reader = ipc.open_file(src)
            batches: Iterator[Any] = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            schema = file_reader.schema
        else:
            stream_reader = ipc.open_stream(src)
            batches, schema = iter(stream_reader), stream_reader.schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield None, None, f"not a readable Arrow IPC file (truncated or corrupt?): {exc}", None
        return
    convert = record_converter(schema)
    row, index = 0, 0
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            records = []
            step = max(1, min(MAX_BATCH_ROWS, BATCH_BYTES * batch.num_rows // max(1, batch.nbytes)))
            for offset in range(0, batch.num_rows, step):
                records = _batch_records(batch.slice(offset, step), convert)
                yield Rows(row + 1, records)
                row += len(records)
        except (pa.ArrowException, OSError, ValueError) as exc:
            # A stream cannot be picked up again after a bad batch: what follows is lost.
            yield f"record batch {index}", None, f"corrupt record batch after row {row}: {exc}", None
            return
        index += 1


def _located(file: str, items: Iterator[Item]) -> Iterator[Item]:
    """Items of one file of a folder, located in that file: ((file, location), ...)."""
    for item in items:
        if type(item) is Rows:
            item.file = file
            yield item
        else:
            loc, record, reason, raw = item
            yield (file, loc), record, reason, raw


def _folder_files(path: str) -> tuple[str, list[str]]:
    """("arrow" | "parquet", the files in reading order) of a dataset folder: one written by
    `datasets.Dataset.save_to_disk` (its state.json lists the shards), or any folder of .arrow or
    .parquet files (read in name order)."""
    import json

    state = os.path.join(path, "state.json")
    if os.path.isfile(state):
        try:
            with open(state, encoding="utf-8") as fh:
                files = [os.path.join(path, f["filename"]) for f in json.load(fh)["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"cannot read the dataset's state.json: {exc}", where=path) from None
        return "arrow", files
    splits = os.path.join(path, "dataset_dict.json")
    if os.path.isfile(splits):
        try:
            with open(splits, encoding="utf-8") as fh:
                names = json.load(fh)["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        example = os.path.join(path, names[0]) if names else path
        raise UsageError(f"{path} holds several splits ({', '.join(names)}): give one folder, e.g. {example}")
    entries = sorted(os.listdir(path))
    for ext, fmt in ((".parquet", "parquet"), (".arrow", "arrow")):
        files = [os.path.join(path, e) for e in entries if e.endswith(ext)]
        if files:
            return fmt, files
    raise UsageError(f"{path}: is a directory, and not a dataset folder (no state.json, .arrow or .parquet files)")


def _batch_records(batch: Any, convert: Callable[[dict], dict] | None) -> list[dict]:
    records = batch.to_pylist()
    if convert is not None:
        records = [convert(r) for r in records]
    return records


# Values pyarrow gives as Python objects JSON has no type for: converted as they are read, so
# every command (and --schema) sees what a JSONL line would carry.


def record_converter(schema: Any) -> Callable[[dict], dict] | None:
    """A function that makes a row of `schema` JSON-ready, or None when it already is."""
    converters = {f.name: c for f in schema for c in [_converter(f.type)] if c is not None}
    if not converters:
        return None

    def convert(record: dict) -> dict:
        for key, fn in converters.items():
            value = record.get(key)
            if value is not None:
                record[key] = fn(value)
        return record

    return convert


def _converter(t: Any) -> Callable[[Any], Any] | None:
    import pyarrow.types as pt

    if pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t) or getattr(pt, "is_binary_view", lambda _: False)(t):
        import base64

        return lambda v: base64.b64encode(v).decode("ascii")
    if pt.is_decimal(t):
        return lambda v: int(v) if v == v.to_integral_value() else float(v)
    if pt.is_timestamp(t) or pt.is_date(t) or pt.is_time(t):
        return lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)
    if pt.is_duration(t):
        return lambda v: v.total_seconds() if hasattr(v, "total_seconds") else v
    if pt.is_interval(t):
        return lambda v: {"months": v.months, "days": v.days, "nanoseconds": v.nanoseconds}
    if pt.is_map(t):
        key_fn, item_fn = _converter(t.key_type), _converter(t.item_type)
        return lambda v: {str(key_fn(k) if key_fn and k is not None else k): (item_fn(x) if item_fn and x is not None else x)
                          for k, x in v}
    if pt.is_struct(t):
        inner = {t.field(i).name: c for i in range(t.num_fields) for c in [_converter(t.field(i).type)] if c is not None}
        if not inner:
            return None

        def struct(v: dict) -> dict:
            for key, fn in inner.items():
                if v.get(key) is not None:
                    v[key] = fn(v[key])
            return v

        return struct
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t) or getattr(pt, "is_list_view", lambda _: False)(t):
        item = _converter(t.value_type)
        if item is None:
            return None
        return lambda v: [item(x) if x is not None else None for x in v]
    if pt.is_dictionary(t):
        return _converter(t.value_type)
    return None


_READERS: dict[str, Callable[[str, ReadOptions], Iterator[Item]]] = {
    "parquet": _read_parquet,
    "arrow": _read_arrow,
    "csv": _read_csv,
    "tsv": _read_tsv,
    "txt": _read_txt,
}


# --------------------------------------------------------------------------- writers


def open_writer(path: str, fmt: str, row_group_size: int | None = None) -> Any:
    """A record writer for `-o path` in `fmt` (parquet, csv, tsv): write(record), close(ok),
    and `count`, like io.RecordWriter. Written to a temp file and renamed on close(True)."""
    if fmt == "parquet":
        return ParquetWriter(path, row_group_size or DEFAULT_ROW_GROUP_SIZE)
    if fmt in ("csv", "tsv"):
        return CsvWriter(path, delimiter="\t" if fmt == "tsv" else ",")
    raise ValueError(f"no writer for {fmt}")


DEFAULT_ROW_GROUP_SIZE = 65536
_CHUNK = 4096  # records turned into one Arrow batch at a time


class ParquetWriter:
    """Records to a Parquet file, zstd-compressed, in row groups of `row_group_size` rows.

    The columns and their types are those of the first row group (pyarrow infers them from the
    records, nested objects as structs and lists as lists); later records must fit them: a key
    they lack is null, a new key or another type is an error (exit 3) that names the records."""

    flush_each = False

    def __init__(self, path: str, row_group_size: int = DEFAULT_ROW_GROUP_SIZE):
        from llmtools.io import AtomicFile

        self.pa = require_pyarrow("writing Parquet")
        import pyarrow.parquet as pq

        self.pq = pq
        self.path = path
        self.row_group_size = max(1, row_group_size)
        self.count = 0
        self._rows: list[Any] = []
        self._batches: list[Any] = []
        self._buffered = 0
        self._first = 1  # number of the first record not yet written
        self._writer: Any = None
        self._schema: Any = None
        self._file = AtomicFile(path)

    def write(self, record: Any) -> None:
        self._rows.append(record)
        self.count += 1
        if len(self._rows) >= min(_CHUNK, self.row_group_size - self._buffered):
            self._convert()
            if self._buffered >= self.row_group_size:
                self._write_group()

    def _fail(self, first: int, last: int, exc: Exception) -> BadInputError:
        what = f"record {first}" if first == last else f"records {first}-{last}"
        return BadInputError(f"cannot write {what} as Parquet: {exc}", where=self.path)

    def _convert(self) -> None:
        if not self._rows:
            return
        pa = self.pa
        first = self._first + self._buffered
        try:
            batch = _batch_of(pa, self._rows)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise self._fail(first, first + len(self._rows) - 1, exc) from None
        self._batches.append(batch)
        self._buffered += len(self._rows)
        self._rows = []

    def _write_group(self) -> None:
        if not self._batches:
            return
        pa = self.pa
        first, last = self._first, self._first + self._buffered - 1
        try:
            table = pa.concat_tables([pa.Table.from_batches([b]) for b in self._batches], promote_options="permissive")
            if self._writer is None:
                self._schema = _writable_schema(pa, table.schema)
                table = _conform(pa, table, self._schema)
                self._writer = self.pq.ParquetWriter(self._file.fh, self._schema, compression="zstd")
            else:
                table = _conform(pa, table, self._schema)
            self._writer.write_table(table, row_group_size=self.row_group_size)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise self._fail(first, last, exc) from None
        self._first += self._buffered
        self._batches, self._buffered = [], 0

    def flush(self) -> None:
        pass

    def close(self, ok: bool = True) -> None:
        if not ok:
            self._abort()
            return
        try:
            self._convert()
            self._write_group()
            if self._writer is None:  # no records: a valid file with no columns
                self._writer = self.pq.ParquetWriter(self._file.fh, self.pa.schema([]), compression="zstd")
            self._writer.close()
        except BaseException:
            self._abort()
            raise
        self._file.commit()

    def _abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:
            pass
        self._file.abort()


def _batch_of(pa: Any, rows: list[Any]) -> Any:
    """An Arrow batch of `rows`, a column per key any row has, in the order first seen
    (RecordBatch.from_pylist takes the first row's keys only, dropping the others silently)."""
    keys: dict[str, None] = {}
    last: Any = None
    for row in rows:
        if type(row) is not dict:
            raise TypeError(f"a record is {type(row).__name__}, not an object")
        if row.keys() != last:  # records mostly share their keys: compare views, merge on a change
            last = row.keys()
            keys.update(dict.fromkeys(row))
    if not keys:
        raise ValueError("records with no keys at all: a Parquet row needs a column")
    return pa.RecordBatch.from_arrays([pa.array([row.get(k) for row in rows]) for k in keys], names=list(keys))


def _writable_schema(pa: Any, schema: Any) -> Any:
    """`schema` with the types Parquet cannot store replaced: an object with no keys in any
    record (struct<>) becomes a null column."""
    return pa.schema([pa.field(f.name, _writable_type(pa, f.type)) for f in schema])


def _writable_type(pa: Any, t: Any) -> Any:
    import pyarrow.types as pt

    if pt.is_struct(t):
        if t.num_fields == 0:
            return pa.null()
        return pa.struct([pa.field(t.field(i).name, _writable_type(pa, t.field(i).type)) for i in range(t.num_fields)])
    if pt.is_list(t) or pt.is_large_list(t):
        return pa.list_(_writable_type(pa, t.value_type))
    return t


def _conform(pa: Any, table: Any, schema: Any) -> Any:
    """`table` with `schema`'s columns, in its order: missing ones null, others cast (an int
    column into a float one, say); a column `schema` lacks, or a cast that fails, raises."""
    extra = [name for name in table.column_names if schema.get_field_index(name) < 0]
    if extra:
        raise ValueError(f"new field(s) {', '.join(map(repr, extra))} after the first row group (its columns "
                         f"are the file's schema)")
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = _cast(pa, col, f.type)
                except (pa.ArrowException, TypeError, ValueError) as exc:
                    raise ValueError(f"field {f.name!r} is {col.type} here, {f.type} in the first row group: {exc}") from None
            columns.append(col)
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(pa: Any, col: Any, target: Any) -> Any:
    import pyarrow.types as pt

    if pt.is_null(target) and (col.null_count == len(col) or pt.is_null(_writable_type(pa, col.type))):
        return pa.nulls(len(col), target)
    if pt.is_struct(target) and pt.is_struct(col.type):
        # Struct fields by name (a key missing here is null), each cast in turn.
        import pyarrow.compute as pc

        arr = col.combine_chunks()
        names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
        extra = [n for n in names if target.get_field_index(n) < 0]
        if extra:
            raise ValueError(f"new key(s) {', '.join(map(repr, extra))}")
        children = []
        for i in range(target.num_fields):
            f = target.field(i)
            child = pc.struct_field(arr, [names.index(f.name)]) if f.name in names else pa.nulls(len(arr), f.type)
            children.append(_cast(pa, child, f.type) if child.type != f.type else child)
        return pa.StructArray.from_arrays(children, fields=list(target), mask=arr.is_null())
    return col.cast(target)


class CsvWriter:
    """Records to CSV (or TSV): a header with every top-level key, in the order first seen, then
    a row per record. Strings are written as they are; numbers, booleans, objects and lists as
    their JSON text; null and a missing key as an empty cell. The records are spooled to a temp
    file first, since the header must name keys that only later records have."""

    flush_each = False

    def __init__(self, path: str, delimiter: str = ","):
        import tempfile

        from llmtools.io import AtomicFile

        self.path = path
        self.delimiter = delimiter
        self.count = 0
        self._columns: dict[str, None] = {}
        self._spool = tempfile.TemporaryFile(prefix="llmtools-csv-")
        self._file = AtomicFile(path)

    def write(self, record: Any) -> None:
        from llmtools.io import dumps_line

        columns = self._columns
        if type(record) is dict:
            for key in record:
                if key not in columns:
                    columns[key] = None
        self._spool.write(dumps_line(record))
        self.count += 1

    def flush(self) -> None:
        pass

    def close(self, ok: bool = True) -> None:
        if not ok:
            self._spool.close()
            self._file.abort()
            return
        try:
            self._write_out()
        except BaseException:
            self._file.abort()
            raise
        finally:
            self._spool.close()
        self._file.commit()

    def _write_out(self) -> None:
        import csv

        from llmtools.io import loads_line

        text = _stdio.TextIOWrapper(self._file.fh, encoding="utf-8", newline="")  # type: ignore[arg-type]
        writer = csv.writer(text, delimiter=self.delimiter, lineterminator="\n")
        columns = list(self._columns)
        if columns:
            writer.writerow(columns)
        self._spool.seek(0)
        for line in self._spool:
            record, _ = loads_line(line)  # exact for integers beyond 64 bits too
            writer.writerow([_cell(record.get(c)) for c in columns] if type(record) is dict else [_cell(record)])
        text.flush()
        text.detach()


def _cell(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    from llmtools.io import dumps

    return dumps(value).decode("utf-8")
