"""Peak RSS and CPU time of one forward/backward pass against the tokens in it (smollm2, LoRA).

What sets `finetune`'s peak memory is the largest forward/backward pass: the activations kept
for backward grow with the tokens in the pass. This loads smollm2 with the bench's LoRA config
through llmtools' own loader, then runs padding-free passes of growing size (records from the
mixed-length set laid end to end, completion-only labels) and prints, after each, the process's
peak RSS (getrusage: it only grows, hence the growing sizes) and the CPU seconds per 1000 tokens.
With --gradient-checkpointing the decoder layers keep only their inputs.

    .venv/bin/python benchmarks/finetune/pass_memory.py                 # 256 512 1024 2048 tokens
    .venv/bin/python benchmarks/finetune/pass_memory.py --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,512,1024,2048")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import bench

    from llmtools.models import hf_dir
    from llmtools.ops.finetune import Fields, Settings
    from llmtools.ops.finetune import dataset as fd
    from llmtools.ops.finetune import training as tr
    from llmtools.ops.finetune.distributed import Dist

    path = tempfile.mktemp(suffix=".jsonl")
    bench.mixed_lengths(path, 64)
    records = [json.loads(x) for x in Path(path).read_text().splitlines()]
    s = Settings(max_seq_len=512, batch_size=4, gradient_checkpointing=args.gradient_checkpointing)
    m = tr._load_models(records, [], "prompt-completion", s, hf_dir("smollm2"), None, Fields(), torch.device("cpu"), Dist(), None)
    rows = m.prepared.train_rows
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    print(f"loaded: peak RSS {rss():.0f} MB; gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print("| tokens in the pass | target tokens | peak RSS MB | CPU s / 1000 tokens |\n|---|---|---|---|")
    k = 0
    for size in [int(x) for x in args.sizes.split(",")]:
        take: list = []
        while sum(len(r.input_ids) for r in take) + len(rows[k % len(rows)].input_ids) <= size:
            take.append(rows[k % len(rows)])
            k += 1
        batch = fd.collate(take, 0, packed=False, flat=m.flat)
        n = int(batch["input_ids"].numel())
        c0 = time.process_time()
        ce, _, n_target = m.model(**batch)
        (ce / max(n_target, 1)).backward()
        cpu = time.process_time() - c0
        m.core.zero_grad(set_to_none=True)
        print(f"| {n} | {n_target} | {rss():.0f} | {cpu / n * 1000:.2f} |", flush=True)


if __name__ == "__main__":
    main()
