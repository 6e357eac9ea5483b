"""torch.compile on llmtools' training step: compile time and step time against eager.

Loads smollm2 with the bench's LoRA through llmtools' loader (64 records of the bundled task,
seq 128, batch 4, 1 thread), compiles each decoder layer (`dynamic=True`; the loss module's
Python stays eager) when run with `compile`, and prints wall and CPU seconds of six optimizer steps.

    .venv/bin/python benchmarks/finetune/compile_time.py eager
    .venv/bin/python benchmarks/finetune/compile_time.py compile
"""
import sys, json, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from llmtools.models import hf_dir
from llmtools.ops.finetune import Fields, Settings
from llmtools.ops.finetune import training as tr
from llmtools.ops.finetune.dataset import Schedule
from llmtools.ops.finetune.distributed import Dist
mode = sys.argv[1]
records = [json.loads(x) for x in (Path(__file__).resolve().parents[2] / "src/llmtools/data/finetune/orders-train.jsonl").read_text().splitlines()[:64]]
s = Settings(max_seq_len=128, batch_size=4, seed=42)
m = tr._load_models(records, [], "prompt-completion", s, hf_dir("smollm2"), None, Fields(), torch.device("cpu"), Dist(), None)
if mode == "compile":
    base = m.core.get_base_model()
    for layer in base.model.layers:  # the decoder layers: the loss module's Python stays eager
        layer.compile(dynamic=True)
sched = Schedule(len(m.prepared.train_rows), 4, 1, 42)
opt, sch = tr.build_optimizer(m.core, s, sched.steps_per_epoch)
local = {"window_ce": 0.0, "window_tokens": 0, "window_input": 0, "window_kl": 0.0}
step = lambda i: tr._optimizer_step(m, s, i, sched, opt, sch, tr._autocast(torch.device("cpu")), torch.device("cpu"), Dist(), 0, local)
for i in range(6):
    t0 = time.perf_counter(); c0 = time.process_time(); n = step(i)[2]
    print(json.dumps({"mode": mode, "step": i, "tokens": n, "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)}), flush=True)
