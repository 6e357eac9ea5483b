"""The Spark engine: the same ops functions, run over the partitions of files Spark reads.

Inputs are paths or globs Spark can read (local, hdfs://, s3a://, `.gz` included); each file is
read with `textFile`, and the files' partitions are put one after the other, so the global
partition index and the line's place in its partition give every record its input order
(`order = partition << 40 | line index`). Lines are handed to the executors as bytes, parsed
and checked by the same `Job` code as locally (so --on-error, --rejects and the reasons are the
same), and given to the ops function. Line numbers are known only per partition while a task
runs; the driver adds each partition's first line number afterwards (from the line counts the
tasks report), which is how rejects and errors name `file:line`.

Output is a folder of part files (`part-NNNNN.jsonl[.gz]`, in input order when read in part
order), an `llmtools-manifest.json` and, last, `_SUCCESS`. A failed run leaves no output
folder. pyspark is imported only here, and only when a command runs with `--engine spark`.
"""

from __future__ import annotations

import contextlib
import glob as globbing
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from typing import Any, Callable, Iterable, Iterator

from llmtools.errors import BadInputError, LLMToolsError, MissingDependency, RuntimeFailure, UsageError
from llmtools.engines import EngineConfig
from llmtools.io import Job, dumps

JAVA_MIN = 17
JAVA_FIX = ("sudo apt-get install -y openjdk-17-jre-headless (Debian/Ubuntu; `make sysdeps` does it), "
            "or point JAVA_HOME at a Java 17+ runtime")
PART_SHIFT = 40  # order = global partition index << PART_SHIFT | index of the line in its partition
_GLOB = re.compile(r"[*?\[{]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PART = re.compile(r"^part-(\d+)(\.gz)?$")
GZIP_CODEC = "org.apache.hadoop.io.compress.GzipCodec"


# --------------------------------------------------------------------------- set-up


def java_version(java: str) -> int | None:
    """The major version of a Java runtime (`java -version` prints 'openjdk version "17.0.15"'),
    or None when it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def check_java() -> None:
    """pyspark needs a Java runtime (17 or newer for Spark 4): exit 4 with the install command."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH"
        raise MissingDependency(f"--engine spark needs a Java {JAVA_MIN}+ runtime ({where}). Install one: {JAVA_FIX}")
    version = java_version(java)
    if version is None or version < JAVA_MIN:
        found = f"Java {version}" if version else f"{java}, which does not run"
        raise MissingDependency(f"--engine spark needs Java {JAVA_MIN} or newer; found {found}. Install one: {JAVA_FIX}")


def import_pyspark() -> Any:
    import warnings

    from llmtools.errors import require

    # pyspark's note about pandas versions (llmtools does not use pandas on Spark), here and in
    # the Python workers, which inherit the environment.
    warnings.filterwarnings("ignore", message=_PANDAS_NOTE)
    os.environ.setdefault("PYTHONWARNINGS", f"ignore:{_PANDAS_NOTE}")
    return require("pyspark", "spark", purpose="--engine spark")


_PANDAS_NOTE = "PySpark does not yet fully support pandas"


def _package_root() -> str:
    import llmtools

    return os.path.dirname(os.path.dirname(os.path.abspath(llmtools.__file__)))


def _log_config() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "spark", "log4j2.properties")


