"""Engines: where records are processed.

`local` (the default) runs an ops function in this process over the records of `Job`;
`spark` runs the same function on Apache Spark over the partitions of files that Spark reads
(local paths, hdfs://, s3a://, globs, .gz). An ops function never learns which one runs it:
it gets an iterator of records, a `reject(record, reason, **detail)` callback and
`where(record)` ("source:line"), yields the records to keep, and may `return` a summary object (its statistics) that the engine hands back,
one per partition. With `numbered=True` it also gets a `Partition`: how many records come
before its first one in the whole input (so per-record seeds can use the global position) and
the job's `bad(record, reason)` (--on-error for a record the op finds bad); the Spark engine
then counts each partition's lines and records in a first, cheap pass, and line numbers are the
files' own while the function runs.

pyspark is imported only by `engines.spark`, and only when `--engine spark` is chosen.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from llmtools.errors import UsageError

ENGINES = ("local", "spark")


class EngineConfig:
    """The engine options of one command: `--engine`, `--master`, `--spark-conf`, `--compress`."""

    def __init__(self, name: str = "local", master: str | None = None, conf: Iterable[str] = (), compress: bool = False):
        self.name = name
        self.master = master or os.environ.get("SPARK_MASTER") or "local[*]"
        self.compress = compress
        self.conf: list[tuple[str, str]] = []
        for item in conf:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--spark-conf '{item}': expected KEY=VALUE, e.g. spark.executor.memory=4g")
            self.conf.append((key.strip(), value))
        if name != "spark" and (self.conf or compress):
            raise UsageError("--spark-conf and --compress need --engine spark")

    @property
    def spark(self) -> bool:
        return self.name == "spark"

    def check_io(self, inputs: Iterable[str], output: str | None, what: str = "-o DIR") -> None:
        """stdin and stdout mean nothing to a cluster: say what to pass instead (exit 2)."""
        inputs = list(inputs)
        if not inputs or "-" in inputs:
            raise UsageError("--engine spark reads files Spark can reach, not stdin: give the input paths or globs "
                             "(local, hdfs://, s3a://; .gz included), e.g. 'data/*.jsonl.gz'")
        if output in (None, "-"):
            raise UsageError(f"--engine spark writes a folder of part files, not stdout: give {what}")


class Partition:
    """What a `numbered` ops function learns of its partition: `first`, the number of records
    (as the job yields them) before its first one in the whole input, and the job's `bad`."""

    def __init__(self, first: int, bad: Callable[[dict, str], bool]):
        self.first = first
        self.bad = bad


def run_records(engine: EngineConfig, io: Any, job: Any, fn: Callable, command: str, params: dict | None = None,
                numbered: bool = False, tail: Callable[[list], list[dict]] | None = None) -> list[Any]:
    """Run the ops function `fn(records, reject, where)` (with `numbered`, `fn(records, reject,
    where, partition)`) on the chosen engine; returns what it returned, one item per partition
    in input order (one in all, locally). `tail(results)` gives records written after all the
    others (a report's summary record): locally at the end of the output, on Spark as one more
    part file, so the parts read in order are still the local output."""
    if engine.spark:
        from llmtools.engines import spark

        return spark.run_records(engine, io, job, fn, command, params, numbered=numbered, tail=tail)
    from llmtools.engines import local

    return local.run_records(job, fn, numbered=numbered, tail=tail)
