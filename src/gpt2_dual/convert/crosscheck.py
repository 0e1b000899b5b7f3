"""The cross-check: run a checkpoint in gpt2_dual.pt and gpt2_dual.tf and compare the numbers.

A conversion is trusted only after this passes. Each *side* (a checkpoint in one framework)
runs the checkpoint's head on the same fixed inputs (two rows, the second left-padded; for
double heads two choices per row); every output is compared with the reference side (the
first one, normally the source in gpt2_dual.pt) at unpadded positions:

- max abs diff, max rel diff (``|a - b| / max(|b|, atol)``), the worst position, and argmax
  agreement (share of positions whose argmax over the last axis agrees);
- greedy tokens (a plain no-cache loop) for a language-model head.

Weights are always computed in float32; the tolerance is the one of the dtype they are stored
in (``TOLERANCES``: a float16 copy carries float16 rounding). One side is loaded at a time,
so a check holds one model in memory, not four (PyTorch sides run first: TensorFlow keeps
freed memory for reuse, and freed PyTorch memory is handed back with ``malloc_trim``).
Frameworks are imported only when a side of theirs runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gpt2_dual._io import release_memory
from gpt2_dual.checkpoint import loading
from gpt2_dual.checkpoint.names import canonical_shapes
from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import HEAD_SPECS

FRAMEWORKS = ("pt", "tf")
#: Greedy tokens generated for a language-model head (fewer when n_positions is short).
GREEDY_STEPS = 6


@dataclass(frozen=True)
class Tolerance:
    """``|a - b| <= atol + rtol * |b|`` elementwise; ``greedy``: greedy tokens must agree."""

    atol: float
    rtol: float
    greedy: bool


#: By the dtype the compared weights are stored in. float32: the same weights in another
#: framework or file differ only by summation order; a real GPT-2's logits reach about 100, so
#: the bound has a relative part. float16/bfloat16: rounding of the weights themselves (float16
#: keeps 11 significant bits, bfloat16 8); near-tied greedy tokens may then differ.
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, greedy=True),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, greedy=False),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, greedy=False),
}


@dataclass(frozen=True)
class OutputCheck:
    """One output of one side against the reference."""

    side: str
    model: str
    output: str
    max_abs: float
    max_rel: float
    argmax_agreement: float | None
    worst: tuple[int, ...]
    ok: bool


@dataclass(frozen=True)
class GreedyCheck:
    """Greedy tokens of one side against the reference's."""

    side: str
    tokens: tuple[int, ...]
    reference: tuple[int, ...]
    ok: bool


