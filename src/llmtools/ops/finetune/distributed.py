"""DDP under torchrun / accelerate launch: which process this is, and the few collectives used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def sum(self, value: float) -> float:
        if not self.enabled:
            return value
        import torch
        import torch.distributed as tdist

        t = torch.tensor([value], dtype=torch.float64)
        tdist.all_reduce(t)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0) > 0

    def broadcast(self, obj: Any) -> Any:
        """Send a picklable object from rank 0 to every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]


def dist_from_env() -> Dist:
    """Join the process group torchrun / accelerate launch describe in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as tdist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def dist_close(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()
