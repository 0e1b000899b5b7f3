"""gpt2_dual.train.schedule against transformers' schedules on a torch LambdaLR, every step."""

from __future__ import annotations

import re

import pytest

from gpt2_dual.errors import InvalidInputError, OutOfRangeError
from gpt2_dual.train.schedule import SCHEDULERS, learning_rate

torch = pytest.importorskip("torch")
optimization = pytest.importorskip("transformers.optimization")

BASE = 3e-4


def _transformers_rates(kind: str, warmup: int, max_steps: int, steps: int) -> list[float]:
    """The lr of each optimizer step as transformers' scheduler sets it."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=BASE)
    if kind == "linear":
        scheduler = optimization.get_linear_schedule_with_warmup(optimizer, warmup, max_steps)
    elif kind == "cosine":
        scheduler = optimization.get_cosine_schedule_with_warmup(optimizer, warmup, max_steps)
    else:
        scheduler = optimization.get_constant_schedule_with_warmup(optimizer, warmup)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("kind", SCHEDULERS)
@pytest.mark.parametrize(("warmup", "max_steps"), [(0, 20), (5, 20), (1, 7), (30, 20), (0, 1)])
def test_equals_transformers_at_every_step(kind, warmup, max_steps):
    steps = max_steps + 6  # a little past the end, where cosine rises again
    expected = _transformers_rates(kind, warmup, max_steps, steps)
    got = [
        learning_rate(s, base=BASE, warmup_steps=warmup, max_steps=max_steps, kind=kind)
        for s in range(steps)
    ]
    assert got == expected
    assert len(set(expected)) > 1 or (kind == "constant" and warmup == 0)


def test_shape_of_each_schedule():
    def lr(s: int, kind: str) -> float:
        return learning_rate(s, base=1.0, warmup_steps=4, max_steps=12, kind=kind)

    assert [lr(s, "constant") for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr(s, "linear") for s in (4, 8, 12, 13)] == [1.0, 0.5, 0.0, 0.0]
    assert lr(8, "cosine") == pytest.approx(0.5) and lr(12, "cosine") == 0.0


def test_errors():
    def call(**kw):
        args = dict(base=1.0, warmup_steps=0, max_steps=10, kind="linear") | kw
        return learning_rate(kw.pop("step", 0), **{k: v for k, v in args.items() if k != "step"})

    cases = [
        (dict(kind="step"), InvalidInputError,
         "lr_scheduler='step' is not one of linear, cosine, constant"),
        (dict(warmup_steps=-1), OutOfRangeError, "warmup_steps=-1 must be >= 0"),
        (dict(max_steps=0), OutOfRangeError, "max_steps=0 must be at least 1"),
        (dict(step=-2), OutOfRangeError, "step=-2 must be >= 0"),
    ]  # fmt: skip
    for kw, kind, message in cases:
        with pytest.raises(kind, match=f"^{re.escape(message)}$"):
            call(**kw)
