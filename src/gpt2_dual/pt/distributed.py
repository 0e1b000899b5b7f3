"""The processes of ``TrainStep`` (``gpt2_dual.pt.train_step``): torchrun's environment.

``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` give the process
group: gloo on CPU, nccl on CUDA. A process group that already exists is used as it is.
``tf/distributed.py`` is the Keras half (``TF_CONFIG`` and ``tf.distribute``).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "process_rank"]


def process_rank() -> int:
    """This process's rank as its launcher set it (torchrun's ``RANK``; 0 alone), read before
    any process group exists."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def init_distributed() -> tuple[int, int, int, bool]:
    """``(rank, world_size, local_rank, created)`` from torchrun's environment."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return dist.get_rank(), dist.get_world_size(), local, False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, local, True
