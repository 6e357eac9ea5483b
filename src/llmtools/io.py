"""JSONL in and out: streaming readers, field paths, atomic writers, rejects.

Every command reads records through `Job.records()` and writes them with `Job.write()`, so the
rules for bad lines (`--on-error`, `--rejects`), `.gz` input, flushing and atomic `-o` output are
the same everywhere.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import sys
from collections import Counter
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

import orjson

from llmtools import console
from llmtools.errors import BadInputError, UsageError
from llmtools.native import SPEEDUPS as _SPEEDUPS

# gzip and tempfile (~5 ms of imports together, a tenth of a short run's start-up) are imported
# where they are needed: for .gz input and for -o.

_MISSING = object()

ON_ERROR_CHOICES = ("fail", "skip", "keep")


# --------------------------------------------------------------------------- field paths


def split_path(path: str) -> list[str]:
    """Split a dotted field path; a backslash escapes a literal dot (`a\\.b` is one key)."""
    # Cached: Job.records() checks the field of every record, and parsing the path char by
    # char each time cost more than parsing the JSON line.
    return list(_split_path_cached(path))


@functools.lru_cache(maxsize=512)
def _split_path_cached(path: str) -> tuple[str, ...]:
    parts, cur, i = [], [], 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path) and path[i + 1] == ".":
            cur.append(".")
            i += 2
            continue
        if ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return tuple(parts)


def get_field(record: Any, path: str | list[str], default: Any = None) -> Any:
    """Return the value at a dotted path (`a.b.0.c`); list items are addressed by index."""
    keys = _split_path_cached(path) if isinstance(path, str) else path
    if len(keys) == 1 and type(record) is dict:  # the common case, without the loop
        return record.get(keys[0], default)
    cur = record
    for key in keys:
        if isinstance(cur, dict):
            cur = cur.get(key, _MISSING)
        elif isinstance(cur, list) and key.lstrip("-").isdigit():
            idx = int(key)
            cur = cur[idx] if -len(cur) <= idx < len(cur) else _MISSING
        else:
            return default
        if cur is _MISSING:
            return default
    return cur


def top_key(path: str) -> str | None:
    """The key itself when `path` names one top-level key, else None (a hot loop can then read
    `record.get(key)` inline, without a call)."""
    keys = _split_path_cached(path)
    return keys[0] if len(keys) == 1 else None


def field_getter(path: str | None) -> Callable[[Any], Any]:
    """`get_field` for one path, compiled once: `getter(record)` is the value at `path` or None.

    The path is split once, and the common shapes (one key, two keys through objects) read with
    plain dict lookups; every other path goes through get_field. None gives a getter of None."""
    if path is None:
        return lambda record: None
    keys = _split_path_cached(path)
    if len(keys) == 1:
        key = keys[0]
        return lambda record: record.get(key) if type(record) is dict else None
    if len(keys) == 2:
        a, b = keys

        def get_two(record: Any) -> Any:
            inner = record.get(a) if type(record) is dict else None
            if type(inner) is dict:
                return inner.get(b)
            return get_field(record, keys) if type(inner) is list else None

        return get_two
    return lambda record: get_field(record, keys)


def has_field(record: Any, path: str) -> bool:
    return get_field(record, path, _MISSING) is not _MISSING


def set_field(record: dict, path: str | list[str], value: Any) -> None:
    """Set the value at a dotted path, creating intermediate objects as needed."""
    keys = split_path(path) if isinstance(path, str) else path
    cur: Any = record
    for key in keys[:-1]:
        if isinstance(cur, list) and key.lstrip("-").isdigit():
            cur = cur[int(key)]
            continue
        nxt = cur.get(key)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            cur[key] = nxt
        cur = nxt
    last = keys[-1]
    if isinstance(cur, list) and last.lstrip("-").isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value


def get_text(record: Any, path: str) -> str | None:
    """The string at `path`, or None when it is missing or not a string.

    Ops use this and pass through, unchanged, any record where it is None: such a record only
    reaches an op under `--on-error keep`.
    """
    value = get_field(record, path)
    return value if isinstance(value, str) else None


def check_text(record: Any, path: str, allow_null: bool = False) -> str | None:
    """Return None if `record[path]` is a string, else the reason it is not."""
    value = get_field(record, path, _MISSING)
    if value is _MISSING:
        return f"missing field '{path}'"
    if value is None and allow_null:
        return None
    if not isinstance(value, str):
        return f"field '{path}' is {type(value).__name__}, not a string"
    return None


def line_text(raw: Any, field: str) -> tuple[Any, str | None, str | None]:
    """(record, text, reason) of one JSONL line (bytes, or a value already parsed): `reason` says
    why the line is bad (not JSON, not an object, no string at `field`), else it is None."""
    value, reason = loads_line(raw) if type(raw) is bytes else (raw, None)
    if reason is None and not isinstance(value, dict):
        reason = f"expected a JSON object, got {type(value).__name__}"
    text = get_text(value, field) if reason is None else None
    if reason is None and text is None:
        reason = f"missing or non-string field '{field}'"
    return value, text, reason


# --------------------------------------------------------------------------- encoding


# orjson reads up to 1024 levels of nesting, and writes up to 255. A line nested deeper than
# it reads is a bad line (TOO_DEEP); a record it reads but cannot write goes to the stdlib
# encoder, which, like the stdlib parser, recurses once a level: _deep() gives both the room.
# The encoder gets twice the parser's, so whatever was read can be written.
TOO_DEEP = "JSON nested too deeply"
_READ_ROOM = 1100  # frames added to the recursion limit: 1024 levels and a margin
_WRITE_ROOM = 2 * _READ_ROOM
_deep_lock: Any = None


def _deep(room: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` (a stdlib JSON call) with `room` more frames of recursion allowed.
    Callers are serialized, so that two threads do not undo each other's limit."""
    global _deep_lock
    if _deep_lock is None:
        import threading

        _deep_lock = threading.Lock()
    with _deep_lock:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(old + room)
        try:
            return fn(*args, **kwargs)
        finally:
            sys.setrecursionlimit(old)


