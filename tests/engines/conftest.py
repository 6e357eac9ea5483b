"""One local Spark session for all the Spark tests: starting a JVM costs seconds.

The commands find it running (SparkContext's active context) and use it instead of starting
their own, so an in-process `run_cli([... "--engine", "spark"])` costs only its jobs."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture(scope="session")
def spark():
    from tests.helpers import sysdeps

    sysdeps.require("java")
    pytest.importorskip("pyspark")
    from llmtools.engines.spark import EngineConfig, SparkRun

    # Two cores, few shuffle partitions: the test data is small, and the machine is shared.
    config = EngineConfig("spark", "local[2]", ["spark.sql.shuffle.partitions=4", "spark.default.parallelism=2",
                                                "spark.ui.enabled=false"])
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    run = SparkRun(config, "tests", quiet=True)
    run.__enter__()
    yield run.spark
    run.owned = True
    run.__exit__(None, None, None)
