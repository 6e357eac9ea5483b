"""MLflow tracking for finetune, score and quantize, against a real `mlflow server` (SQLite backend,
local artifact folder) started by the tests; read back through mlflow.MlflowClient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmtools import errors, tracking
from tests.helpers.mlflow_server import MlflowServer, free_port

ROOT = Path(__file__).resolve().parents[1]
WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


def _records(n: int = 16) -> list[dict]:
    return [{"prompt": f"hello {WORDS[i % 12]} and", "completion": f" {WORDS[(i * 5) % 12]} goodbye"} for i in range(n)]


def _write(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT / "src"), **extra)
    return env


# --------------------------------------------------------------------------- options, no server


def test_track_config_from_flag_and_environment():
    off = tracking.TrackConfig.parse(None, environ={})
    assert not off.enabled
    env_on = tracking.TrackConfig.parse(None, environ={"MLFLOW_TRACKING_URI": "http://x"})
    assert env_on.enabled and env_on.backend == "mlflow" and env_on.experiment is None and not env_on.explicit
    named = tracking.TrackConfig.parse("mlflow:sweeps", required=True, log_model=True, environ={})
    assert (named.backend, named.experiment, named.required, named.log_model, named.explicit) == ("mlflow", "sweeps", True, True, True)
    assert not tracking.TrackConfig.parse("none", environ={"MLFLOW_TRACKING_URI": "http://x"}).enabled
    with pytest.raises(errors.UsageError, match="unknown tracker"):
        tracking.TrackConfig.parse("wandb", environ={})
    with pytest.raises(errors.UsageError, match="--track-required needs tracking"):
        tracking.TrackConfig.parse(None, required=True, environ={})


def test_values_become_params_and_metrics():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": None, "e": [1, 2]}
    assert tracking.param_value(1e-4) == "0.0001" and tracking.param_value(None) == "" and tracking.param_value([3, 1]) == "[3,1]"
    assert len(tracking.param_value("x" * 10000)) == tracking.PARAM_MAX_CHARS
    got = tracking.numeric_metrics({"type": "train", "step": 4, "loss": 1.5, "ok": True, "tag": "x", "nan": float("nan"),
                                    "ppl": {"before": 3, "after": 4.5}})
    assert got == {"loss": 1.5, "ppl.before": 3.0, "ppl.after": 4.5}
    assert tracking.safe_uri("https://user:secret@host:5000/path") == "https://host:5000/path"
    assert tracking.safe_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_run_status_follows_how_the_command_ended():
    assert tracking.status_for(None) == "FINISHED"
    assert tracking.status_for(errors.GateFailed("gate")) == "FINISHED"
    assert tracking.status_for(KeyboardInterrupt()) == "KILLED"
    assert tracking.status_for(errors.LLMToolsError("stop", errors.ExitCode.INTERRUPTED)) == "KILLED"
    assert tracking.status_for(errors.BadInputError("bad")) == "FAILED"


def test_missing_mlflow_warns_from_the_environment_and_fails_when_asked_for(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    warned: list[str] = []
    run = tracking.start_run(tracking.TrackConfig.parse(None, environ={"MLFLOW_TRACKING_URI": "http://x"}), "score", warn=warned.append)
    assert not run.active and run.info() is None
    assert len(warned) == 1 and "mlflow is not installed" in warned[0] and "llmtools[track]" in warned[0]
    with pytest.raises(errors.MissingDependency, match=r"llmtools\[track\]"):
        tracking.start_run(tracking.TrackConfig.parse("mlflow", environ={}), "score", warn=warned.append)


def test_track_flags_need_tracking(cli):
    res = cli(["score", "--metric", "exact_match", "--track-required"], input='{"prediction": "a", "reference": "a"}\n')
    assert res.exit_code == 2 and "--track-required needs tracking" in res.stderr


def test_tracking_off_imports_no_mlflow():
    code = ("import sys; from llmtools.cli import main\n"
            "try:\n    main(['score', '--metric', 'exact_match', '-q'])\nexcept SystemExit as e:\n    code = e.code\n"
            "sys.stderr.write('MLFLOW=' + str('mlflow' in sys.modules) + '\\n'); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], input=b'{"prediction": "a", "reference": "a"}\n',
                          capture_output=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "MLFLOW=False" in proc.stderr.decode()


# --------------------------------------------------------------------------- a real MLflow server

mlflow_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mlflow") is None, reason="mlflow is not installed (pip install 'llmtools[track]')"
)


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    pytest.importorskip("mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tracked_finetune(mlflow_url, tiny_model_dir, tmp_path_factory):
    """One tracked fine-tune of the tiny model, with the model logged too."""
    from tests.conftest import run_cli

    tmp = tmp_path_factory.mktemp("tracked")
    data = _write(tmp / "train.jsonl", _records())
    out = tmp / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        res = run_cli(["finetune", "--base", tiny_model_dir, "-o", out, "--max-steps", "6", "--log-every", "2",
                       "--eval-every", "3", "--eval-fraction", "0.25", "--lr", "1e-3", "--lora-r", "4",
                       "--track", "mlflow:finetune-tests", "--track-model", data])
    assert res.exit_code == 0, res.stderr
    return res, out


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _artifact_json(client, run_id: str, path: str, tmp: Path) -> dict:
    local = client.download_artifacts(run_id, path, str(tmp))
    return json.loads(Path(local).read_text())


def test_finetune_run_holds_params_metrics_and_artifacts(tracked_finetune, mlflow_url, tmp_path):
    res, out = tracked_finetune
    recs = res.records()
    final = recs[-1]
    run_id = final["tracking"]["run_id"]
    manifest = json.loads((out / "llmtools-manifest.json").read_text())
    assert manifest["tracking"]["run_id"] == run_id and manifest["tracking"]["tracking_uri"] == mlflow_url

    client = _client(mlflow_url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "finetune-tests"
    assert run.data.tags["llmtools.command"] == "finetune" and run.info.run_name == "model"

    # params: every resolved setting of the manifest, the base model identity and the data hashes
    params = run.data.params
    for key, value in manifest["params"].items():
        assert params[key] == tracking.param_value(value), key
    assert params["lr"] == "0.001" and params["lora_r"] == "4" and params["total_steps"] == "6"
    assert params["base_model.sha256"] == manifest["base_model"]["sha256"]
    assert params["train_sha256"] == manifest["inputs"]["train"]["sha256"]
    assert params["eval_sha256"] == manifest["inputs"]["eval"]["sha256"]

    # metrics: the JSONL log records, step by step
    train = [r for r in recs if r.get("loss") is not None]
    evals = [r for r in recs if r.get("eval_perplexity") is not None and r["type"] != "final"]
    assert [r["step"] for r in train] == [2, 4, 6] and [r["step"] for r in evals] == [0, 3, 6]
    assert _history(client, run_id, "loss") == [(r["step"], r["loss"]) for r in train]
    assert _history(client, run_id, "lr") == [(r["step"], r["lr"]) for r in train]
    assert _history(client, run_id, "tokens_per_s") == [(r["step"], r["tokens_per_s"]) for r in train]
    assert _history(client, run_id, "eval_perplexity") == [(r["step"], r["eval_perplexity"]) for r in evals]
    assert _history(client, run_id, "train_loss") == [(6, final["train_loss"])]

    # artifacts: the manifest, the final record and (--track-model) the model files
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"llmtools-manifest.json", "final.json", "model"} <= names
    assert _artifact_json(client, run_id, "llmtools-manifest.json", tmp_path) == manifest
    assert _artifact_json(client, run_id, "final.json", tmp_path) == final
    model_files = sorted(Path(a.path).name for a in client.list_artifacts(run_id, "model"))
    assert model_files == sorted(os.listdir(out))


def test_score_and_quantize_runs_link_to_the_training_run(tracked_finetune, mlflow_url, cli, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    res, out = tracked_finetune
    train_run = res.records()[-1]["tracking"]["run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    client = _client(mlflow_url)

    texts = "".join(json.dumps({"prediction": f"hello {w} and one goodbye", "reference": f"hello {w} goodbye"}) + "\n" for w in WORDS)
    scored = cli(["score", "--metric", "exact_match,chrf,perplexity", "-m", str(out), "--summary-only",
                  "--fail-over", "perplexity=1e9"], input=texts)
    assert scored.exit_code == 0, scored.stderr
    summary = scored.records()[-1]
    run = client.get_run(summary["tracking"]["run_id"])
    assert run.info.status == "FINISHED" and client.get_experiment(run.info.experiment_id).name == "llmtools-score"
    assert run.data.tags["llmtools.model_run_id"] == train_run and run.data.tags["llmtools.gates"] == "passed"
    assert run.data.params["metrics"] == '["exact_match","chrf","perplexity"]' and run.data.params["model"] == str(out)
    for key, value in summary["metrics"].items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-12), key
    assert _artifact_json(client, run.info.run_id, "summary.json", tmp_path) == summary

    gguf = tmp_path / "m.q8.gguf"
    # --no-eval: the conversion and the report's sizes are what this checks (the evaluation has its own tests)
    quant = cli(["quantize", str(out), "--to", "q8_0", "-o", gguf, "--no-eval", "--track-model"])
    assert quant.exit_code == 0, quant.stderr
    report = quant.records()[-1]
    run_id = report["tracking"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["llmtools.model_run_id"] == train_run
    assert run.data.params["to"] == "q8_0" and run.data.params["source.sha256"] == report["source"]["sha256"]
    assert run.data.params["no_eval"] == "True" and run.data.params["output"] == str(gguf)
    assert run.data.metrics["bits_per_weight.after"] == pytest.approx(report["bits_per_weight"]["after"], rel=1e-12)
    assert run.data.metrics["output_bytes"] == report["output_bytes"] == gguf.stat().st_size
    assert run.data.metrics["compression_ratio"] == pytest.approx(report["compression_ratio"], rel=1e-12)
    sidecar = json.loads(Path(report["manifest"]).read_text())
    assert sidecar["tracking"]["run_id"] == run_id
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.json", "m.q8.gguf", "m.q8.gguf.manifest.json"} <= names
    assert _artifact_json(client, run_id, "report.json", tmp_path) == report
    logged = Path(client.download_artifacts(run_id, "m.q8.gguf", str(tmp_path / "dl")))
    assert logged.read_bytes() == gguf.read_bytes()


@pytest.mark.slow
def test_resume_continues_the_same_mlflow_run(mlflow_url, cli, tiny_model_dir, tmp_path, monkeypatch):
    data = _write(tmp_path / "t.jsonl", _records(12))
    common = ["--base", tiny_model_dir, "-o", tmp_path / "run", "--max-steps", "6", "--log-every", "1", "--save-every", "2",
              "--lr", "1e-3", "--lora-r", "4", "--track", "mlflow:resume-tests", data]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    from llmtools.ops.finetune import training

    monkeypatch.setattr(training, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("power cut")))
    broken = cli(["finetune", *common])
    assert broken.exit_code == 1
    first_id = json.loads((tmp_path / "run.partial" / "tracking.json").read_text())["run_id"]
    client = _client(mlflow_url)
    assert client.get_run(first_id).info.status == "FAILED"
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    import shutil

    shutil.rmtree(tmp_path / "run.partial" / "checkpoints" / "step-00000004")  # resume from step 2: replay 3-6
    resumed = cli(["finetune", "--resume", *common])
    assert resumed.exit_code == 0, resumed.stderr
    final = resumed.records()[-1]
    assert final["tracking"]["run_id"] == first_id
    run = client.get_run(first_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    history = client.get_metric_history(first_id, "loss")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4, 5, 6]
    latest = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
    assert {r["step"]: r["loss"] for r in resumed.records() if r["type"] == "train"} == {s: latest[s] for s in (3, 4, 5, 6)}
    manifest = json.loads((tmp_path / "run" / "llmtools-manifest.json").read_text())
    assert manifest["tracking"]["run_id"] == first_id


def test_unreachable_server_warns_or_stops_before_training(cli, tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    data = _write(tmp_path / "t.jsonl", _records(8))
    args = ["finetune", "--base", tiny_model_dir, "--max-steps", "2", "--lora-r", "4", data]
    started = time.monotonic()
    stopped = cli([*args, "-o", tmp_path / "req", "--track-required"])
    assert stopped.exit_code == 1 and time.monotonic() - started < 60
    lines = [ln for ln in stopped.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach MLflow" in lines[0] and "--track-required" in lines[0] and "Traceback" not in stopped.stderr
    assert stopped.records() == [] and not (tmp_path / "req").exists() and not (tmp_path / "req.partial").exists()

    went_on = cli([*args, "-o", tmp_path / "ok"])
    assert went_on.exit_code == 0, went_on.stderr
    warnings = [ln for ln in went_on.stderr.splitlines() if "tracking" in ln]
    assert len(warnings) == 1 and "cannot reach MLflow" in warnings[0] and "going on without tracking" in warnings[0]
    assert "tracking" not in went_on.records()[-1]
    assert "tracking" not in json.loads((tmp_path / "ok" / "llmtools-manifest.json").read_text())

    scored = cli(["score", "--metric", "exact_match"], input='{"prediction": "a", "reference": "a"}\n')
    assert scored.exit_code == 0 and "cannot reach MLflow" in scored.stderr


def test_search_is_one_run_with_a_child_run_per_trial(mlflow_url, cli, tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    data = _write(tmp_path / "t.jsonl", _records())
    res = cli(["finetune", "--base", tiny_model_dir, "-o", tmp_path / "best", "--search", "lr=1e-3,5e-3", "--trials", "2",
               "--max-steps", "2", "--eval-fraction", "0.25", "--lora-r", "4", "--track", "mlflow:search-tests", data])
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    trials, final = recs[:-1], recs[-1]
    client = _client(mlflow_url)
    parent = client.get_run(final["tracking"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["search.trials"] == "2"
    assert parent.data.metrics["best_value"] == pytest.approx(final["best"]["value"])
    assert _history(client, parent.info.run_id, "trial_value") == [(t["number"], t["value"]) for t in trials]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_id for c in children) == sorted(t["tracking"]["run_id"] for t in trials)
    for child, trial in zip(sorted(children, key=lambda c: int(c.data.tags["llmtools.trial"])), trials):
        assert child.data.params["trial.lr"] == tracking.param_value(trial["params"]["lr"])
        assert child.data.params["lr"] == tracking.param_value(trial["params"]["lr"])
        assert child.data.metrics["eval_perplexity"] == pytest.approx(trial["eval_perplexity"])
