"""`finetune --search`: the space syntax, a seeded 4-trial Optuna search on the tiny model (same
trials twice, a clearly bad trial pruned, the best config reloads), and two processes sharing one
SQLite study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmtools import errors
from llmtools.ops.finetune import parse_space

WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
ROOT = Path(__file__).resolve().parents[2]


def _data(path: Path, n: int = 24) -> str:
    path.write_text("".join(json.dumps({"prompt": f"hello {WORDS[i % 12]} and", "completion": f" {WORDS[(i * 5) % 12]} goodbye"}) + "\n"
                            for i in range(n)))
    return str(path)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT / "src"))
    env.pop("WORLD_SIZE", None)
    return env


# --------------------------------------------------------------------------- the space


def test_inline_space():
    dims = {d.name: d for d in parse_space("lr=1e-5..1e-3:log lora_r=8,16,32; batch-size=2,4 epochs=1..3 scheduler=linear,cosine")}
    assert (dims["lr"].kind, dims["lr"].low, dims["lr"].high, dims["lr"].log) == ("float", 1e-5, 1e-3, True)
    assert dims["lora_r"].choices == (8, 16, 32) and dims["batch_size"].choices == (2, 4)
    assert (dims["epochs"].kind, dims["epochs"].low, dims["epochs"].high, dims["epochs"].log) == ("int", 1, 3, False)
    assert dims["scheduler"].choices == ("linear", "cosine")


def test_yaml_space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  lr: 1e-5..1e-3:log\n  lora_r: [8, 16]\n  packing: [true, false]\n  lora_dropout: {low: 0.0, high: 0.2}\n")
    dims = {d.name: d for d in parse_space(str(path))}
    assert dims["lr"].log and dims["lora_r"].choices == (8, 16) and dims["packing"].choices == (True, False)
    assert (dims["lora_dropout"].kind, dims["lora_dropout"].low, dims["lora_dropout"].high) == ("float", 0.0, 0.2)


@pytest.mark.parametrize("spec, message", [
    ("base=a,b", "cannot be searched"),
    ("lr=1e-3..1e-5", "from low to high"),
    ("lr=0..1e-3:log", "above 0"),
    ("epochs=1.5..3", "whole numbers"),
    ("lora_r=8,x", "whole numbers"),
    ("lr=1e-5..1e-3:cube", "unknown range option"),
    ("lora_r=0,8", "--lora-r must be at least 1"),
    ("lr", "NAME=VALUES"),
    ("lr=1e-4 lr=1e-3", "named twice"),
])
def test_bad_spaces_are_usage_errors(spec, message):
    with pytest.raises(errors.UsageError, match=message):
        parse_space(spec)


def test_search_usage_errors(cli, tiny_model_dir, tmp_path):
    data = _data(tmp_path / "t.jsonl", 8)
    base = ["finetune", "--base", tiny_model_dir, "-o", tmp_path / "o", "--max-steps", "2", data]
    res = cli([*base, "--search", "lr=1e-4,1e-3"])
    assert res.exit_code == 2 and "--eval-file or --eval-fraction" in res.stderr
    res = cli([*base, "--search", "colour=red", "--eval-fraction", "0.25"])
    assert res.exit_code == 2 and "cannot be searched" in res.stderr
    res = cli([*base, "--search", "lr=1e-4,1e-3", "--eval-fraction", "0.25", "--search-metric", "judge"])
    assert res.exit_code == 2 and "--search-metric" in res.stderr
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- a real search

SEARCH = ["--search", "lr=1e-9,5e-3 lora_r=4,8", "--trials", "4", "--max-steps", "6", "--eval-every", "2",
          "--eval-fraction", "0.25", "--lora-r", "4", "--seed", "42"]


def _search(cli, tiny_model_dir, tmp_path, name):
    data = _data(tmp_path / "t.jsonl")
    res = cli(["finetune", "--base", tiny_model_dir, "-o", tmp_path / name, *SEARCH, data])
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    return [r for r in recs if r["type"] == "trial"], recs[-1]


@pytest.mark.slow
def test_seeded_search_repeats_prunes_the_bad_trial_and_its_config_reloads(cli, tiny_model_dir, tmp_path):
    trials, final = _search(cli, tiny_model_dir, tmp_path, "a")
    again, final_b = _search(cli, tiny_model_dir, tmp_path, "b")
    assert final["type"] == "search" and final["trials"] == 4 and len(trials) == 4
    assert [t["number"] for t in trials] == [0, 1, 2, 3]

    # --seed: the same proposals, the same outcomes
    assert [(t["params"], t["state"], t["step"]) for t in trials] == [(t["params"], t["state"], t["step"]) for t in again]
    for a, b in zip(trials, again):
        assert a["value"] == pytest.approx(b["value"], rel=1e-6)
    assert final["best"]["params"] == final_b["best"]["params"]

    # lr=1e-9 cannot learn: once two trials finished, such a trial is stopped at its first eval point
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    pruned = trials[3]
    assert pruned["params"]["lr"] == 1e-9 and pruned["step"] == 2 and pruned["output"] is None
    good = [t for t in trials if t["params"]["lr"] == 5e-3]
    assert pruned["value"] > max(t["value"] for t in good)
    assert final["complete"] == 3 and final["pruned"] == 1

    # the best trial: its settings as a --config file, its model as -o
    best = min((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert final["best"]["number"] == best["number"] and final["best"]["value"] == pytest.approx(best["value"])
    config = Path(final["best"]["config"])
    assert config == tmp_path / "a.best.yaml" and final["output"] == str(tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "llmtools-manifest.json").read_text())
    assert manifest["params"]["lr"] == best["params"]["lr"] and manifest["params"]["lora_r"] == best["params"]["lora_r"]
    assert manifest["metrics"]["eval_perplexity"] == pytest.approx(best["value"])
    kept = sorted(p.name for p in (tmp_path / "a.search").iterdir() if p.is_dir())
    assert kept == [f"trial-{best['number']:04d}"]  # the other trial models are gone

    data = str(tmp_path / "t.jsonl")
    rerun = cli(["finetune", "--config", config, "-o", tmp_path / "again", "--eval-fraction", "0.25", data])
    assert rerun.exit_code == 0, rerun.stderr
    assert rerun.records()[-1]["eval_perplexity"] == pytest.approx(best["value"], rel=1e-5)


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tiny_model_dir, tmp_path):
    optuna = pytest.importorskip("optuna")
    data = _data(tmp_path / "t.jsonl")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    procs = []
    for name in ("p1", "p2"):
        cmd = [sys.executable, "-m", "llmtools", "finetune", "--base", tiny_model_dir, "-o", str(tmp_path / name),
               "--search", "lr=1e-4..5e-3:log lora_r=4,8", "--trials", "6", "--max-steps", "4", "--eval-every", "2",
               "--eval-fraction", "0.25", "--search-storage", storage, "--study-name", "shared", data]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()))
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        outs.append([json.loads(line) for line in out.decode().splitlines()])
    ran = [[r["number"] for r in recs if r["type"] == "trial"] for recs in outs]
    assert not set(ran[0]) & set(ran[1]), ran  # no trial run twice
    assert sorted(ran[0] + ran[1]) == list(range(6))

    study = optuna.load_study(study_name="shared", storage=storage)
    counted = [t for t in study.trials if not t.user_attrs.get("over_budget")]
    assert sorted(t.number for t in counted) == list(range(6))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in counted)
    # the process that finished last saw every trial: it names the study's best, and has its model
    assert study.best_trial.number in {recs[-1]["best"]["number"] for recs in outs}
    for recs, name in zip(outs, ("p1", "p2")):
        assert recs[-1]["output"] == str(tmp_path / name) and (tmp_path / name / "llmtools-manifest.json").is_file()


@pytest.mark.slow
def test_a_score_metric_objective_is_the_best_models_score(cli, tiny_model_dir, tmp_path):
    data = _data(tmp_path / "t.jsonl")
    res = cli(["finetune", "--base", tiny_model_dir, "-o", tmp_path / "best", "--search", "lr=1e-3,5e-3", "--trials", "2",
               "--max-steps", "4", "--eval-fraction", "0.25", "--lora-r", "4", "--search-metric", "chrf", data])
    assert res.exit_code == 0, res.stderr
    trials, final = res.records()[:-1], res.records()[-1]
    assert final["direction"] == "maximize" and final["best"]["value"] == max(t["value"] for t in trials)

    # the value is chrF of the published model's greedy answers to the held-out prompts
    from llmtools.models import GenerationParams, load_model
    from llmtools.ops.finetune import dataset as fd
    from llmtools.ops.score import ScoreConfig, Scorer

    records = [json.loads(line) for line in Path(data).read_text().splitlines()]
    _, held = fd.split_eval(records, 0.25, 42)
    model = load_model(str(tmp_path / "best"), backend="torch")
    answers = model.generate_batch([r["prompt"] for r in held], GenerationParams(max_tokens=64, temperature=0.0))
    scorer = Scorer(ScoreConfig(metrics=["chrf"]))
    list(scorer.run({"prediction": a.text, "reference": r["completion"]} for a, r in zip(answers, held)))
    assert scorer.summary()["metrics"]["chrf"] == pytest.approx(final["best"]["value"], rel=1e-9)


@pytest.mark.slow
def test_ctrl_c_during_a_trial_exits_130_with_one_line(tiny_model_dir, tmp_path):
    import signal
    import time

    data = _data(tmp_path / "t.jsonl")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "llmtools", "finetune", "--base", tiny_model_dir, "-o", str(tmp_path / "o"),
                             "--search", "lr=1e-4,1e-3", "--trials", "3", "--max-steps", "5000", "--eval-every", "1",
                             "--eval-fraction", "0.25", "--search-storage", storage, data],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    log = tmp_path / "o.search" / "trial-0000.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    lines = [ln for ln in err.decode().splitlines() if ln.strip()]
    assert "Traceback" not in err.decode() and len(lines) == 1
    assert "interrupted during trial 0" in lines[0] and "run the same command to go on" in lines[0]
    assert out == b"" and not (tmp_path / "o.search" / "trial-0000.partial").exists()
