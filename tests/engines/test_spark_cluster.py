"""A real standalone cluster: a Spark master and two one-core workers started with the daemon
script that ships in the pyspark package (`sbin/spark-daemon.sh`, what start-master.sh and
start-worker.sh call), and `llmtools dedup --engine spark --master spark://...` run against it
from a separate driver process."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.engines.test_spark_records import parts
from tests.helpers.dedup_corpus import grouped_docs, pair_f1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    MASTER = "org.apache.spark.deploy.master.Master"
    WORKER = "org.apache.spark.deploy.worker.Worker"

    def __init__(self, root: Path) -> None:
        import pyspark

        self.home = os.path.dirname(pyspark.__file__)
        self.daemon = os.path.join(self.home, "sbin", "spark-daemon.sh")
        self.port, self.ui = free_port(), free_port()
        self.env = dict(os.environ, SPARK_HOME=self.home, SPARK_LOG_DIR=str(root / "logs"), SPARK_PID_DIR=str(root / "pids"),
                        SPARK_IDENT_STRING=f"llmtools-test-{os.getpid()}", SPARK_WORKER_DIR=str(root / "work"),
                        SPARK_NO_DAEMONIZE="", PYSPARK_PYTHON=sys.executable)
        self.env.pop("SPARK_NO_DAEMONIZE")
        self.started: list[tuple[str, int]] = []

    def _daemon(self, action: str, cls: str, instance: int, *args: str) -> None:
        subprocess.run(["bash", self.daemon, action, cls, str(instance), *args], env=self.env, check=action == "start",
                       capture_output=True, timeout=120)

    def start(self) -> str:
        self._daemon("start", self.MASTER, 1, "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui))
        self.started.append((self.MASTER, 1))
        url = f"spark://127.0.0.1:{self.port}"
        for i in (1, 2):
            self._daemon("start", self.WORKER, i, "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                         "--webui-port", str(free_port()), url)
            self.started.append((self.WORKER, i))
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json", timeout=5))
                if sum(w["state"] == "ALIVE" for w in state.get("workers", [])) == 2:
                    return url
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError("the two workers did not register with the master in 180 s")

    def stop(self) -> None:
        for cls, instance in reversed(self.started):
            self._daemon("stop", cls, instance)


@pytest.mark.slow
@pytest.mark.sysdep("java")
def test_dedup_on_a_standalone_cluster_uses_both_workers(tmp_path):
    pytest.importorskip("pyspark")
    texts, groups = grouped_docs(20_000, size=1024, words_per_edit=300, seed=21)
    data = tmp_path / "docs.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"id": i, "text": t}) + b"\n" for i, t in enumerate(texts)))
    cluster = Cluster(tmp_path)
    try:
        url = cluster.start()
        events = tmp_path / "events"
        events.mkdir()
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "llmtools", "dedup", "--mark", "--id-field", "id", "-v", "--engine", "spark",
             "--master", url, "--spark-conf", "spark.executor.memory=768m", "--spark-conf", "spark.eventLog.enabled=true",
             "--spark-conf", f"spark.eventLog.dir=file://{events}", "--spark-conf", "spark.eventLog.compress=false",
             "--spark-conf", "spark.eventLog.rolling.enabled=false", "-o", str(out), str(data)],
            capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        cluster.stop()
    records = [orjson.loads(x) for x in parts(out).splitlines()]
    assert [r["id"] for r in records] == list(range(20_000))
    assert pair_f1(groups, [r["dup_cluster"] for r in records])[2] > 0.9
    # Both workers ran tasks: the event log names the executor of every finished task.
    executors = set()
    hosts_by_executor = {}
    logs = [p for p in glob.glob(str(events / "**" / "*"), recursive=True)
            if os.path.isfile(p) and not os.path.basename(p).startswith((".", "appstatus"))]
    assert logs
    for path in logs:
        for line in open(path, encoding="utf-8"):
            event = json.loads(line)
            if event.get("Event") == "SparkListenerTaskEnd":
                executors.add(event["Task Info"]["Executor ID"])
            if event.get("Event") == "SparkListenerExecutorAdded":
                hosts_by_executor[event["Executor ID"]] = event["Executor Info"]["Host"]
    assert len(executors - {"driver"}) == 2, (executors, hosts_by_executor)
