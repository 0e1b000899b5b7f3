"""gpt2_dual.pt.train_step.TrainStep: one optimizer step, checked against independent loops.

The reference is a hand-written loop on transformers' GPT2LMHeadModel loaded from the same
initial weights (AdamW with transformers' decay groups, clip_grad_norm_, transformers' linear
warmup schedule); SGD against its update rule written out. Accumulation, two processes (DDP and
FSDP2 on gloo) and gradient checkpointing are checked against one process on the whole batch,
and resuming from save_state against an uninterrupted run, bit for bit with dropout on.

AdamW runs use adam_epsilon=1e-6: the key bias of attention has a true gradient of zero
(softmax ignores a constant added to every score), so its computed gradient is rounding noise,
which Adam with epsilon 1e-8 turns into a step of about ``lr`` whose sign depends on the
summation order. Epsilon 1e-6 damps it a hundredfold, the same for both sides.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from cases import assert_close, tiny_config
from gpt2_dual.errors import InvalidInputError, TrainingError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dist_worker_pt import (  # noqa: E402
    ADAM,
    LR,
    SEQ,
    SIZES,
    STEPS,
    WARMUP,
    WORLD,
    batches,
    lr_at,
    make_step,
    run,
    worker,
)

from gpt2_dual.pt import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.pt.train_step import TrainStep  # noqa: E402

DROPOUT = dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
TIMEOUT_S = 120  # a hung collective fails the test instead of blocking the run


def _schedule(optimizer):
    return transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, STEPS + 1)


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    """The initial weights, saved by our save_pretrained (dropout off in config.json)."""
    folder = tmp_path_factory.mktemp("init")
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_config(**SIZES, initializer_range=0.1)).save_pretrained(folder)
    return folder


def _weights(folder: Path) -> dict[str, np.ndarray]:
    """Saved weights read back by transformers: canonical names and layouts."""
    model = transformers.GPT2LMHeadModel.from_pretrained(folder)
    return {name: value.detach().numpy() for name, value in model.state_dict().items()}


def _assert_same_weights(actual: Path, expected: Path, what: str) -> None:
    actual_w, expected_w = _weights(actual), _weights(expected)
    assert actual_w.keys() == expected_w.keys()
    for name, value in expected_w.items():
        assert_close(actual_w[name], value, what=f"{what} {name}")


def _hf_model(folder: Path):
    model = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager")
    return model.train()


def _hf_groups(model) -> list[dict]:
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": ADAM["weight_decay"]},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def test_adamw_equals_a_transformers_loop(init, tmp_path):
    step = make_step(init)
    results = [step([ids]) for ids in batches()]
    losses, norms = [r.loss for r in results], [r.grad_norm for r in results]
    lrs = [r.learning_rate for r in results]
    step.save_model(tmp_path / "ours")

    model = _hf_model(init)
    optimizer = torch.optim.AdamW(_hf_groups(model), lr=LR, eps=ADAM["adam_epsilon"])
    schedule = _schedule(optimizer)
    ref_losses, ref_norms, ref_lrs = [], [], []
    for batch in torch.from_numpy(batches()):
        ref_lrs.append(schedule.get_last_lr()[0])
        loss = model(batch, labels=batch).loss
        loss.backward()
        ref_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        ref_losses.append(loss.item())
    model.save_pretrained(tmp_path / "reference")

    assert step.step == STEPS
    assert lrs == pytest.approx(ref_lrs, rel=1e-12) and lrs[0] < lrs[1]  # warmup seen
    assert_close(losses, ref_losses, what="losses")
    assert_close(norms, ref_norms, what="grad norms")
    assert max(ref_norms) > 1.0  # clipping was active
    _assert_same_weights(tmp_path / "ours", tmp_path / "reference", "AdamW")


def test_sgd_applies_decoupled_decay_and_torch_momentum(init, tmp_path):
    momentum, decay = 0.9, ADAM["weight_decay"]
    step = make_step(init, optimizer="sgd", momentum=momentum)
    losses, _ = run(step, batches())
    step.save_model(tmp_path / "ours")

    model = _hf_model(init)
    decayed = {id(p) for p in _hf_groups(model)[0]["params"]}
    buffers = {}
    ref_losses = []
    for s, batch in enumerate(torch.from_numpy(batches())):
        loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = lr_at(s)
        with torch.no_grad():  # p <- p (1 - lr wd) - lr buf, buf <- momentum buf + g
            for p in model.parameters():
                buf = buffers[id(p)] = momentum * buffers.get(id(p), 0) + p.grad
                p.mul_(1 - lr * decay if id(p) in decayed else 1.0).sub_(lr * buf)
        model.zero_grad()
        ref_losses.append(loss.item())
    model.save_pretrained(tmp_path / "reference")

    assert_close(losses, ref_losses, what="SGD losses")
    _assert_same_weights(tmp_path / "ours", tmp_path / "reference", "SGD")


def test_accumulation_equals_one_big_batch(init, tmp_path):
    one = make_step(init)
    two = make_step(init)
    big = run(one, batches(3))
    accumulated = run(two, batches(3), split=2)
    assert_close(accumulated, big, what="2 x B=2 against 1 x B=4 (losses, grad norms)")
    one.save_model(tmp_path / "one")
    two.save_model(tmp_path / "two")
    _assert_same_weights(tmp_path / "two", tmp_path / "one", "accumulated")


def test_gradient_checkpointing_changes_nothing(init):
    plain = run(make_step(init), batches(3))
    step = make_step(init, gradient_checkpointing=True)
    calls = []
    step.model.transformer.h[0].register_forward_pre_hook(lambda *args: calls.append(1))
    checkpointed = run(step, batches(3))
    assert len(calls) == 2 * 3  # each block ran again in each backward pass
    assert_close(checkpointed, plain, what="gradient checkpointing (losses, grad norms)")


def test_bfloat16_mixed_is_close_to_float32(init):
    fp32 = run(make_step(init), batches(2))[0]
    step = make_step(init, dtype="bfloat16")
    bf16 = run(step, batches(2))[0]
    assert_close(bf16, fp32, dtype="bfloat16", what="bfloat16 mixed losses")
    assert bf16 != fp32  # autocast did run in bfloat16
    assert {p.dtype for p in step.model.parameters()} == {torch.float32}  # master weights


def test_resume_with_dropout_is_bit_equal(init, tmp_path):
    options = dict(config=DROPOUT, seed=3)
    whole = make_step(init, **options)
    whole_losses, _ = run(whole, batches(4))

    first = make_step(init, **options)
    run(first, batches(4)[:2])
    first.save_model(tmp_path / "checkpoint")
    first.save_state(tmp_path / "checkpoint")

    def resumed() -> TrainStep:
        step = make_step(init, **options)
        step.load_weights(tmp_path / "checkpoint")
        step.load_state(tmp_path / "checkpoint")
        return step

    second = resumed()
    assert second.step == 2
    assert run(second, batches(4)[2:])[0] == whole_losses[2:]
    for (name, value), other in zip(
        whole.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name

    unseeded = resumed()  # the control: dropout masks of another random state
    torch.manual_seed(0)
    assert run(unseeded, batches(4)[2:])[0] != whole_losses[2:]


def test_saved_state_loads_without_pickle_into_transformers_adamw(init, tmp_path):
    step = make_step(init)
    run(step, batches(1))
    step.save_state(tmp_path)
    optimizer_state = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    torch.load(tmp_path / "rng_state_0.pth", weights_only=True)
    scheduler_state = torch.load(tmp_path / "scheduler.pt", weights_only=True)

    model = _hf_model(init)  # what Trainer does on resume: the same groups, then load
    optimizer = torch.optim.AdamW(_hf_groups(model), lr=LR)
    optimizer.load_state_dict(optimizer_state)
    for group in _hf_groups(model):
        for p in group["params"]:
            assert optimizer.state[p]["exp_avg"].shape == p.shape
    schedule = _schedule(optimizer)
    schedule.load_state_dict(scheduler_state)
    assert schedule.last_epoch == 1


def test_loss_only_is_the_eval_mode_nll_sum(init):
    step = make_step(init, config=DROPOUT)
    ids = batches(1)[0]
    nll, count = step.loss_only(ids)
    model = transformers.GPT2LMHeadModel.from_pretrained(init).eval()
    ids_t = torch.from_numpy(ids)
    with torch.no_grad():
        expected = model(ids_t, labels=ids_t).loss.item() * count
    assert count == 4 * (SEQ - 1)
    assert_close(nll / count, expected / count, what="mean NLL")
    assert step.model.training  # back to training mode, dropout on


def test_bad_arguments_are_refused(init, tmp_path):
    with pytest.raises(
        InvalidInputError, match=r"^--optimizer 'adam' is not one of \('adamw', 'sgd'\)$"
    ):
        make_step(init, optimizer="adam")
    with pytest.raises(InvalidInputError, match=r"^--dtype 'float16' is not one of "):
        make_step(init, dtype="float16")
    step = make_step(init)
    with pytest.raises(InvalidInputError, match=r"got shapes \[\(2, 16\), \(2, 8\)\]$"):
        step([batches(1)[0, :2], batches(1)[0, 2:, :8]])
    assert step.step == 0
    with pytest.raises(
        TrainingError, match=f"^cannot resume: {tmp_path / 'optimizer.pt'} is missing$"
    ):
        step.load_state(tmp_path)


# --------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(folder: Path, results: Path) -> None:
    import torch.multiprocessing as mp

    ports = [_free_port() for _ in range(3)]
    context = mp.start_processes(
        worker, args=(ports, str(folder), str(results)), nprocs=WORLD, join=False,
        start_method="spawn",
    )  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed training did not finish in {TIMEOUT_S} s")


def test_two_processes_equal_one_with_twice_the_batch(init, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    _spawn(init, tmp_path)
    results = torch.load(tmp_path / "results.pt", weights_only=True)
    single = make_step(init)
    expected = run(single, batches())
    expected_eval = single.loss_only(batches()[0, :2])  # rank 0's rows
    single.save_model(tmp_path / "single")
    for mode in ("ddp", "fsdp"):
        assert_close(results[mode], expected, what=f"{mode} losses and grad norms")
        nll, count = results[f"{mode}_eval"].tolist()
        assert count == expected_eval[1]
        assert_close(nll / count, expected_eval[0] / count, what=f"{mode} loss_only (mean)")
        _assert_same_weights(tmp_path / mode, tmp_path / "single", mode)


@pytest.mark.parametrize(("env", "rank"), [({}, 0), ({"RANK": "1", "WORLD_SIZE": "2"}, 1)])
def test_process_rank_reads_torchrun(monkeypatch, env, rank):
    from gpt2_dual.pt.train_step import process_rank

    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert process_rank() == rank
