"""dedup --index redis://: a real redis-server, two concurrent worker processes, one copy kept."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time

import pytest
from tests.helpers import sysdeps

pytestmark = pytest.mark.redis

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    if not os.path.exists(REDIS):
        sysdeps.require("redis")
    port = _free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def _groups(seed: int, exact: bool, n_groups: int = 60, copies: int = 2, singles: int = 40):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    recs = []
    for g in range(n_groups):
        base = [rng.choice(vocab) for _ in range(80)]
        for c in range(copies):
            toks = list(base)
            if c and not exact:
                toks[-1] = rng.choice(vocab)  # near copies of each other too (Jaccard ~0.97)
            recs.append({"id": f"g{g}-{c}", "text": " ".join(toks)})
    for s in range(singles):
        recs.append({"id": f"s{s}", "text": " ".join(rng.choice(vocab) for _ in range(80))})
    rng.shuffle(recs)
    return recs


def _run_two_workers(url, recs, extra):
    """Both workers get one copy of each group at the same moment (stdin pipes, paced), so
    without an atomic claim both would find nothing in the index and both keep their copy."""
    import redis

    cmd = [sys.executable, "-m", "llmtools", "dedup", "--index", url, "--id-field", "id", "--unbuffered", *extra]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    client = redis.Redis.from_url(url.split("?")[0])
    deadline = time.time() + 60
    while len(client.client_list()) < 3 and time.time() < deadline:  # both workers connected
        time.sleep(0.05)
    by_group: dict[str, list[dict]] = {}
    for r in recs:
        by_group.setdefault(r["id"].split("-")[0], []).append(r)
    for members in by_group.values():
        for k, rec in enumerate(members):
            procs[k % 2].stdin.write((json.dumps(rec) + "\n").encode())
        for p in procs:
            p.stdin.flush()
        time.sleep(0.01)
    kept = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()
        kept += [json.loads(line)["id"] for line in out.splitlines()]
    return kept


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--exact"], []], ids=["exact", "near"])
def test_two_concurrent_workers_keep_one_copy_per_group(tmp_path, redis_url, extra):
    recs = _groups(1, exact=bool(extra))
    kept = _run_two_workers(redis_url + "?name=t" + ("x" if extra else "n"), recs, extra)
    group_ids = [k.split("-")[0] for k in kept if k.startswith("g")]
    assert len(kept) == len(set(kept))
    assert sorted(group_ids) == sorted({r["id"].split("-")[0] for r in recs if r["id"].startswith("g")})
    assert len([k for k in kept if k.startswith("s")]) == 40


def test_redis_index_persists_between_runs_and_checks_settings(cli, redis_url):
    url = redis_url + "?name=persist"
    first = cli(["dedup", "--index", url, "--id-field", "id", "-v"], input='{"id": "a", "text": "one two three four five six seven"}\n')
    assert first.exit_code == 0, first.stderr
    second = cli(["dedup", "--index", url, "--id-field", "id", "--rejects", "/dev/null", "-v"],
                 input='{"id": "b", "text": "one two three four five six seven"}\n{"id": "c", "text": "other text"}\n')
    assert [r["id"] for r in second.records()] == ["c"]
    assert "index before=1" in second.stderr and "index after=2" in second.stderr
    other = cli(["dedup", "--index", url, "--threshold", "0.5"], input='{"text": "x"}\n')
    assert other.exit_code == 2 and "other settings" in other.stderr


def test_redis_unreachable_is_runtime_failure(cli):
    port = _free_port()
    res = cli(["dedup", "--index", f"redis://127.0.0.1:{port}/0"], input='{"text": "x"}\n')
    assert res.exit_code == 1 and "cannot connect" in res.stderr


def test_redis_index_records_bands_and_checks_them(cli, redis_url):
    import redis

    url = redis_url + "?name=bands"
    text = '{"id": "a", "text": "one two three four five six seven eight"}\n'
    first = cli(["dedup", "--index", url, "--id-field", "id", "-v"], input=text)
    assert first.exit_code == 0 and "lsh bands=16x6" in first.stderr, first.stderr
    client = redis.Redis.from_url(redis_url)
    assert json.loads(client.get(b"llmtools:dedup:bands:config"))["bands"] == [16, 6]
    # asking for other bands on this index is refused, naming the index's bands
    other = cli(["dedup", "--index", url, "--bands", "9x13"], input=text)
    assert other.exit_code == 2 and "built with 16x6" in other.stderr and "--bands 16x6" in other.stderr
    again = cli(["dedup", "--index", url, "--id-field", "id", "--rejects", "/dev/null"], input=text.replace('"a"', '"b"'))
    assert again.exit_code == 0 and again.records() == []


def test_redis_index_without_recorded_bands_keeps_its_old_bands(cli, redis_url):
    """An index made before bands were recorded was banded 9x13 (at 0.8, 128 perms): a run at
    the defaults uses those bands and says so; one asking for bands is a usage error."""
    import redis

    url = redis_url + "?name=legacy"
    text = '{"id": "a", "text": "one two three four five six seven eight"}\n'
    made = cli(["dedup", "--index", url, "--id-field", "id", "--bands", "9x13"], input=text)
    assert made.exit_code == 0, made.stderr
    client = redis.Redis.from_url(redis_url)
    config = json.loads(client.get(b"llmtools:dedup:legacy:config"))
    del config["bands"]
    client.set(b"llmtools:dedup:legacy:config", json.dumps(config, sort_keys=True))
    res = cli(["dedup", "--index", url, "--id-field", "id", "-v", "--rejects", "/dev/null"], input=text.replace('"a"', '"b"'))
    assert res.exit_code == 0, res.stderr
    assert res.records() == []  # found through the index's own 9x13 bands
    assert "using the index's 9x13 LSH bands" in res.stderr and "lsh bands=9x13" in res.stderr
    asked = cli(["dedup", "--index", url, "--recall-target", "0.999"], input=text)
    assert asked.exit_code == 2 and "built with 9x13" in asked.stderr


def test_redis_decisions_equal_the_in_memory_index(cli, redis_url):
    """Batched Redis lookups (records of one batch seeing each other through a local table)
    decide exactly as the in-memory index: same records kept, same dup_of."""
    from tests.dedup.test_bands import _edited_pairs

    rng = random.Random(4)
    recs = _edited_pairs(13, 120, edits=3)
    for r in list(recs[:60]):  # copies of copies and a few near misses
        toks = r["text"].split()
        for _ in range(rng.choice([1, 2, 8])):
            toks[rng.randrange(len(toks))] = "zz"
        recs.append({"id": r["id"] + "x", "text": " ".join(toks)})
    rng.shuffle(recs)
    data = "".join(json.dumps(r) + "\n" for r in recs)
    local = cli(["dedup", "--id-field", "id", "--mark"], input=data)
    shared = cli(["dedup", "--id-field", "id", "--mark", "--index", redis_url + "?name=same"], input=data)
    assert local.exit_code == 0 and shared.exit_code == 0, shared.stderr
    assert shared.records() == local.records()
    assert sum(r["is_duplicate"] for r in local.records()) >= 100
    again = cli(["dedup", "--id-field", "id", "--index", redis_url + "?name=same"], input=data)
    assert again.exit_code == 0 and again.records() == []  # everything is in the index now
