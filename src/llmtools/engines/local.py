"""The local engine: one process, records streamed through `Job` (stdin or files in, stdout or
an atomic -o file out)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from llmtools.io import Job

PartitionFn = Callable[[Iterator[dict], Callable[..., None], Callable[[dict], str]], Iterator[dict]]


def run_records(job: Job, fn: PartitionFn, numbered: bool = False, tail: Any = None) -> list[Any]:
    """Run `fn(records, reject, where)` over all of the job's records, writing what it yields.

    The whole input is one partition: the result is a one-item list holding what `fn` returned
    (its statistics), as `engines.spark.run_records` returns one per partition."""
    results: list[Any] = []

    def records() -> Iterator[dict]:
        if numbered:
            from llmtools.engines import Partition

            results.append((yield from fn(job.records(), job.reject, job.where, Partition(0, job.bad))))
        else:
            results.append((yield from fn(job.records(), job.reject, job.where)))

    with job:
        job.write_all(records())
        if tail is not None:
            for record in tail(results):
                job.write(record)
    return results
