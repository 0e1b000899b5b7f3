"""gpt2_dual.pt heads train under torch.distributed: DDP and FSDP2 match one process.

Two CPU processes on the gloo backend each take half of a fixed global batch and run a few
optimizer steps; the per-step loss (mean over ranks) and the final parameters must equal a
single process training on the whole batch. Every loss is a mean over equally many items per
rank, so DDP's and FSDP2's gradient averaging gives the global batch's gradient.

The optimizer is SGD with momentum, not Adam: Adam divides each update by the root of the
gradient's running square, so a parameter whose true gradient is zero (the key bias of
attention: softmax ignores a constant added to every score) moves by about ``lr`` in a
direction set by rounding noise, and its value after a step is not a function of the
gradients' values. Measured with AdamW(lr=1e-2): 3.1e-05 apart on ``h.0.attn.c_attn.bias``
after 3 steps, while the losses agreed within 1e-7.
"""

from __future__ import annotations

import datetime
import time
import warnings
from pathlib import Path

import pytest

from cases import SEQ, assert_close, tiny_config
from gpt2_dual.heads import HEAD_SPECS

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import gpt2_dual.pt as gpt  # noqa: E402

WORLD = 2
GLOBAL_BATCH = 4  # split 2 + 2
STEPS = 3
LR = 0.1
TIMEOUT_S = 120  # a hung collective fails the test instead of blocking the run
TRAINED = tuple(head for head in HEAD_SPECS if head != "base")  # every model with a loss
MODES = ("ddp", "fsdp2")


def _batch(head: str, step: int) -> dict:
    """The global batch of one step, with the labels the head's loss needs (seeded)."""
    gen = torch.Generator().manual_seed(100 * step + len(head))
    n, vocab, labels = GLOBAL_BATCH, 98, 3  # ids stay below pad_token_id=98
    if head == "double_heads":
        ids = torch.randint(0, vocab, (n, 2, SEQ), generator=gen)
        return {
            "input_ids": ids,
            "mc_token_ids": torch.randint(0, SEQ, (n, 2), generator=gen),
            "labels": ids,
            "mc_labels": torch.randint(0, 2, (n,), generator=gen),
        }
    ids = torch.randint(0, vocab, (n, SEQ), generator=gen)
    extra = {
        "lm": {"labels": ids},
        "sequence_classification": {"labels": torch.randint(0, labels, (n,), generator=gen)},
        "token_classification": {"labels": torch.randint(0, labels, (n, SEQ), generator=gen)},
        "question_answering": {
            "start_positions": torch.randint(0, SEQ, (n,), generator=gen),
            "end_positions": torch.randint(0, SEQ, (n,), generator=gen),
        },
    }[head]
    return {"input_ids": ids, **extra}


def _loss(head: str, out) -> torch.Tensor:
    return out.loss + out.mc_loss if head == "double_heads" else out.loss


def _train(model, head: str, rows: slice) -> list[float]:
    """STEPS SGD steps on ``rows`` of each global batch; returns each step's local loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    losses = []
    for step in range(STEPS):
        batch = {k: v[rows] for k, v in _batch(head, step).items()}
        loss = _loss(head, model(**batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def _full_parameters(model) -> dict[str, torch.Tensor]:
    """Unsharded parameters by name (FSDP2's DTensors are gathered: a collective)."""
    out = {}
    for name, param in model.named_parameters():
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        out[name.removeprefix("module.")] = full.detach().clone()
    return out


def _train_rank(head: str, mode: str, rank: int, mesh, folder: str, results: str) -> None:
    """One head and mode on this rank's half; rank 0 saves the losses and parameters. The
    wrapped model (DDP's reducer, FSDP2's hooks: both hold the process group) dies on return."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    rows = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
    model = gpt.MODEL_CLASSES[head].from_pretrained(Path(folder) / head)
    if mode == "ddp":
        model = DistributedDataParallel(model)
    else:  # FSDP2: one unit per block, then the root (embeddings, ln_f, head)
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    losses = torch.stack(_train(model, head, rows))
    dist.all_reduce(losses)
    params = _full_parameters(model)
    if rank == 0:
        torch.save(
            {"losses": losses / WORLD, "params": params}, Path(results) / f"{head}-{mode}.pt"
        )


def _worker(rank: int, rendezvous: str, folder: str, results: str) -> None:
    """One rank: for every head and mode, train on its half and save rank 0's results.

    Teardown order matters: gloo's C++ threads abort the process ("terminate called without an
    active exception", SIGABRT) when its last process-group reference dies during interpreter
    shutdown, or while the other rank still talks to it. So every object holding the group
    (wrapped models, the device mesh, reference cycles through DDP's reducer) is released and
    collected first, both ranks meet at a barrier, and only then is the group destroyed, on
    the main thread, before the worker returns.
    """
    import gc

    from torch.distributed.device_mesh import init_device_mesh

    # The heads return tensors of their own, never views (FSDP2 cannot hook in-place ops on a
    # view of a module's output and says so).
    warnings.filterwarnings("error", message=".*returned a view tensor")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )  # fmt: skip
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        for head in TRAINED:
            for mode in MODES:
                _train_rank(head, mode, rank, mesh, folder, results)
        del mesh
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


def _spawn(folder: Path, results: Path) -> None:
    """Run the ranks; any failure of a rank (a Python error, a signal) fails the test."""
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _worker,
        # A file rendezvous: no port to pick, so no race for one.
        args=(str(results.parent / "rendezvous"), str(folder), str(results)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed training did not finish in {TIMEOUT_S} s")


def test_ddp_and_fsdp2_match_single_process(tmp_path):
    config = tiny_config(pad_token_id=98, classifier_dropout=0.0)  # no dropout anywhere
    torch.manual_seed(0)
    for head in TRAINED:
        gpt.MODEL_CLASSES[head](config.copy()).save_pretrained(tmp_path / "init" / head)
    (tmp_path / "results").mkdir()
    _spawn(tmp_path / "init", tmp_path / "results")
    for head in TRAINED:
        model = gpt.MODEL_CLASSES[head].from_pretrained(tmp_path / "init" / head)
        losses = torch.stack(_train(model, head, slice(None)))
        params = _full_parameters(model)
        for mode in MODES:
            result = torch.load(tmp_path / "results" / f"{head}-{mode}.pt", weights_only=True)
            what = f"{HEAD_SPECS[head].class_name} {mode}"
            assert_close(result["losses"], losses, what=f"{what} losses")
            assert result["params"].keys() == params.keys(), what
            for name, value in params.items():
                assert_close(result["params"][name], value, what=f"{what} {name}")