def _not_json(name: str) -> Any:
    """parse_constant for the stdlib parser: NaN, Infinity and -Infinity are Python's, not JSON,
    and orjson refuses them; accepted, they came out as null."""
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """parse_float for the stdlib parser: a number beyond a double's range (1e400) would be
    infinity, which orjson refuses and which was written back as null."""
    value = float(text)
    if value - value != 0.0:  # inf (no NaN can come from a JSON number)
        raise ValueError(f"number {text} is out of range")
    return value


def nested_too_deeply(exc: Exception) -> bool:
    """Whether orjson's JSONDecodeError `exc` is about nesting (then the reason is TOO_DEEP)."""
    message = str(exc).lower()  # "depth limit exceeded" (orjson 3.10+), "recursion limit reached" before
    return "depth limit" in message or "recursion limit" in message


def dumps(record: Any) -> bytes:
    """One JSON line (no trailing newline). Falls back to json for what orjson cannot write:
    ints beyond 64 bits, lone surrogates, and nesting beyond 255 levels."""
    try:
        return orjson.dumps(record)
    except TypeError:
        text = _deep(_WRITE_ROOM, json.dumps, record, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (valid as a JSON escape, not as UTF-8): keep it as an escape.
            return _deep(_WRITE_ROOM, json.dumps, record, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def dumps_line(record: Any) -> bytes:
    """One JSON line with its newline, in a single allocation."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return dumps(record) + b"\n"


_LONG_DIGITS = re.compile(rb"\d{19}")
_DIGITS = b"0123456789"
_ROUNDED = 9.2e18  # just under 2**63: orjson keeps every integer from -2**63 to 2**64-1 exact


def _may_hold_rounded_int(value: dict) -> bool:
    """False when `value`, as orjson parsed it, certainly holds no integer it turned into a float.

    orjson parses an integer beyond 64 bits as a float (of magnitude 2**63 or more), where the
    stdlib parser keeps it exact; for everything else the two agree (a test checks numbers).
    So a record without such a float reads the same either way. Only the values at the top
    and one level down are looked at; deeper nesting, or more than 64 values one level down,
    answers True: then the digit count decides, as it always did.
    """
    inner: list[Any] | None = None
    for v in value.values():
        t = type(v)
        if t is float:
            if not -_ROUNDED < v < _ROUNDED:
                return True
        elif t is dict or t is list:
            if inner is None:
                inner = []
            inner.extend(v.values() if t is dict else v)
            if len(inner) > 64:
                return True
    if inner is None:
        return False
    for v in inner:
        t = type(v)
        if t is float:
            if not -_ROUNDED < v < _ROUNDED:
                return True
        elif t is dict or t is list:
            return True
    return False


# The same test in C when the helper is built (a test checks the two agree).
_may_hold = _SPEEDUPS.may_hold_rounded_int if _SPEEDUPS is not None else _may_hold_rounded_int


def loads_line(raw: bytes, vetted: bool = False) -> tuple[Any, str | None]:
    """Parse one line: (value, None) or (None, reason). `vetted`: orjson has read this very line
    without an error (the caller tried it first), so it is not nested too deeply."""
    raw = raw.rstrip(b"\r\n")  # so the parser's positions read "line 1 column N"
    # translate() counts digits at C speed; only a line with 19+ digits can hold a long run.
    if len(raw) - len(raw.translate(None, _DIGITS)) >= 19 and _LONG_DIGITS.search(raw) is not None:
        # orjson turns integers beyond 64 bits into floats, silently losing digits; the
        # stdlib parser keeps them exact. Only lines with a 19+ digit run pay for it.
        if not vetted:  # the depth limit is orjson's, whichever parser reads the line
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if nested_too_deeply(exc):
                    return None, TOO_DEEP
        try:
            return _deep(_READ_ROOM, json.loads, raw, parse_constant=_not_json, parse_float=_finite), None
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        if nested_too_deeply(exc):
            return None, TOO_DEEP
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return None, f"invalid UTF-8 at byte {uexc.start}"
        try:  # orjson refuses integers beyond 64 bits; the stdlib parser does not
            return _deep(_READ_ROOM, json.loads, text, parse_constant=_not_json, parse_float=_finite), None
        except ValueError:
            pass
        except RecursionError:
            return None, TOO_DEEP
        return None, f"invalid JSON: {exc}"


# --------------------------------------------------------------------------- input


def open_input(path: str) -> IO[bytes]:
    """Open FILE or `-` (stdin) for binary reading; `.gz` and `.zst` are decompressed transparently."""
    from llmtools.formats import open_binary

    return open_binary(path)


_BOM = b"\xef\xbb\xbf"


def source_name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line), skipping blank lines. The newline is left on: JSON
    parsers ignore it, and not copying every line is measurably faster."""
    fh = open_input(path)
    lineno = 0
    try:
        # A UTF-8 byte order mark at the start of a source (as Windows tools write one) is not
        # part of the first record: RFC 8259 lets a parser ignore it. Read apart from the loop,
        # so the other lines pay nothing for it.
        first = fh.readline()
        if first.startswith(_BOM):
            first = first[len(_BOM):]
        lineno = 1
        if first and not first.isspace():
            yield 1, first
        for lineno, raw in enumerate(fh, 2):
            if not raw.isspace():
                yield lineno, raw
    except (OSError, EOFError) as exc:
        from llmtools.formats import _decompress_error

        reason = _decompress_error(exc)
        if reason is not None:
            # Named at the line it broke in: the lines before it were read (and passed on).
            raise BadInputError(reason, where=f"{source_name(path)}:{lineno + 1}") from None
        raise
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def number_lines(lines: Iterable[bytes | None]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw line) from a live stream of lines, skipping blank ones, as iter_lines
    does for a file. A None (the stream is idle) passes through with the last line number."""
    lineno = 0
    for raw in lines:
        if raw is None:
            yield lineno, None
            continue
        lineno += 1
        if raw and not raw.isspace():
            yield lineno, raw


def read_jsonl(path: str) -> Iterator[dict]:
    """Read a side file (reference set, eval set) strictly: any bad line is exit 3. A Parquet,
    Arrow, CSV/TSV or text file (by extension) is read as Job reads it."""
    name = source_name(path)
    from llmtools import formats

    fmt = formats.detect(path)
    if fmt != "jsonl":
        for item in formats.read(path, fmt, formats.ReadOptions()):
            if type(item) is formats.Rows:
                yield from item.records  # rows of a table are objects
                continue
            loc, value, reason, _raw = item
            if type(loc) is tuple:
                name, loc = loc
            if reason is None and not isinstance(value, dict):
                reason = f"expected an object, got {type(value).__name__}"
            if reason:
                raise BadInputError(reason, where=f"{name}:{loc}" if loc is not None else name)
            yield value
        return
    for lineno, raw in iter_lines(path):
        value, reason = loads_line(raw)
        if reason is None and not isinstance(value, dict):
            reason = f"expected a JSON object, got {type(value).__name__}"
        if reason:
            raise BadInputError(reason, where=f"{name}:{lineno}")
        yield value


# --------------------------------------------------------------------------- output


class AtomicFile:
    """A binary file written to a temp file in the same folder, renamed into place on commit.

    A target that exists and is not a regular file (/dev/null, a named pipe, a terminal) is
    written directly: renaming over it would replace the device or pipe with a plain file."""

    def __init__(self, path: str, append: bool = False):
        self.path = path
        self.tmp: str | None = None
        try:
            special = not stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            special = False
        if special:
            self.fh = open(path, "ab" if append else "wb")
            return
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        import tempfile

        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        self.fh = os.fdopen(fd, "wb")
        if append and os.path.exists(path):
            with open(path, "rb") as old:
                while chunk := old.read(1 << 20):
                    self.fh.write(chunk)

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def commit(self) -> None:
        self.fh.flush()
        if self.tmp is None:
            self.fh.close()
            return
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            if self.tmp is not None and os.path.exists(self.tmp):
                os.unlink(self.tmp)


class RecordWriter:
    """Writes JSONL to stdout or, atomically, to a file."""

    def __init__(self, path: str | None = None, unbuffered: bool = False):
        self.path = path if path not in (None, "-") else None
        if self.path:
            self._file: AtomicFile | None = AtomicFile(self.path)
            self._out: Any = self._file
            tty = False
        else:
            self._file = None
            self._out = sys.stdout.buffer
            tty = sys.stdout.isatty()
        self.flush_each = unbuffered or tty
        self.count = 0

    def write(self, record: Any) -> None:
        self._out.write(dumps_line(record))
        self.count += 1
        if self.flush_each:
            self._out.flush()

    def close(self, ok: bool = True) -> None:
        if self._file is not None:
            if ok:
                self._file.commit()
            else:
                self._file.abort()
        else:
            self._out.flush()


def open_writer(path: str | None, unbuffered: bool = False, row_group_size: int | None = None) -> Any:
    """The writer for `-o path`: JSONL (stdout, or any other name), or Parquet, CSV or TSV by
    the extension (see formats.open_writer). All write(record) and close(ok)."""
    if path and path != "-":
        from llmtools import formats

        fmt = formats.output_format(path)
        if fmt != "jsonl":
            return formats.open_writer(path, fmt, row_group_size)
    return RecordWriter(path, unbuffered)


def write_jsonl(path: str, records: Iterable[Any]) -> int:
    """Write records to `path` atomically (or stdout for `-`); returns the count."""
    writer = RecordWriter(path)
    ok = False
    try:
        for rec in records:
            writer.write(rec)
        ok = True
    finally:
        writer.close(ok)
    return writer.count


# --------------------------------------------------------------------------- jobs


_PLACE = re.compile(r"(row group|record batch|row) (\d+)")


def _split_where(where: str) -> tuple[str, int | None, dict[str, Any]]:
    """"source:line" -> (source, line, {}); a table's "source:row N" / "source:row group N" ->
    (source, None, {"row": N}); a bare source (a whole file is bad) -> (source, None, {})."""
    source, _, loc = where.rpartition(":")
    if loc.isdigit():
        return source, int(loc), {}
    m = _PLACE.fullmatch(loc)
    if m is None or not source:
        return where, None, {}
    return source, None, {m[1].replace(" ", "_"): int(m[2])}


def formats_rows() -> type:
    from llmtools.formats import Rows

    return Rows


class Job:
    """One command run: its input sources, output, error policy, rejects and counters.

    Usage in a command::

        with Job(io) as job:
            for rec in ops.thing(job.records(), field=job.field, on_drop=job.reject):
                job.write(rec)
        job.summary({"changed": n})

    `lines`, when given, is read instead of opening the one input (which then only names the
    source): raw lines from a live source such as `watch --follow`, where a None means "idle
    now" and comes out of records() as a None, in order.
    """

    def __init__(
        self,
        inputs: Iterable[str] = ("-",),
        output: str | None = None,
        field: str | None = "text",
        on_error: str = "fail",
        rejects: str | None = None,
        unbuffered: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        command: str = "llmtools",
        validate: Callable[[dict], str | None] | None = None,
        locate: bool | None = None,
        lines: Iterable[bytes | None] | None = None,
        read_options: Any = None,
        schema: Callable[[dict], tuple[str, str] | None] | None = None,
        row_group_size: int | None = None,
    ):
        self.inputs = list(inputs) or ["-"]
        if lines is not None and len(self.inputs) != 1:
            raise ValueError("Job(lines=...) reads one source: give one input to name it")
        self.lines = lines
        self.output = output
        self.field = field
        self.on_error = on_error
        self.rejects_path = rejects
        self.unbuffered = unbuffered
        self.quiet = quiet
        self.verbose = verbose
        self.command = command
        self.validate = validate
        # Keep each record's source:line for where() and --rejects. None: only with --rejects.
        self.locate = locate
        # Inputs that are not JSONL (formats.ReadOptions: --format, --csv-types, --txt-paragraphs).
        self.read_options = read_options
        # --schema: (path, message) of the first violation in a record, or None.
        self.schema = schema
        self.row_group_size = row_group_size
        self._names: dict[str, str] = {}  # a temp file holding stdin (check_first) -> "<stdin>"
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self._where: dict[int, tuple[str, int]] = {}
        self._source, self._line = "-", 0
        self._unit = ""  # "row " while a table's rows are read: `location` is "source:row N"
        self._writer: RecordWriter | None = None
        self._rejects: RecordWriter | None = None
        if on_error not in ON_ERROR_CHOICES:
            raise UsageError(f"--on-error must be one of {', '.join(ON_ERROR_CHOICES)}")

    # -- context
    def __enter__(self) -> "Job":
        self._writer = open_writer(self.output, self.unbuffered, self.row_group_size)
        if self.rejects_path:
            self._rejects = RecordWriter(self.rejects_path, unbuffered=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None
        for w in (self._writer, self._rejects):
            if w is not None:
                # A rejects file keeps what was rejected even when the run fails: no lost data.
                w.close(ok or w is self._rejects)
        for tmp in self._names:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    # -- reading
    def records(self) -> Iterator[dict]:
        """Stream records from every input, applying the bad-line policy (and --schema)."""
        plan = self._plan()
        checked = self.schema is None  # with --schema, the schema is checked first, then the field
        if plan is None:  # JSONL only: straight to the fast loop
            records = self._jsonl_records(self._sources(), checked)
        else:
            records = self._planned_records(plan, checked)
        return records if checked else self._schema_checked(records)

    def _plan(self) -> list[tuple[str, str]] | None:
        """(path, format) of each input, or None when every input is JSONL."""
        if self.lines is not None:
            return None
        from llmtools import formats

        opts = self.read_options
        override = opts.format if opts is not None else "auto"
        plan = [(path, formats.detect(path, override)) for path in self.inputs]
        return None if all(fmt == "jsonl" for _, fmt in plan) else plan

    def _planned_records(self, plan: list[tuple[str, str]], checked: bool = True) -> Iterator[dict]:
        from llmtools import formats

        opts = self.read_options or formats.ReadOptions()
        if self.field and opts.text_field != self.field and top_key(self.field) is not None:
            opts = formats.ReadOptions(opts.format, opts.csv_types, opts.txt_paragraphs, self.field)
        for path, fmt in plan:
            self._unit = ""
            name = self._names.get(path) or source_name(path)
            if fmt == "jsonl":
                yield from self._jsonl_records([(name, iter_lines(path))], checked)
            else:
                yield from self._table_records(name, formats.read(path, fmt, opts), checked)

    def _table_records(self, name: str, items: Iterable[tuple[Any, Any, str | None, Any]],
                       checked: bool = True) -> Iterator[dict]:
        """Records of a source in another format (formats.read), with the same checks as JSONL."""
        where_of, locate = self._where, self._locating
        validate = self.validate if checked else None
        field = self.field if validate is None and checked else None
        self._source = name
        n_in = 0
        rows_type = formats_rows()
        fast_key = top_key(field) if field else None
        try:
            for item in items:
                if type(item) is rows_type:  # a run of good rows: the per-row work, in one loop
                    src = item.file or name
                    self._source, self._unit = src, "row "
                    row = item.first - 1
                    for value in item.records:
                        row += 1
                        n_in += 1
                        self._line = row
                        if fast_key is None or type(value.get(fast_key)) is not str:
                            reason = validate(value) if validate is not None else check_text(value, field) if field else None
                            if reason is not None and not self._bad(f"{src}:row {row}", reason, record=value):
                                continue
                        if locate:
                            where_of[id(value)] = (src, f"row {row}")
                            if len(where_of) > 4096:
                                del where_of[next(iter(where_of))]
                        yield value
                    self._unit = ""
                    continue
                loc, value, reason, raw = item
                n_in += 1
                src = name
                if type(loc) is tuple:  # (file, location): a file of a dataset folder
                    src, loc = loc
                    self._source = src
                self._line = loc
                where = f"{src}:{loc}" if loc is not None else src
                if reason is not None:
                    self._bad(where, reason, raw=raw)
                    continue
                if validate is not None:
                    reason = validate(value)
                elif field:
                    reason = check_text(value, field)
                if reason is not None and not self._bad(where, reason, record=value):
                    continue
                if locate:
                    where_of[id(value)] = (src, loc)
                    if len(where_of) > 4096:
                        del where_of[next(iter(where_of))]
                yield value
        finally:
            self.counts["in"] += n_in

    def _schema_checked(self, records: Iterator[dict]) -> Iterator[dict]:
        """--schema: a record that does not fit is a bad record (reason `schema`, with the path)."""
        check, validate, field = self.schema, self.validate, self.field
        assert check is not None
        for record in records:
            problem = check(record)
            if problem is not None:
                path, message = problem
                self.counts["schema"] += 1
                if not self._bad(self.where(record), "schema", record=record, path=path, message=message):
                    continue
            else:  # then what the command itself needs of a record
                reason = validate(record) if validate is not None else check_text(record, field) if field else None
                if reason is not None and not self._bad(self.where(record), reason, record=record):
                    continue
            yield record

    def _jsonl_records(self, sources: Iterable[tuple[str, Iterable[tuple[int, bytes | None]]]],
                       checked: bool = True) -> Iterator[dict]:
        """The JSONL records of `sources` (name, numbered raw lines), applying the bad-line policy
        (and the field check or `validate`, unless not `checked`: --schema does them later)."""
        validate, text_field = (self.validate, self.field) if checked else (None, None)
        # The per-line work is kept in this one loop, with everything it uses in locals: at
        # ~1 µs per short line all told, every attribute lookup and call layer shows.
        loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
        where_of = self._where
        may_hold = _may_hold
        # Where each record came from matters only to --rejects and to where(): not tracked
        # when neither will ask (saves a table insert and delete per record).
        locate = self._locating
        field = text_field if validate is None else None
        fast_key = top_key(field) if field else None
        n_in = 0
        try:
            for name, lines in sources:
                self._source = name
                for lineno, raw in lines:
                    n_in += 1
                    self._line = lineno
                    try:  # the fast path; loads_line says what is wrong with a bad line
                        value, reason = loads(raw), None
                    except JSONDecodeError:
                        if raw is None:  # a live source is idle (orjson refuses None): pass it on
                            n_in -= 1
                            yield None  # type: ignore[misc]
                            continue
                        value, reason = loads_line(raw)
                    else:
                        # orjson turns integers beyond 64 bits into floats; loads_line re-reads
                        # lines that may hold one (19+ digits) with the exact stdlib parser.
                        # Counting digits costs ~1 ns a byte; a look at the parsed values (only
                        # a float of 2**63 or more can be such an integer) is cheaper, and
                        # clears most records.
                        if (type(value) is not dict or may_hold(value)) and (
                            len(raw) - len(raw.translate(None, _DIGITS)) >= 19
                        ):
                            value, reason = loads_line(raw, vetted=True)
                    if reason is not None:
                        self._bad(f"{name}:{lineno}", reason, raw=raw)
                        continue
                    if type(value) is not dict:
                        # raw too: a `null` line has no record to save, only its line
                        self._bad(f"{name}:{lineno}", f"expected a JSON object, got {type(value).__name__}", record=value, raw=raw)
                        continue
                    if fast_key is not None and type(value.get(fast_key)) is str:
                        pass
                    else:
                        if validate is not None:
                            reason = validate(value)
                        elif text_field:
                            reason = check_text(value, text_field)
                        if reason is not None and not self._bad(f"{name}:{lineno}", reason, record=value):
                            continue
                    # Where each record came from, for --rejects. Bounded, so memory stays flat
                    # on endless streams: a record an op holds longer than this (or replaces with
                    # a new dict) is reported at the last line read instead.
                    if locate:
                        where_of[id(value)] = (name, lineno)
                        if len(where_of) > 4096:
                            del where_of[next(iter(where_of))]  # dicts keep insertion order: the oldest
                    yield value
        finally:
            self.counts["in"] += n_in

    def _sources(self) -> Iterator[tuple[str, Iterable[tuple[int, bytes | None]]]]:
        """(source name, numbered raw lines) for each input."""
        if self.lines is not None:
            yield source_name(self.inputs[0]), number_lines(self.lines)
            return
        for path in self.inputs:
            yield self._names.get(path) or source_name(path), iter_lines(path)

    def check_first(self) -> None:
        """Read every input once before the real pass, so that bad input (a record --schema
        rejects, say) fails the run now: score calls it before any model is loaded. stdin is
        kept in a temp file for the second pass. Counts start again from zero."""
        if "-" in self.inputs and self.lines is None:
            import shutil
            import tempfile

            from llmtools.formats import open_binary

            src = open_binary("-")  # decompressed, so the copy reads as plain JSONL
            with tempfile.NamedTemporaryFile(prefix="llmtools-stdin-", delete=False) as tmp:
                self._names[tmp.name] = "<stdin>"
                shutil.copyfileobj(src, tmp, 1 << 20)
            self.inputs = [tmp.name if p == "-" else p for p in self.inputs]
        counts, reasons = self.counts.copy(), self.reasons.copy()
        for _ in self.records():
            pass
        self.counts, self.reasons = counts, reasons
        self._where.clear()

    @property
    def _locating(self) -> bool:
        return self.locate if self.locate is not None else self.rejects_path is not None

    @property
    def location(self) -> str:
        """"source:line" of the line read last."""
        return f"{self._source}:{self._unit}{self._line}"

    def where(self, record: Any, forget: bool = False) -> str:
        """"source:line" a record was read from (the last line read, if it is not known: records
        are located only with --rejects or Job(locate=True)). `forget` drops the record from the
        table: it is leaving the job."""
        loc = self._where.pop(id(record), None) if forget else self._where.get(id(record))
        return f"{loc[0]}:{loc[1]}" if loc else self.location

    def bad(self, record: dict, reason: str) -> bool:
        """Apply --on-error to a record an op found bad after reading (a field it cannot use).
        True means: keep the record; False: it was skipped (and saved to --rejects)."""
        return self._bad(self.where(record), reason, record=record)

    def _bad(self, where: str, reason: str, record: Any = None, raw: bytes | None = None, **extra: Any) -> bool:
        """Apply --on-error to one bad line. True means: pass the record through unchanged.
        `extra` (a --schema failure's path and message) is told and saved to --rejects."""
        self.counts["bad"] += 1
        told = reason if not extra else f"{reason}: {extra.get('path') or 'the record'}: {extra.get('message')}"
        if self.on_error == "fail":
            raise BadInputError(told, where=where)
        self.warn(f"{where}: {told}")
        if self.on_error == "keep" and isinstance(record, dict):
            self.counts["kept_bad"] += 1
            return True
        self.reasons[f"bad input: {reason.split(':')[0]}"] += 1
        self._write_reject(where, reason, record=record, raw=raw, **extra)
        return False

    # -- writing
    def write(self, record: Any) -> None:
        assert self._writer is not None, "Job used outside its with-block"
        self._writer.write(record)
        self._where.pop(id(record), None)
        self.counts["out"] += 1

    def write_all(self, records: Iterable[Any]) -> None:
        """`write()` each record, in one loop without the per-record call layers."""
        writer = self._writer
        assert writer is not None, "Job used outside its with-block"
        if writer.flush_each:
            for record in records:
                self.write(record)
            return
        if type(writer) is not RecordWriter:  # Parquet, CSV: records, not lines
            write, forget, locating, n = writer.write, self._where.pop, self._locating, 0
            try:
                for record in records:
                    write(record)
                    if locating:
                        forget(id(record), None)
                    n += 1
            finally:
                self.counts["out"] += n
            return
        out, dumps, option, forget = writer._out.write, orjson.dumps, orjson.OPT_APPEND_NEWLINE, self._where.pop
        locating = self._locating
        n = 0
        try:
            for record in records:
                try:
                    line = dumps(record, option=option)
                except TypeError:
                    line = dumps_line(record)
                out(line)
                if locating:
                    forget(id(record), None)
                n += 1
        finally:
            writer.count += n
            self.counts["out"] += n

    def reject(self, record: Any, reason: str, **extra: Any) -> None:
        """Drop a record on purpose (a filter, a duplicate) and save it to --rejects if given."""
        where = self.where(record, forget=True)
        self.counts["dropped"] += 1
        self.reasons[reason] += 1
        self._write_reject(where, reason, record=record, **extra)

    def _write_reject(self, where: str, reason: str, record: Any = None, raw: bytes | None = None, **extra: Any) -> None:
        if self._rejects is None:
            return
        source, line, place = _split_where(where)
        entry: dict[str, Any] = {"reason": reason, "source": source, "line": line}
        entry.update(place)
        entry.update(extra)
        if record is not None:
            entry["record"] = record
        elif raw is not None:
            entry["raw"] = raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
        self._rejects.write(entry)

    # -- people
    def warn(self, message: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"{self.command}: {message}\n")

    def progress(self, description: str, total: int | None = None) -> Any:
        """A progress bar on stderr when it is a TTY (not with -q): `with job.progress(...) as advance:`."""
        return console.progress(description, total=total, quiet=self.quiet)

    def summary(self, rows: Mapping[str, Any] | None = None, *, title: str = "summary", records: bool = True) -> None:
        """Show the run's summary on stderr (a table on a TTY, one line with -v, nothing with -q).

        With `records`, it starts with records in and out, bad lines and the drops by reason,
        and `rows` follow; without, `rows` come first and bad lines (if any) last."""
        counts = self.counts
        bad = {"bad lines": counts["bad"]} if counts["bad"] else {}
        if records:
            table: dict[str, Any] = {"records in": counts["in"], "records out": counts["out"], **bad}
            table.update((f"dropped: {reason}", n) for reason, n in sorted(self.reasons.items()))
            table.update(rows or {})
        else:
            table = {**(rows or {}), **bad}
        console.show_summary(self.command, title, table, quiet=self.quiet, verbose=self.verbose)
