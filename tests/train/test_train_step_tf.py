"""``gpt2_dual.tf.train_step.TrainStep`` against PyTorch, against itself split differently, and
across a save/load of its state.

One reference run (AdamW with weight decay and clipping, 1 process x 1 micro-batch of B=4,
module fixture) is compared with: a plain PyTorch loop (transformers' recipe written out) from
the same initial weights; 2 micro-batches of B=2; 2 worker processes under
``MultiWorkerMirroredStrategy`` x B=2; bf16 mixed precision. SGD gets its own comparison with
PyTorch SGD. Dropout is 0 except in the resume test.

On a CPU the step runs under XLA (``gpt2_dual.cpu.tf_jit_default``), a compile of seconds per
``TrainStep``: the reference, accumulation, bf16, two-worker and resume runs keep it (the resume
test is the one XLA step with dropout, whose random state must survive the restart); the SGD
test runs in graph mode (``GPT2_DUAL_TF_JIT=0``): the SGD update is the same code either way,
XLA only compiles it, and ``test_cli_train.py`` compares XLA SGD with PyTorch SGD through
``gpt2-dual train``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from gpt2_dual import GPT2Config  # noqa: E402
from gpt2_dual.cpu import ENV_TF_JIT  # noqa: E402
from gpt2_dual.errors import InvalidInputError, TrainingError  # noqa: E402
from gpt2_dual.tf import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.tf.train_step import TrainStep  # noqa: E402
from gpt2_dual.tf.weights import to_canonical  # noqa: E402

WORKER = Path(__file__).with_name("dist_worker_tf.py")
B, T, STEPS = 4, 11, 5
#: Learning rate per step: warmup then decay, so a rate applied one step late shows.
LRS = [0.004, 0.008, 0.006, 0.004, 0.002, 0.5, 0.4, 0.3, 0.2, 0.1]
WD, MAX_NORM = 0.1, 3.0
#: AdamW, TF vs PyTorch: the same update formula (train_step's _AdamW), float32 rounding
#: differs. Measured 3e-7 relative on losses, 3e-6 on gradient norms (SGD: 2e-7, 1e-7); the
#: bound is the issue's SGD target.
ADAMW_RTOL = 1e-3


def _config(dropout: float = 0.0) -> GPT2Config:
    return GPT2Config(
        vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=3, initializer_range=0.1,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
    )  # fmt: skip


def _batches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 97, (n, B, T)).astype(np.int64)


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    """Initial weights, written by gpt2_dual.pt (transformers' layout)."""
    from gpt2_dual.pt import GPT2LMHeadModel as PTModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("init")
    PTModel(_config()).save_pretrained(folder)
    return folder


def _step(init: Path, optimizer: str = "adamw", **kwargs) -> TrainStep:
    return TrainStep(
        lambda: GPT2LMHeadModel.from_pretrained(init), optimizer=optimizer,
        lr_at=lambda s: LRS[s], weight_decay=WD, max_grad_norm=MAX_NORM, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(init_dir):
    """AdamW, one process, B=4 per step: (step object, losses, grad norms, final weights)."""
    step = _step(init_dir)
    results = [step([ids]) for ids in _batches(STEPS)]
    return step, results, to_canonical(step.model)


def _torch_run(init: Path, optimizer: str, steps: int):
    """transformers' recipe by hand: no decay on biases and ln_* weights, clip_grad_norm_,
    decoupled decay for SGD too (p *= 1 - lr * wd, then the plain SGD update)."""
    from gpt2_dual.pt import GPT2LMHeadModel as PTModel
    from gpt2_dual.pt.weights import to_canonical as pt_canonical

    model = PTModel.from_pretrained(init).train()
    named = list(model.named_parameters())
    no_decay = [p for n, p in named if "bias" in n or ".ln_" in n]
    decay = [p for n, p in named if not ("bias" in n or ".ln_" in n)]
    if optimizer == "adamw":
        groups = [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0}]
        opt = torch.optim.AdamW(groups, lr=0.0, eps=1e-8)
    else:
        opt = torch.optim.SGD(decay + no_decay, lr=0.0)
    losses, norms = [], []
    for s, ids in enumerate(_batches(steps)):
        ids = torch.from_numpy(ids)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        for group in opt.param_groups:
            group["lr"] = LRS[s]
        if optimizer == "sgd":
            with torch.no_grad():
                for p in decay:
                    p.mul_(1 - LRS[s] * WD)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return np.array(losses), np.array(norms), pt_canonical(model)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _max_diff(a: dict, b: dict, *, adam: bool = False) -> float:
    """Largest weight difference. With ``adam``, the key biases (``c_attn.bias[C:2C]``) are
    left out: their gradient is 0 in exact arithmetic (softmax ignores a shift of the scores),
    so Adam scales float rounding noise up to steps of about lr there."""
    assert sorted(a) == sorted(b)
    C = _config().n_embd
    worst = 0.0
    for k in a:
        diff = np.abs(a[k].astype(np.float64) - b[k])
        if adam and k.endswith("attn.c_attn.bias"):
            diff[C : 2 * C] = 0
        worst = max(worst, float(diff.max()))
    return worst


@pytest.fixture
def graph_mode(monkeypatch):
    """TrainSteps built in the test run their step in graph mode, not XLA (module docstring)."""
    monkeypatch.setenv(ENV_TF_JIT, "0")


def test_sgd_equals_pytorch_sgd(init_dir, graph_mode):
    step = _step(init_dir, "sgd")
    results = [step([ids]) for ids in _batches(10)]
    losses, norms, pt_state = _torch_run(init_dir, "sgd", 10)
    assert _rel([r.loss for r in results], losses) < 1e-3
    assert _rel([r.grad_norm for r in results], norms) < 1e-3
    assert [r.learning_rate for r in results] == LRS
    assert max(norms) > MAX_NORM > min(norms)  # clipping both on and off in the run
    assert _max_diff(to_canonical(step.model), pt_state) < 1e-4
    assert step.step == 10
    assert step._train_fn.experimental_get_tracing_count() == 1  # lr changes, no retrace


def test_adamw_equals_pytorch_adamw(init_dir, reference):
    _, results, state = reference
    losses, norms, pt_state = _torch_run(init_dir, "adamw", STEPS)
    assert _rel([r.loss for r in results], losses) < ADAMW_RTOL
    assert _rel([r.grad_norm for r in results], norms) < ADAMW_RTOL
    assert _max_diff(state, pt_state, adam=True) < 1e-5


def test_accumulation_equals_one_batch(init_dir, reference):
    _, expected, state = reference
    step = _step(init_dir)
    results = [step([ids[:2], ids[2:]]) for ids in _batches(STEPS)]
    assert _rel([r.loss for r in results], [r.loss for r in expected]) < 1e-5
    assert _rel([r.grad_norm for r in results], [r.grad_norm for r in expected]) < 1e-5
    assert _max_diff(to_canonical(step.model), state, adam=True) < 1e-6  # measured 2e-7


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_equal_one_process(init_dir, reference, tmp_path):
    _, expected, state = reference
    data = tmp_path / "data.npz"
    np.savez(data, batches=_batches(STEPS), lrs=LRS, weight_decay=WD, max_grad_norm=MAX_NORM)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for i in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        }
        args = [sys.executable, str(WORKER), str(init_dir), str(data), str(tmp_path)]
        procs.append(subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True))
    try:
        errors = [p.communicate(timeout=180)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    for rank in range(2):
        out = np.load(tmp_path / f"result_{rank}.npz")
        assert int(out["world_size"]) == 2
        assert _rel(out["loss"], [r.loss for r in expected]) < 1e-4
        assert _rel(out["grad_norm"], [r.grad_norm for r in expected]) < 1e-4
        weights = {k[2:]: out[k] for k in out.files if k.startswith("w/")}
        assert _max_diff(weights, state, adam=True) < 1e-5
    written = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert {"optimizer.safetensors", "rng_state_0.safetensors", "rng_state_1.safetensors",
            "model.safetensors", "config.json"} <= set(written)  # fmt: skip


def test_resume_continues_bit_for_bit_with_dropout(tmp_path):
    torch.manual_seed(1)
    from gpt2_dual.pt import GPT2LMHeadModel as PTModel

    PTModel(_config(dropout=0.2)).save_pretrained(tmp_path / "init")
    batches = _batches(4, seed=1)
    whole = _step(tmp_path / "init", seed=3)  # saves its state halfway and goes on
    expected = [whole([ids[:2], ids[2:]]).loss for ids in batches[:2]]
    whole.save_model(tmp_path / "ckpt")
    whole.save_state(tmp_path / "ckpt")
    expected += [whole([ids[:2], ids[2:]]).loss for ids in batches[2:]]
    resumed = _step(tmp_path / "init", seed=3)
    fresh_rng = [v.numpy() for v in resumed.model.non_trainable_variables]
    resumed.load_weights(tmp_path / "ckpt")
    resumed.load_state(tmp_path / "ckpt")
    restored_rng = [v.numpy() for v in resumed.model.non_trainable_variables]
    assert resumed.step == 2
    assert len(restored_rng) == 7  # 3 dropout layers per block, 1 on the embeddings
    assert all(not np.array_equal(a, b) for a, b in zip(fresh_rng, restored_rng, strict=True))
    losses = [resumed([ids[:2], ids[2:]]).loss for ids in batches[2:]]
    assert losses == expected[2:]
    a, b = to_canonical(resumed.model), to_canonical(whole.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    for x, y in zip(
        resumed.optimizer.variables + resumed.model.non_trainable_variables,
        whole.optimizer.variables + whole.model.non_trainable_variables,
        strict=True,
    ):
        assert np.array_equal(x.numpy(), y.numpy())


def test_bfloat16_mixed_close_to_float32(init_dir, reference):
    _, expected, _ = reference
    step = _step(init_dir, dtype="bfloat16")
    assert step.model.dtype_policy.name == "mixed_bfloat16"
    results = [step([ids]) for ids in _batches(3)]
    assert _rel([r.loss for r in results], [r.loss for r in expected[:3]]) < 5e-3  # measured 4e-4
    assert all(v.dtype == "float32" for v in step.model.trainable_variables)


def test_loss_only_sums_token_nlls(reference):
    step, _, _ = reference
    ids = _batches(1, seed=5)[0]
    total, count = step.loss_only(ids)
    logits = step.model(input_ids=ids).logits.numpy()[:, :-1].astype(np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    nll = -np.take_along_axis(logp, ids[:, 1:, None], -1).sum()
    assert count == B * (T - 1)
    assert abs(total - nll) / nll < 1e-5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optimizer": "lion"}, "--optimizer 'lion': use one of ['adamw', 'sgd']"),
        ({"dtype": "float16"}, "--dtype 'float16': use one of ['float32', 'bfloat16']"),
        ({"fsdp": True}, "--fsdp is PyTorch only; with --framework tf leave it out"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(InvalidInputError) as err:
        TrainStep(lambda: None, lr_at=lambda s: 0.1, **kwargs)
    assert str(err.value) == message


def test_bad_micro_batches_and_state(reference, tmp_path):
    step, _, _ = reference
    before = step.step
    with pytest.raises(InvalidInputError, match=r"got shapes \[\(2, 11\), \(4, 11\)\]$"):
        step([np.zeros((2, T), np.int64), np.zeros((4, T), np.int64)])
    with pytest.raises(InvalidInputError, match="must be integers"):
        step([np.zeros((B, T), np.float32)])
    with pytest.raises(TrainingError, match="optimizer.safetensors: cannot read the saved"):
        step.load_state(tmp_path)
    assert step.step == before


@pytest.mark.parametrize(
    ("task", "rank"), [(("chief", 0), 0), (("worker", 0), 1), (("worker", 1), 2)]
)
def test_process_rank_puts_the_chief_first(monkeypatch, task, rank):
    """The rank ``gpt2-dual train`` reads before TensorFlow starts (to let one process claim
    --output-dir and report) is ``TrainStep``'s: with a chief, worker 0 is not the main one."""
    from gpt2_dual.tf.train_step import process_rank

    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert process_rank() == rank
