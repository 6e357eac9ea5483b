"""augment --engine spark: the same bytes as the local command (seeds from each record's place in
the whole input, across partitions and files), the same rejects, nothing lost, and LLM methods
through an http endpoint the executors call."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from llmtools.models.base import Completion, ModelIdentity
from tests.conftest import run_cli
from tests.engines.test_spark_records import parts, write
from tests.helpers.openai_server import serve_backend

WORDS = ("the quick brown fox jumps over a lazy dog while happy children play in the big green park "
         "near old houses and the river bank").split()


def corpus(seed: int, n: int, bad_every: int = 0) -> list[bytes]:
    """Short texts, some without an id (their variants are traced by "source:line"), blank lines,
    and every `bad_every`th line bad (invalid JSON, no text, a number for text)."""
    rng = random.Random(seed)
    bad = [b"{broken\n", b'{"other": 1}\n', b'{"text": 7, "id": "n"}\n']
    lines = []
    for i in range(n):
        if i % 23 == 4:
            lines.append(b"\n")
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(bad[(i // bad_every) % len(bad)])
            continue
        rec: dict = {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))), "label": i % 3}
        if i % 4:
            rec["id"] = f"{seed}-{i}"
        lines.append(orjson.dumps(rec) + b"\n")
    return lines


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug-in")
    # a.jsonl is split by textFile (several partitions); b is gzipped (one partition).
    return [write(root / "a.jsonl", corpus(1, 700, bad_every=41)), write(root / "b.jsonl.gz", corpus(2, 60, bad_every=17))]


def nonblank(paths) -> int:
    import gzip

    return sum(1 for p in paths for line in (gzip.open(p) if p.suffix == ".gz" else open(p, "rb")) if line.strip())


@pytest.mark.sysdep("java")
@pytest.mark.sysdep("wordnet")
@pytest.mark.parametrize("on_error", ["skip", "keep"])
def test_synonym_and_eda_on_spark_are_byte_identical_to_local(spark, inputs, tmp_path, on_error):
    opts = ["--method", "synonym,eda", "-n", "2", "--seed", "5", "--on-error", on_error, "--max-similarity", "0.9", "-q"]
    local_rej = tmp_path / "local-rejects.jsonl"
    local = run_cli(["augment", *opts, "--rejects", local_rej, *inputs])
    assert local.exit_code == 0, local.stderr
    out, rej = tmp_path / "out", tmp_path / "rej"
    res = run_cli(["augment", *opts, "--engine", "spark", "-o", out, "--rejects", rej, *inputs])
    assert res.exit_code == 0, res.stderr
    assert len([p for p in out.iterdir() if p.name.startswith("part-")]) >= 3  # a.jsonl was split
    assert parts(out) == local.stdout_bytes and local.stdout_bytes
    assert parts(rej) == local_rej.read_bytes()
    records = [orjson.loads(line) for line in parts(out).splitlines()]
    rejects = [orjson.loads(line) for line in parts(rej).splitlines()]
    # Variants without an id are traced to their file and line, as locally.
    assert any(isinstance(r.get("augmented_from"), str) and r["augmented_from"].startswith(f"{inputs[0]}:")
               for r in records)
    # Nothing lost: every non-blank line is an original in the output or a bad-input reject.
    originals = [r for r in records if "augmentation" not in r]
    bad = [r for r in rejects if not r.get("variant")]
    assert nonblank(inputs) == len(originals) + len(bad)
    assert (on_error == "keep") == any(r.get("text") == 7 for r in originals)
    manifest = json.loads((out / "llmtools-manifest.json").read_text())
    assert manifest["kind"] == "augment output" and manifest["params"]["seed"] == 5


@pytest.mark.sysdep("java")
@pytest.mark.sysdep("wordnet")
def test_fail_names_the_bad_line_in_a_later_partition(spark, tmp_path):
    lines = corpus(3, 700)
    lines[-30] = b"[1]\n"
    src = write(tmp_path / "a.jsonl", lines)
    local = run_cli(["augment", src])
    assert local.exit_code == 3
    out = tmp_path / "out"
    res = run_cli(["augment", "--engine", "spark", "-o", out, src])
    assert res.exit_code == 3, res.stderr
    assert f"{src}:{len(lines) - 29}: expected a JSON object" in res.stderr
    assert res.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]
    assert not out.exists()


class _Rewriter:
    """Behind the shared OpenAI test server: "paraphrases" by swapping a few words."""

    identity = ModelIdentity(name="fake-rewriter", format="fake")

    def chat(self, messages, params):
        text = messages[-1]["content"].rsplit("Text: ", 1)[-1]
        return Completion("Paraphrase: " + text.replace("quick", "fast").replace("big", "large"),
                          prompt_tokens=3, completion_tokens=3, finish_reason="stop")


@pytest.mark.sysdep("java")
def test_paraphrase_through_an_http_endpoint_matches_local(spark, tmp_path):
    src = write(tmp_path / "a.jsonl", corpus(4, 700))
    opts = ["--method", "paraphrase", "--seed", "2", "--batch-size", "4", "-q"]
    with serve_backend(_Rewriter()) as url:
        local = run_cli(["augment", *opts, "-m", url, src])
        out = tmp_path / "out"
        res = run_cli(["augment", *opts, "-m", url, "--engine", "spark", "-o", out, src])
    assert local.exit_code == 0 and res.exit_code == 0, res.stderr
    assert parts(out) == local.stdout_bytes
    variants = [orjson.loads(line) for line in local.stdout_bytes.splitlines() if b'"augmentation"' in line]
    assert variants and variants[0]["augmentation"]["params"]["model"]["name"] == "fake-rewriter"


@pytest.mark.slow
@pytest.mark.sysdep("java")
def test_paraphrase_with_the_tiny_model_loaded_per_partition(spark, tiny_model_dir, tmp_path):
    src = write(tmp_path / "a.jsonl", corpus(5, 40))
    opts = ["--method", "paraphrase", "-m", tiny_model_dir, "--max-tokens", "6", "--seed", "1", "--batch-size", "1",
            "--no-keep-original", "-q"]
    local = run_cli(["augment", *opts, src])
    assert local.exit_code == 0, local.stderr
    out = tmp_path / "out"
    res = run_cli(["augment", *opts, "--engine", "spark", "-o", out, src])
    assert res.exit_code == 0, res.stderr
    assert len([p for p in out.iterdir() if p.name.startswith("part-")]) == 2
    assert parts(out) == local.stdout_bytes and local.stdout_bytes
    assert all(json.loads(line)["augmentation"]["params"]["model"]["format"] == "hf" for line in parts(out).splitlines())