@dataclass
class Report:
    """Everything a cross-check found; ``ok`` is the verdict."""

    dtype: str
    tolerance: Tolerance
    reference: str
    outputs: list[OutputCheck] = field(default_factory=list)
    greedy: list[GreedyCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs) and all(
            g.ok or not self.tolerance.greedy for g in self.greedy
        )

    def failures(self) -> list[OutputCheck]:
        return [c for c in self.outputs if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``--report`` writes)."""
        return {
            "ok": self.ok, "dtype": self.dtype, "tolerance": asdict(self.tolerance),
            "reference": self.reference, "notes": self.notes,
            "outputs": [asdict(c) for c in self.outputs],
            "greedy": [asdict(g) for g in self.greedy],
        }  # fmt: skip

    def table(self) -> str:
        """The report as a plain-text table."""
        tol = self.tolerance
        lines = [
            f"cross-check: weights stored as {self.dtype}, computed in float32; pass when "
            f"|diff| <= {tol.atol:g} + {tol.rtol:g} * |reference| at every unpadded position; "
            f"reference: {self.reference}",
            *self.notes,
            f"{'side':<12} {'model':<30} {'output':<18} {'max abs':>9} {'max rel':>9} "
            f"{'argmax':>7}  {'worst at':<14} verdict",
        ]
        for c in self.outputs:
            agree = "-" if c.argmax_agreement is None else f"{100 * c.argmax_agreement:.0f}%"
            lines.append(
                f"{c.side:<12} {c.model:<30} {c.output:<18} {c.max_abs:>9.2e} {c.max_rel:>9.2e} "
                f"{agree:>7}  {str(c.worst):<14} {'ok' if c.ok else 'MISMATCH'}"
            )
        for g in self.greedy:
            verdict = "ok" if g.ok else ("MISMATCH" if tol.greedy else "differs (allowed)")
            lines.append(f"greedy {g.side:<12} {list(g.tokens)} {verdict}")
        lines.append("verdict: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


# --------------------------------------------------------------------------- inputs
def check_config(config: GPT2Config, head: str) -> GPT2Config:
    """The config the sides run with: a sequence classifier without ``pad_token_id`` gets
    the last vocabulary id as pad, so a padded batch can be pooled."""
    if head == "sequence_classification" and config.pad_token_id is None:
        return config.copy(pad_token_id=config.vocab_size - 1)
    return config.copy()


def fixed_inputs(config: GPT2Config, head: str, seq: int = 8) -> dict[str, np.ndarray]:
    """Two rows of ``min(seq, n_positions)`` tokens, the second left-padded by a third.

    Returns:
        ``input_ids`` and ``attention_mask`` (``(2, T)``; ``(2, 2, T)`` for double heads,
        with ``mc_token_ids`` ``(2, 2)`` at the last position). Real tokens never equal
        ``pad_token_id``; padded positions hold it (0 without one).
    """
    length = min(seq, config.n_positions)
    pad = min(max(1, length // 3), length - 1)
    shape = (2, 2, length) if head == "double_heads" else (2, length)
    rng = np.random.default_rng(0)
    pad_id = config.pad_token_id
    if pad_id is not None and 0 <= pad_id < config.vocab_size:
        ids = rng.integers(0, config.vocab_size - 1, size=shape)
        ids[ids >= pad_id] += 1
    else:
        ids = rng.integers(0, config.vocab_size, size=shape)
    mask = np.ones(shape, dtype=np.int64)
    mask[1, ..., :pad] = 0
    ids[mask == 0] = pad_id if pad_id is not None else 0
    inputs = {"input_ids": ids.astype(np.int64), "attention_mask": mask}
    if head == "double_heads":
        inputs["mc_token_ids"] = np.full(shape[:2], length - 1, dtype=np.int64)
    return inputs


# --------------------------------------------------------------------------- one side
class Float32View:
    """A canonical view whose tensors are cast to float32 on access."""

    def __init__(self, view: Any) -> None:
        self._view, self.ignored = view, list(view.ignored)

    def keys(self) -> list[str]:
        return list(self._view.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._view

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._view.shape(name))

    def __getitem__(self, name: str) -> np.ndarray:
        return np.asarray(self._view[name]).astype(np.float32)


def build_model(framework: str, config: GPT2Config, head: str, view: Any) -> Any:
    """A float32 model of ``head`` in ``framework`` holding the view's tensors.

    Raises:
        CheckpointError: the view lacks tensors of that model or has misshapen ones.
    """
    class_name = HEAD_SPECS[head].class_name
    loading.check_complete(class_name, loading.plan_load(config, head, view))
    if framework == "tf":
        import gpt2_dual.tf as fw
        from gpt2_dual.tf.weights import load_canonical

        model = getattr(fw, class_name)(config)
        load_canonical(model, Float32View(view), strict=False)
        return model
    import torch

    import gpt2_dual.pt as fw
    from gpt2_dual.pt.pretrained_io import NoInitOnMeta
    from gpt2_dual.pt.weights import load_canonical

    with torch.device("meta"), NoInitOnMeta():  # no random initialization to overwrite
        model = getattr(fw, class_name)(config)
    load_canonical(model, Float32View(view), strict=False)
    return model.eval()


def forward(framework: str, model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs (its head's fields, plus the backbone's last hidden state)."""
    if framework == "pt":
        import torch

        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                        output_hidden_states=True)  # fmt: skip
        as_numpy = lambda t: t.detach().float().numpy()  # noqa: E731
    else:
        out = model(**inputs, output_hidden_states=True)
        as_numpy = lambda t: np.asarray(t, dtype=np.float32)  # noqa: E731
    fields = {"last_hidden_state": as_numpy(out["hidden_states"][-1])}
    head = type(model).head
    for name in HEAD_SPECS[head].outputs:
        if name != "last_hidden_state":
            fields[name] = as_numpy(out[name])
    return fields


