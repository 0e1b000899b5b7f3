"""The files of ``TrainStep.save_state`` (``gpt2_dual.pt.train_step``) and their helpers.

``save_state`` writes transformers' ``Trainer`` layout: ``optimizer.pt`` (the optimizer's
``state_dict()``), ``scheduler.pt`` (a ``LambdaLR`` state dict) and ``rng_state_<rank>.pth``
(each process's torch generators). Under FSDP2 the optimizer's full state dict comes from
``torch.distributed.checkpoint.state_dict`` keyed by parameter name; ``rekey`` turns it into
the ``state_dict()`` layout (parameters by index) and back. ``tf/train_state.py`` is the Keras
half.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gpt2_dual.errors import TrainingError

__all__ = [
    "OPTIMIZER_FILE", "RNG_FILE", "SCHEDULER_FILE", "read_state_file", "rekey", "state_dict_api",
]  # fmt: skip

OPTIMIZER_FILE = "optimizer.pt"  # optimizer.state_dict(), as transformers' Trainer writes it
SCHEDULER_FILE = "scheduler.pt"  # a LambdaLR state dict: last_epoch = optimizer steps taken
RNG_FILE = "rng_state_{rank}.pth"  # each process's torch generators


def read_state_file(path: Path) -> Any:
    """``torch.load`` of a state file (CPU tensors only); TrainingError if it is missing."""
    if not path.is_file():
        raise TrainingError(f"cannot resume: {path} is missing")
    return torch.load(path, map_location="cpu", weights_only=True)


def state_dict_api() -> Any:
    """``torch.distributed.checkpoint.state_dict``: FSDP2's full state dicts (imported only
    when sharding: about 1 s)."""
    from torch.distributed.checkpoint import state_dict

    return state_dict


def rekey(state: dict, key: Callable[[Any], Any]) -> dict:
    """An optimizer state dict with each parameter's key mapped (index <-> name)."""
    return {
        "state": {key(k): value for k, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [key(k) for k in group["params"]]}
            for group in state["param_groups"]
        ],
    }
