"""The process group of a ``torchrun`` launch, started in one place for every command
(predict, evaluation, training): who this process is, and a collective yes/no."""
from __future__ import annotations

import datetime
import os
from typing import Optional, Tuple


def launched_rank() -> int:
    """This process's rank under torchrun (0 otherwise), known before any group exists."""
    return int(os.environ.get('RANK', '0'))


def launched_world() -> int:
    """How many processes torchrun started (1 when it did not)."""
    return int(os.environ.get('WORLD_SIZE', '1'))


def process_group(backend: str = 'gloo', timeout: Optional[datetime.timedelta] = None
                  ) -> Tuple[int, int, int]:
    """``(rank, world size, local rank)``: under torchrun the group is started once with
    ``backend`` (``'nccl'`` pins this process's GPU first); otherwise ``(0, 1, 0)`` and no
    group."""
    world = launched_world()
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if world == 1 and 'RANK' not in os.environ:
        return 0, 1, 0
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        if backend == 'nccl':
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, **({'timeout': timeout} if timeout else {}))
    return dist.get_rank(), dist.get_world_size(), local_rank


def all_agree(ok: bool) -> bool:
    """Whether every process of the group passed ``ok`` (an all-reduce)."""
    import torch
    import torch.distributed as dist
    flag = torch.tensor([1 if ok else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
