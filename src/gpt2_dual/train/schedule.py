"""Learning-rate schedules, exactly transformers' (``transformers.optimization``).

``learning_rate(step, ...)`` is the rate optimizer step ``step`` (0-based) uses: ``base``
times the multiplier of ``get_linear_schedule_with_warmup``,
``get_cosine_schedule_with_warmup`` (``num_cycles=0.5``) or
``get_constant_schedule_with_warmup``, as a ``torch.optim.lr_scheduler.LambdaLR`` gives it
after ``step`` calls of ``scheduler.step()``. So with warmup the first step's rate is 0, as in
transformers' ``Trainer``. The formulas are plain Python floats, written in transformers'
order of operations, so the rates are equal to the last bit.

Example:
    >>> learning_rate(5, base=1e-3, warmup_steps=10, max_steps=100, kind="linear")
    0.0005
"""

from __future__ import annotations

import math

from gpt2_dual.errors import InvalidInputError, OutOfRangeError

SCHEDULERS = ("linear", "cosine", "constant")


def learning_rate(step: int, *, base: float, warmup_steps: int, max_steps: int, kind: str) -> float:
    """The learning rate of optimizer step ``step``.

    Args:
        step: the optimizer step (0-based, >= 0; past ``max_steps`` the formulas go on as in
            transformers: linear stays 0, cosine rises again).
        base: the peak rate (``--learning-rate``).
        warmup_steps: steps of linear warmup from 0 (>= 0).
        max_steps: the run's optimizer steps (>= 1).
        kind: one of ``SCHEDULERS``.

    Returns:
        ``base`` times the schedule's multiplier.

    Raises:
        InvalidInputError: an unknown ``kind``.
        OutOfRangeError: a negative ``step`` or ``warmup_steps``, ``max_steps`` below 1.
    """
    if kind not in SCHEDULERS:
        raise InvalidInputError(f"lr_scheduler={kind!r} is not one of {', '.join(SCHEDULERS)}")
    if warmup_steps < 0:
        raise OutOfRangeError(f"warmup_steps={warmup_steps} must be >= 0")
    if max_steps < 1:
        raise OutOfRangeError(f"max_steps={max_steps} must be at least 1")
    if step < 0:
        raise OutOfRangeError(f"step={step} must be >= 0")
    return base * _multiplier(step, warmup_steps, max_steps, kind)


def _multiplier(step: int, warmup: int, total: int, kind: str) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    progress = float(step - warmup) / float(max(1, total - warmup))
    # num_cycles=0.5: half a cosine, from 1 at the end of warmup to 0 at max_steps.
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
