"""One worker of ``test_train_step_tf.py``'s two-process run (``TF_CONFIG`` set by the test).

Usage: ``python dist_worker_tf.py INIT_DIR DATA_NPZ OUT_DIR``. Trains on its rank's share of
each global batch of ``DATA_NPZ`` (rows ``rank*B : (rank+1)*B``), then every process writes its
state into ``OUT_DIR/state`` (after a barrier) and the main process the model; the results go
to ``OUT_DIR/result_<rank>.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gpt2_dual.tf import GPT2LMHeadModel
from gpt2_dual.tf.train_step import TrainStep
from gpt2_dual.tf.weights import to_canonical


def main(init_dir: str, data: str, out_dir: str) -> None:
    batches = np.load(data)["batches"]  # (steps, global B, T)
    config = np.load(data)
    step = TrainStep(
        lambda: GPT2LMHeadModel.from_pretrained(init_dir),
        optimizer="adamw",
        lr_at=lambda s: float(config["lrs"][s]),
        weight_decay=float(config["weight_decay"]),
        max_grad_norm=float(config["max_grad_norm"]),
    )
    b = batches.shape[1] // step.world_size
    results = [step([ids[step.rank * b : (step.rank + 1) * b]]) for ids in batches]
    out = Path(out_dir)
    state = out / "state"
    if step.is_main:
        state.mkdir()
    step.barrier()
    step.save_state(state)
    step.save_model(state)
    step.barrier()
    weights = to_canonical(step.model)
    np.savez(
        out / f"result_{step.rank}.npz",
        loss=[r.loss for r in results],
        grad_norm=[r.grad_norm for r in results],
        world_size=step.world_size,
        **{f"w/{k}": v for k, v in weights.items()},
    )
    step.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
