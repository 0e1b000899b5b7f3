"""What test_train_step_pt.py shares with its two spawned processes.

The children import this module, not the test module, so that they do not pay for importing
transformers (and, through it, TensorFlow): 10-20 s each on a 2-core machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gpt2_dual.pt import GPT2LMHeadModel
from gpt2_dual.pt.train_step import TrainStep

SIZES = dict(vocab_size=97, n_positions=20, n_embd=48, n_layer=2, n_head=4, n_inner=56)
SEQ = 16
LR, WARMUP, STEPS = 3e-3, 2, 5
ADAM = dict(weight_decay=0.1, adam_epsilon=1e-6, max_grad_norm=1.0)
WORLD = 2
RESUME_AT = 3  # the FSDP2 run saves, closes and resumes in a new TrainStep here


def lr_at(step: int) -> float:
    """Linear warmup over WARMUP steps, then linear decay to 0 at step STEPS + 1 (the test
    checks it against transformers' get_linear_schedule_with_warmup)."""
    if step < WARMUP:
        return LR * step / WARMUP
    return LR * max(0.0, (STEPS + 1 - step) / (STEPS + 1 - WARMUP))


def batches(steps: int = STEPS, rows: int = 4) -> np.ndarray:
    """(steps, rows, SEQ) token ids, the same in every process."""
    return np.random.default_rng(7).integers(0, SIZES["vocab_size"], (steps, rows, SEQ))


def make_step(folder: Path, **options) -> TrainStep:
    """A TrainStep on the weights of ``folder``; ``config``: overrides of config.json."""
    config = options.pop("config", {})
    options = {"lr_at": lr_at, **ADAM, **options}
    return TrainStep(lambda: GPT2LMHeadModel.from_pretrained(folder, **config), **options)


def run(step: TrainStep, ids: np.ndarray, split: int = 1) -> tuple[list, list]:
    """Losses and grad norms of one step per batch, each split into ``split`` micro-batches."""
    results = [step(np.split(batch, split)) for batch in ids]
    return [r.loss for r in results], [r.grad_norm for r in results]


def worker(rank: int, ports: list[int], folder: str, results: str) -> None:
    """One rank: DDP, then FSDP2 (saved, closed and resumed after RESUME_AT steps), each on
    its half of every batch; rank 0 saves the numbers, ``save_model`` the weights. DDP and the
    resumed FSDP2 run split each half into 2 micro-batches of 1 (gradient sync on the last)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1")  # fmt: skip
    ids = batches()[:, 2 * rank : 2 * rank + 2]
    out = Path(results)

    def start(port: int, fsdp: bool) -> TrainStep:
        os.environ["MASTER_PORT"] = str(port)
        return make_step(Path(folder), fsdp=fsdp)

    step = start(ports[0], fsdp=False)
    ddp = run(step, ids, split=2)
    ddp_eval = step.loss_only(ids[0])
    step.save_model(out / "ddp")
    step.close()

    step = start(ports[1], fsdp=True)
    first = run(step, ids[:RESUME_AT])
    step.save_model(out / "fsdp-half")
    step.save_state(out / "fsdp-half")
    step.close()
    step = start(ports[2], fsdp=True)
    step.load_weights(out / "fsdp-half")
    step.load_state(out / "fsdp-half")
    second = run(step, ids[RESUME_AT:], split=2)
    fsdp_eval = step.loss_only(ids[0])
    step.save_model(out / "fsdp")
    step.close()
    if rank == 0:
        fsdp = [a + b for a, b in zip(first, second, strict=True)]
        numbers = {"ddp": ddp, "fsdp": fsdp, "ddp_eval": ddp_eval, "fsdp_eval": fsdp_eval}
        torch.save({k: torch.tensor(v) for k, v in numbers.items()}, out / "results.pt")