def greedy_tokens(framework: str, model: Any, prompt: np.ndarray, steps: int) -> tuple[int, ...]:
    """Greedy continuation of one unpadded prompt ``(T,)`` by full forwards, no cache."""
    ids = prompt[None, :]
    tokens = []
    for _ in range(steps):
        logits = forward(framework, model, {"input_ids": ids})["logits"]
        token = int(np.argmax(logits[0, -1]))
        tokens.append(token)
        ids = np.concatenate([ids, [[token]]], axis=1)
    return tuple(tokens)


def run_side(framework: str, config: GPT2Config, head: str, view: Any) -> dict[str, Any]:
    """One side's outputs (and greedy tokens for an LM head); the model is freed after."""
    model = build_model(framework, config, head, view)
    inputs = fixed_inputs(config, head)
    result: dict[str, Any] = {"outputs": forward(framework, model, inputs), "greedy": None}
    if head == "lm":
        prompt = inputs["input_ids"][0]
        steps = min(GREEDY_STEPS, config.n_positions - len(prompt))
        result["greedy"] = greedy_tokens(framework, model, prompt, steps) if steps > 0 else ()
    del model
    release_memory(4 * sum(math.prod(s) for s in canonical_shapes(config, head).values()))
    return result


# --------------------------------------------------------------------------- comparing
def compare(
    side: str, model: str, output: str, actual: np.ndarray, expected: np.ndarray,
    mask: np.ndarray, tol: Tolerance,
) -> OutputCheck:  # fmt: skip
    """One output against the reference at the mask's real positions."""
    if actual.shape != expected.shape:
        return OutputCheck(side, model, output, float("inf"), float("inf"), None, (), False)
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    per_token = a.shape[: mask.ndim] == mask.shape
    keep = np.ones(a.shape, dtype=bool)
    if per_token:
        keep = np.broadcast_to(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)) > 0, a.shape)
    diff = np.where(keep, np.abs(a - b), 0.0)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    rel = diff / np.maximum(np.abs(b), tol.atol)
    ok = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(b)))
    agreement = None
    if output != "last_hidden_state" and a.shape[-1] > 1:
        fill = np.where(keep, 0.0, -np.inf)
        same = np.argmax(a + fill, axis=-1) == np.argmax(b + fill, axis=-1)
        if per_token and a.ndim > mask.ndim:
            same = same[mask > 0]
        agreement = float(np.mean(same))
    return OutputCheck(side, model, output, float(diff.max()), float(rel.max()), agreement,
                       worst, ok)  # fmt: skip


def crosscheck(
    sides: list[tuple[str, str, Any]],
    config: GPT2Config,
    head: str,
    dtype: str = "float32",
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every side and compare each with the first.

    Args:
        sides: ``(label, framework, view)``; the first is the reference.
        config: the checkpoint's config.
        head: the head to run (a key of ``HEAD_SPECS``).
        dtype: the dtype the compared weights are stored in; picks the tolerance.
        progress: called with a description as each side starts.

    Returns:
        The ``Report``; ``report.ok`` is the verdict.
    """
    config = check_config(config, head)
    tol = TOLERANCES[dtype]
    reference_label, *_ = sides[0]
    report = Report(dtype, tol, f"{reference_label} ({_framework_name(sides[0][1])})")
    mask = fixed_inputs(config, head)["attention_mask"]
    class_name = HEAD_SPECS[head].class_name
    results = {}
    # PyTorch sides first: TensorFlow keeps the memory of a freed model for reuse, which would
    # otherwise sit under every PyTorch model loaded after it.
    for label, framework, view in sorted(sides, key=lambda side: side[1] != "pt"):
        if progress is not None:
            progress(f"running {label}")
        results[label] = run_side(framework, config, head, view)
    reference = results[reference_label]
    for label, _, _ in sides[1:]:
        result = results[label]
        for name, expected in reference["outputs"].items():
            model = "GPT2Model" if name == "last_hidden_state" else class_name
            report.outputs.append(
                compare(label, model, name, result["outputs"][name], expected, mask, tol)
            )
        if reference["greedy"] is not None:
            tokens, ref = result["greedy"], reference["greedy"]
            report.greedy.append(GreedyCheck(label, tokens, ref, tokens == ref))
    if reference["greedy"] is not None:
        report.greedy.insert(0, GreedyCheck(reference_label, reference["greedy"],
                                            reference["greedy"], True))  # fmt: skip
    return report


def _framework_name(framework: str) -> str:
    return {"pt": "gpt2_dual.pt", "tf": "gpt2_dual.tf"}[framework]