class SparkRun:
    """A Spark context for one command run: made here (and stopped at the end), or the one that
    is already running in this process (a notebook's, a test's), which is left running. The
    SQL session (`spark`) is made when first asked for: the record-wise commands and near
    dedup below its driver limits run on RDDs only, and a session costs ~2 s to start."""

    def __init__(self, config: EngineConfig, command: str, quiet: bool = False):
        self.config = config
        self.command = command
        self.quiet = quiet
        self.owned = False
        self._spark: Any = None
        self.sc: Any = None

    @property
    def spark(self) -> Any:
        if self._spark is None:
            from pyspark.sql import SparkSession

            self._spark = SparkSession(self.sc) if SparkSession.getActiveSession() is None else SparkSession.getActiveSession()
        return self._spark

    def __enter__(self) -> "SparkRun":
        import_pyspark()
        from pyspark import SparkConf, SparkContext

        active = SparkContext._active_spark_context
        if active is not None:
            self.sc = active
            return self
        check_java()

        # The executors' Python must be this one, and must find this llmtools (on a cluster,
        # install llmtools on the workers or ship it with spark.archives / spark.submit.pyFiles).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH", "")) if p)
        conf = (SparkConf().setMaster(self.config.master).setAppName(f"llmtools {self.command}")
                .set("spark.ui.showConsoleProgress", "false")
                # A batch run needs no web UI (Jetty's start costs ~0.3 s): --spark-conf
                # spark.ui.enabled=true brings it back.
                .set("spark.ui.enabled", "false")
                .set("spark.executorEnv.PYTHONPATH", path)
                .set("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{_log_config()}"))
        for key, value in self.config.conf:
            conf.set(key, value)
        try:
            self.sc = SparkContext(conf=conf)
        except Exception as exc:  # the JVM did not start, or the master refused
            raise RuntimeFailure(f"--engine spark: cannot start Spark at {self.config.master}: {_first_line(exc)}") from None
        self.owned = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.owned:
            if self._spark is not None:
                self._spark.stop()
            elif self.sc is not None:
                self.sc.stop()

    # -- the Hadoop file system, through the JVM (hdfs://, s3a:// and file: alike)
    def _fs(self, uri: str) -> tuple[Any, Any]:
        jvm = self.sc._jvm
        path = jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self.sc._jsc.hadoopConfiguration()), path

    def resolve(self, inputs: Iterable[str]) -> list[tuple[str, str]]:
        """(name, uri) of every input file, in the order given; a glob's matches and a folder's
        files are sorted by name (a folder's `_` and `.` files are skipped, as Spark does).
        `name` is what the user wrote for a local path (so rejects and errors read as they do
        locally), the full URI otherwise."""
        out: list[tuple[str, str]] = []
        for given in inputs:
            remote = bool(_SCHEME.match(given)) and not given.startswith("file:")
            if not remote:
                path = given[len("file://"):] if given.startswith("file://") else given[len("file:"):] if given.startswith("file:") else given
                matches = sorted(globbing.glob(path)) if _GLOB.search(path) else [path]
                if not matches or not os.path.exists(matches[0]):
                    raise UsageError(f"{given}: no such file" if not _GLOB.search(path) else f"{given}: no file matches")
                for match in matches:
                    if os.path.isdir(match):
                        files = sorted(f for f in os.listdir(match) if not f.startswith(("_", ".")))
                        out.extend((os.path.join(match, f), "file://" + os.path.abspath(os.path.join(match, f))) for f in files)
                    else:
                        out.append((match, "file://" + os.path.abspath(match)))
                continue
            fs, path = self._fs(given)
            statuses = fs.globStatus(path)
            if not statuses:
                raise UsageError(f"{given}: no such file" if not _GLOB.search(given) else f"{given}: no file matches")
            for st in sorted(statuses, key=lambda s: s.getPath().toString()):
                if st.isDirectory():
                    inner = sorted((s.getPath().toString() for s in fs.listStatus(st.getPath())
                                    if s.isFile() and not s.getPath().getName().startswith(("_", "."))))
                    out.extend((p, p) for p in inner)
                else:
                    uri = st.getPath().toString()
                    out.append((uri, uri))
        if not out:
            raise UsageError("no input files (the folders given are empty)")
        from llmtools.formats import detect

        other = [name for name, _ in out if detect(name) != "jsonl"]
        if other:  # Spark reads lines of text here; Parquet, CSV and the rest are read locally
            raise UsageError(f"--engine spark reads JSONL inputs; {other[0]} is {detect(other[0])}: run without "
                             "--engine spark, or convert it to JSONL first")
        return out

    def check_output(self, path: str, option: str) -> str:
        """The URI of an output folder that must not exist yet."""
        uri = path if (_SCHEME.match(path) and not path.startswith("file:")) else "file://" + os.path.abspath(
            path[len("file:"):] if path.startswith("file:") else path)
        fs, p = self._fs(uri)
        if fs.exists(p):
            raise UsageError(f"{option} {path}: already exists; remove it or name a new folder")
        return uri

    def read(self, files: list[tuple[str, str]], min_partitions: int | None = None) -> tuple[Any, list[int]]:
        """(RDD of raw lines as bytes, the file index of each of its partitions). Each file is
        split at least `min_partitions` ways (Spark's default: 2), and more when it is larger
        than a block."""
        rdds = [self.sc.textFile(uri, min_partitions, use_unicode=False) for _, uri in files]
        part_file = [i for i, rdd in enumerate(rdds) for _ in range(rdd.getNumPartitions())]
        return (rdds[0] if len(rdds) == 1 else self.sc.union(rdds)), part_file

    # -- output
    def save(self, rdd: Any, uri: str) -> None:
        """Write an RDD of JSON lines (bytes) as part-NNNNN.jsonl[.gz] files under `uri`."""
        conf = self.sc._jsc.hadoopConfiguration()
        conf.set("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")  # _SUCCESS comes last, from commit()
        fs, root = self._fs(uri)
        if uri.startswith("file:"):
            fs.setWriteChecksum(False)  # no .crc files beside the parts of a local folder
        rdd.saveAsTextFile(uri, GZIP_CODEC if self.config.compress else None)
        for status in fs.listStatus(root):
            name = status.getPath().getName()
            found = _PART.match(name)
            if found:
                ext = ".jsonl.gz" if found.group(2) else ".jsonl"
                fs.rename(status.getPath(), self.sc._jvm.org.apache.hadoop.fs.Path(root, f"part-{found.group(1)}{ext}"))
            elif name.endswith(".crc"):
                fs.delete(status.getPath(), False)

    def write_file(self, uri: str, name: str, data: bytes) -> None:
        fs, root = self._fs(uri)
        stream = fs.create(self.sc._jvm.org.apache.hadoop.fs.Path(root, name), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def commit(self, uri: str, manifest: dict) -> None:
        """The manifest, then `_SUCCESS`: a reader that sees `_SUCCESS` sees a whole output."""
        import json

        self.write_file(uri, "llmtools-manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str).encode() + b"\n")
        self.write_file(uri, "_SUCCESS", b"")

    def remove(self, uri: str) -> None:
        try:
            fs, root = self._fs(uri)
            if fs.exists(root):
                fs.delete(root, True)
        except Exception:  # cleaning up after a failure must not hide the failure
            pass

    def file_info(self, files: list[tuple[str, str]]) -> dict[str, Any]:
        """The manifest's `inputs`: size and modification time of each file, and the sha256 of
        local ones (cached by path, size and mtime; remote files are not read twice)."""
        from llmtools.provenance import sha256_file

        info: dict[str, Any] = {}
        for name, uri in files:
            fs, path = self._fs(uri)
            st = fs.getFileStatus(path)
            entry: dict[str, Any] = {"uri": uri, "bytes": int(st.getLen()), "modified_ms": int(st.getModificationTime())}
            if uri.startswith("file:"):
                entry["sha256"] = sha256_file(uri[len("file://"):])
            info[name] = entry
        return info


def _first_line(exc: BaseException) -> str:
    """The message of a (Java) exception, cut to what a person can act on."""
    text = str(exc)
    for marker in ("PythonException:", "Exception:", "Error:"):
        if marker in text:
            tail = text.split(marker, 1)[1].strip()
            if tail:
                text = tail
                break
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(("at ", "File ", "Traceback"))]
    return lines[0][:500] if lines else exc.__class__.__name__


@contextlib.contextmanager
def spark_errors() -> Iterator[None]:
    """Inside: a failed Spark job (a Py4J or pyspark error) is raised as the llmtools error it
    stands for; llmtools' own errors and other exceptions pass unchanged."""
    try:
        yield
    except LLMToolsError:
        raise
    except Exception as exc:
        if exc.__class__.__name__ in ("Py4JJavaError", "PythonException") or "pyspark" in type(exc).__module__:
            raise spark_failure(exc) from None
        raise


def spark_failure(exc: BaseException) -> LLMToolsError:
    """A failed Spark job as an llmtools error: the executor's llmtools error when it was one."""
    text = str(exc)
    for kind in (BadInputError, MissingDependency, UsageError):
        found = re.search(rf"llmtools\.errors\.{kind.__name__}: (.*)", text)
        if found:
            return kind(found.group(1).strip())
    return RuntimeFailure(f"--engine spark: the Spark job failed: {_first_line(exc)}")


# --------------------------------------------------------------------------- on the executors


class PartitionJob(Job):
    """`Job` reading the numbered lines of one partition: the same parsing, --on-error policy and
    reject entries as a local run. Line numbers are counted from the partition's start (the
    driver adds the partition's first line number later); rejects are kept in `pending`."""

    def __init__(self, source: str, numbered: Iterable[tuple[int, bytes]], collect_rejects: bool, **kw: Any):
        kw.setdefault("quiet", True)
        super().__init__(inputs=[source], output=None, rejects=None, **kw)
        self._numbered = numbered
        self.pending: list[dict] = []
        if collect_rejects:
            self._rejects = _Collector(self.pending)  # type: ignore[assignment]
            if self.locate is None:
                self.locate = True

    def _sources(self) -> Iterator[tuple[str, Iterable[tuple[int, bytes]]]]:
        yield self.inputs[0], self._numbered

    def _plan(self) -> None:
        return None  # JSONL lines Spark read, whatever the file was named


class _Collector:
    def __init__(self, sink: list) -> None:
        self.sink = sink

    def write(self, entry: dict) -> None:
        self.sink.append(entry)


def _add(a: Any, b: Any) -> Any:
    """Accumulator merge: Counters add, lists concatenate, dicts merge."""
    if isinstance(a, Counter):
        a.update(b)
        return a
    if isinstance(a, list):
        a.extend(b)
        return a
    a.update(b)
    return a


def _accumulator_param() -> Any:
    from pyspark.accumulators import AccumulatorParam

    class Param(AccumulatorParam):
        def __init__(self, zero: Callable[[], Any]) -> None:
            self.zero_fn = zero

        def zero(self, value: Any) -> Any:
            return self.zero_fn()

        def addInPlace(self, a: Any, b: Any) -> Any:
            return _add(a, b)

    return Param


class Accumulators:
    """What the tasks report to the driver: counts, line counts per partition, the ops
    function's results, and the bad lines that end an --on-error fail run."""

    def __init__(self, sc: Any) -> None:
        Param = _accumulator_param()
        self.counts = sc.accumulator(Counter(), Param(Counter))
        self.lines = sc.accumulator({}, Param(dict))
        self.results = sc.accumulator([], Param(list))
        self.fails = sc.accumulator([], Param(list))


def numbered_lines(lines: Iterable[bytes], seen: list[int], base: int = 0) -> Iterator[tuple[int, bytes]]:
    """(line number in the partition, plus `base`, raw line), skipping blank lines; `seen[0]`
    counts all the partition's lines."""
    i = 0
    for i, raw in enumerate(lines, 1):
        if raw and not raw.isspace():
            seen[0] = i
            yield base + i, raw
    seen[0] = i


class CountTask:
    """The first pass of a `numbered` run: (partition, its lines, the records `Job` yields from
    them). Under --on-error fail every non-blank line is a record (a bad one ends the run), so
    nothing is parsed; otherwise the lines are read as the real pass reads them."""

    def __init__(self, sources: list[str], part_file: list[int], job_kw: dict) -> None:
        self.sources = sources
        self.part_file = part_file
        self.job_kw = job_kw

    def __call__(self, gp: int, lines: Iterable[bytes]) -> Iterator[tuple[int, int, int]]:
        seen = [0]
        numbered = numbered_lines(lines, seen)
        records = 0
        if self.job_kw.get("on_error") == "fail":
            records = sum(1 for _ in numbered)
        else:
            job = PartitionJob(self.sources[self.part_file[gp]], numbered, False, **dict(self.job_kw, locate=False))
            try:
                records = sum(1 for _ in job.records())
            except BadInputError:  # the real pass reports it
                pass
        yield gp, seen[0], records


def partition_bases(counts: list[tuple[int, int, int]], part_file: list[int]) -> list[tuple[int, int]]:
    """(the line number before its first line in its file, the records before it in the whole
    input) for each partition, from CountTask's counts."""
    lines = {gp: n for gp, n, _ in counts}
    records = {gp: n for gp, _, n in counts}
    starts = first_lines(part_file, lines)
    out, total = [], 0
    for gp in range(len(part_file)):
        out.append((starts[gp], total))
        total += records.get(gp, 0)
    return out


class RecordTask:
    """One partition through the ops function: yields (0, json line) for each output record and
    (1, partition, reject entry) for each reject, in the order they happen."""

    def __init__(self, fn: Callable, sources: list[str], part_file: list[int], acc: Accumulators,
                 collect_rejects: bool, job_kw: dict, bases: list[tuple[int, int]] | None = None) -> None:
        self.bases = bases
        self.fn = fn
        self.sources = sources
        self.part_file = part_file
        self.acc = acc
        self.collect_rejects = collect_rejects
        self.job_kw = job_kw

    def __call__(self, gp: int, lines: Iterable[bytes]) -> Iterator[tuple]:
        seen = [0]
        source = self.sources[self.part_file[gp]]
        first_line, first_record = self.bases[gp] if self.bases is not None else (0, 0)
        job = PartitionJob(source, numbered_lines(lines, seen, first_line), self.collect_rejects, **self.job_kw)
        pending = job.pending
        forget = job._where.pop if job._locating else None  # as Job.write_all: a written record leaves the table
        out = 0
        result = None
        try:
            if self.bases is not None:
                from llmtools.engines import Partition

                gen = self.fn(job.records(), job.reject, job.where, Partition(first_record, job.bad))
            else:
                gen = self.fn(job.records(), job.reject, job.where)
            while True:
                try:
                    rec = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                out += 1
                yield (0, dumps(rec))
                if forget is not None:
                    forget(id(rec), None)
                if pending:
                    for entry in pending:
                        yield (1, gp, entry)
                    pending.clear()
        except BadInputError as exc:
            _source, _, line = (exc.where or "").rpartition(":")
            self.acc.fails.add([(gp, int(line) if line.isdigit() else 0, source, exc.reason)])
        for entry in pending:
            yield (1, gp, entry)
        counts = Counter({"in": job.counts["in"], "out": out, "bad": job.counts["bad"], "dropped": job.counts["dropped"],
                          "kept_bad": job.counts["kept_bad"]})
        counts.update({f"reason:{k}": v for k, v in job.reasons.items()})
        self.acc.counts.add(counts)
        self.acc.lines.add({gp: seen[0]})
        self.acc.results.add([(gp, result)])


# --------------------------------------------------------------------------- the driver


def first_lines(part_file: list[int], lines: dict[int, int]) -> list[int]:
    """The line number before each partition's first line (0 for a file's first partition)."""
    starts, prev_file, total = [], None, 0
    for gp, f in enumerate(part_file):
        if f != prev_file:
            total, prev_file = 0, f
        starts.append(total)
        total += lines.get(gp, 0)
    return starts


def raise_first_failure(fails: list[tuple], part_file: list[int], lines: dict[int, int]) -> None:
    """--on-error fail: the first bad line in input order ends the run (exit 3)."""
    if not fails:
        return
    gp, line, source, reason = min(fails, key=lambda f: (f[0], f[1]))
    starts = first_lines(part_file, lines)
    raise BadInputError(reason, where=f"{source}:{starts[gp] + line}")


def fix_reject(starts: list[int]) -> Callable[[tuple], bytes]:
    def fix(item: tuple) -> bytes:
        _kind, gp, entry = item
        if isinstance(entry.get("line"), int):
            entry["line"] += starts[gp]
        return dumps(entry)

    return fix


def run_records(engine: EngineConfig, io: Any, job: Job, fn: Callable, command: str,
                params: dict | None = None, numbered: bool = False, tail: Callable[[list], list[dict]] | None = None) -> list[Any]:
    """Run `fn(records, reject)` over the partitions of `io`'s input files on Spark, write the
    records it yields to `io.output` (a folder), the rejects to `io.rejects` (a folder), and
    return what `fn` returned for each partition. `job` (not entered) gets the run's counts,
    for its summary. While `fn` runs, `where(record)` gives the line number within the
    partition; rejects and errors get the file's line number afterwards. With `numbered`, a
    first pass counts each partition's lines and records, `fn` also gets a `Partition`, and line
    numbers are the files' own from the start. `tail(results)` gives records for one more part
    file, after the others (a report's summary record)."""
    engine.check_io(io.inputs, io.output)
    with SparkRun(engine, command, quiet=io.quiet) as run:
        files = run.resolve(io.inputs)
        out_uri = run.check_output(io.output, "-o")
        rej_uri = run.check_output(io.rejects, "--rejects") if io.rejects else None
        lines, part_file = run.read(files)
        acc = Accumulators(run.sc)
        job_kw = dict(field=job.field, on_error=job.on_error, validate=job.validate, locate=job.locate, schema=job.schema)
        sources = [name for name, _ in files]
        bases = None
        if numbered:
            with spark_errors():
                counts = lines.mapPartitionsWithIndex(CountTask(sources, part_file, job_kw)).collect()
            bases = partition_bases(counts, part_file)
        task = RecordTask(fn, sources, part_file, acc, rej_uri is not None, job_kw, bases)
        tagged = lines.mapPartitionsWithIndex(task)
        if rej_uri is not None:
            from pyspark import StorageLevel

            tagged.persist(StorageLevel.MEMORY_AND_DISK)  # two outputs from one pass
        try:
            with spark_errors():
                run.save(tagged.filter(lambda t: t[0] == 0).map(lambda t: t[1]), out_uri)
                _add_counts(job, acc.counts.value)
                known = {} if numbered else acc.lines.value  # numbered: the lines are the files' already
                if rej_uri is not None:  # kept even when the run fails: no lost data
                    starts = first_lines(part_file, known)
                    run.save(tagged.filter(lambda t: t[0] == 1).map(fix_reject(starts)), rej_uri)
                    run.commit(rej_uri, _manifest(run, command, files, params, job, engine, "rejects"))
                raise_first_failure(acc.fails.value, part_file, known)
        except BaseException:
            run.remove(out_uri)
            raise
        finally:
            if rej_uri is not None:
                tagged.unpersist()
        results = [r for _, r in sorted(acc.results.value, key=lambda item: item[0])]  # input order
        parts = len(part_file)
        if tail is not None:
            try:
                extra = tail(results)
                if extra:
                    data = b"".join(dumps(r) + b"\n" for r in extra)
                    name = f"part-{parts:05d}.jsonl" + (".gz" if engine.compress else "")
                    if engine.compress:
                        import gzip

                        data = gzip.compress(data)
                    run.write_file(out_uri, name, data)
                    job.counts["out"] += len(extra)
                    parts += 1
            except BaseException:
                run.remove(out_uri)
                raise
        run.commit(out_uri, _manifest(run, command, files, params, job, engine, "output", parts))
        return results


def _add_counts(job: Job, counts: Counter) -> None:
    job.counts.update({k: v for k, v in counts.items() if not k.startswith("reason:")})
    job.reasons.update({k[len("reason:"):]: v for k, v in counts.items() if k.startswith("reason:")})


def _manifest(run: SparkRun, command: str, files: list[tuple[str, str]], params: dict | None, job: Job,
              engine: EngineConfig, what: str, partitions: int | None = None) -> dict:
    from llmtools.provenance import build_manifest

    counts = {k: job.counts[k] for k in ("in", "out", "bad", "dropped", "kept_bad") if job.counts[k]}
    return build_manifest(
        f"{command} {what}", inputs=run.file_info(files), params=params or {},
        metrics={"records": counts, "dropped": dict(job.reasons)},
        extra={"engine": {"name": "spark", "master": run.sc.master, "spark_version": run.sc.version,
                          "partitions": partitions, "conf": dict(engine.conf)}},
        libraries=("llmtools", "pyspark", "datasketch", "nltk", "sacrebleu", "rouge_score", "orjson", "ftfy"),
    )
