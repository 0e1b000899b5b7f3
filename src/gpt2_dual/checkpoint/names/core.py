"""Core of the weight-name table: canonical names, layouts, and both frameworks' paths.

Canonical names are transformers' GPT-2 keys without the ``transformer.`` prefix (``wte.weight``,
``h.0.attn.c_attn.weight``, ``lm_head.weight``), in transformers' layouts: blocks use its
``Conv1D``, whose weight is ``(in, out)``; heads use ``nn.Linear``, whose weight is
``(out, in)``. A canonical state dict maps these names to numpy arrays.

Framework paths are attribute paths (a ``getattr`` walk; digits index lists) relative to the
backbone for backbone rows and to the head model for head rows. gpt2_dual.pt keeps
transformers' layouts exactly (its own ``Conv1D`` in the blocks, ``nn.Linear`` in the heads),
so its state dicts equal transformers' and a checkpoint's tensors can be used in place; Keras
``Dense`` kernels are ``(in, out)``, so Linear rows are transposed on the Keras side. Shape
checks do not catch a missing transpose on a square matrix (``attn.c_proj`` is ``(C, C)``):
the parity tests with random, non-symmetric weights do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import HEAD_SPECS, multiple_choice_features

#: Prefix transformers' head models put before backbone keys.
HF_PREFIX = "transformer."
#: Backbone attribute of every head model, in both frameworks.
BACKBONE_ATTR = "transformer"
#: Keys in old checkpoints that are causal-mask buffers, not parameters.
IGNORED = (re.compile(r"h\.\d+\.(attn|crossattention)\.(bias|masked_bias)"),)


@dataclass(frozen=True)
class Param:
    """One parameter: canonical name, framework paths, layout transforms and shape.

    Attributes:
        canonical: transformers' key (``{i}`` stands for the block index).
        pt: attribute path in gpt2_dual.pt (same layout as the canonical array).
        tf: attribute path in gpt2_dual.tf.
        tf_transpose: the Keras variable is the transpose of the canonical array.
        shape: canonical shape for a config.
    """

    canonical: str
    pt: str
    tf: str
    tf_transpose: bool
    shape: Callable[[GPT2Config], tuple[int, ...]]


def _ln(name: str) -> tuple[Param, Param]:
    size = lambda c: (c.n_embd,)  # noqa: E731
    return (
        Param(f"{name}.weight", f"{name}.weight", f"{name}.gamma", False, size),
        Param(f"{name}.bias", f"{name}.bias", f"{name}.beta", False, size),
    )


def _conv1d(name: str, fan_in, fan_out) -> tuple[Param, Param]:
    """A transformers Conv1D: weight (in, out), as gpt2_dual.pt's Conv1D and Keras Dense."""
    return (
        Param(
            f"{name}.weight", f"{name}.weight", f"{name}.kernel", False,
            lambda c: (fan_in(c), fan_out(c)),
        ),
        Param(f"{name}.bias", f"{name}.bias", f"{name}.bias", False, lambda c: (fan_out(c),)),
    )  # fmt: skip


def _linear(name: str, fan_in, fan_out, *, bias: bool) -> tuple[Param, ...]:
    """A transformers nn.Linear: weight (out, in). Keras Dense transposes."""
    weight = Param(
        f"{name}.weight", f"{name}.weight", f"{name}.kernel", True,
        lambda c: (fan_out(c), fan_in(c)),
    )  # fmt: skip
    if not bias:
        return (weight,)
    return weight, Param(
        f"{name}.bias", f"{name}.bias", f"{name}.bias", False, lambda c: (fan_out(c),)
    )


def _c(c: GPT2Config) -> int:
    return c.n_embd


EMBEDDINGS = (
    Param("wte.weight", "wte.weight", "wte.embeddings", False, lambda c: (c.vocab_size, c.n_embd)),
    Param("wpe.weight", "wpe.weight", "wpe.embeddings", False, lambda c: (c.n_positions, c.n_embd)),
)  # fmt: skip

#: Rows of one block; ``{i}`` is the block index.
BLOCK = (
    *_ln("h.{i}.ln_1"),
    *_conv1d("h.{i}.attn.c_attn", _c, lambda c: 3 * c.n_embd),
    *_conv1d("h.{i}.attn.c_proj", _c, _c),
    *_ln("h.{i}.ln_2"),
    *_conv1d("h.{i}.mlp.c_fc", _c, lambda c: c.inner_dim),
    *_conv1d("h.{i}.mlp.c_proj", lambda c: c.inner_dim, _c),
)

#: Extra rows of a block when ``add_cross_attention``.
CROSS_ATTENTION = (
    *_conv1d("h.{i}.crossattention.c_attn", _c, lambda c: 2 * c.n_embd),
    *_conv1d("h.{i}.crossattention.q_attn", _c, _c),
    *_conv1d("h.{i}.crossattention.c_proj", _c, _c),
    *_ln("h.{i}.ln_cross_attn"),
)

FINAL = _ln("ln_f")

LM_HEAD = _linear("lm_head", _c, lambda c: c.vocab_size, bias=False)

#: Head rows per head name (keys of ``HEAD_SPECS``), before the tied/optional filtering.
HEADS: dict[str, tuple[Param, ...]] = {
    "base": (),
    "lm": LM_HEAD,
    "double_heads": (
        *LM_HEAD,
        *_linear("multiple_choice_head.summary", _c, multiple_choice_features, bias=True),
    ),
    "question_answering": _linear("qa_outputs", _c, lambda c: 2, bias=True),
    "sequence_classification": _linear("score", _c, lambda c: c.num_labels, bias=False),
    "token_classification": _linear("classifier", _c, lambda c: c.num_labels, bias=True),
}
assert set(HEADS) == set(HEAD_SPECS)


def backbone_params(config: GPT2Config) -> list[Param]:
    """The backbone's rows for ``config``, with ``{i}`` filled in for every block."""
    rows = list(EMBEDDINGS)
    block = BLOCK + (CROSS_ATTENTION if config.add_cross_attention else ())
    for i in range(config.n_layer):
        rows.extend(_fill(p, i) for p in block)
    rows.extend(FINAL)
    return rows


def head_params(config: GPT2Config, head: str) -> list[Param]:
    """A head's own rows: the lm_head is left out when tied to ``wte``, the double-heads
    summary when ``summary_use_proj`` is False."""
    rows = []
    for p in HEADS[head]:
        if p.canonical == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if p.canonical.startswith("multiple_choice_head.") and not config.summary_use_proj:
            continue
        rows.append(p)
    return rows


def params(config: GPT2Config, head: str) -> list[Param]:
    """Every parameter of the ``head`` model for ``config``, backbone first."""
    return backbone_params(config) + head_params(config, head)


def canonical_shapes(config: GPT2Config, head: str) -> dict[str, tuple[int, ...]]:
    """Canonical name -> expected canonical shape, for every parameter of the model."""
    return {p.canonical: p.shape(config) for p in params(config, head)}


def is_backbone(canonical: str) -> bool:
    """True for backbone rows (paths relative to the ``transformer`` attribute)."""
    return not canonical.startswith(tuple(a + "." for a in _HEAD_ATTRS))


def to_canonical_key(key: str) -> str | None:
    """A checkpoint key -> its canonical name; None for ignored buffers.

    Strips ``transformer.`` once, at the start only (never by suffix search).
    """
    if key.startswith(HF_PREFIX):
        key = key[len(HF_PREFIX) :]
    if any(pattern.fullmatch(key) for pattern in IGNORED):
        return None
    return key


def _fill(p: Param, i: int) -> Param:
    return Param(
        p.canonical.format(i=i), p.pt.format(i=i), p.tf.format(i=i),
        p.tf_transpose, p.shape,
    )  # fmt: skip


_HEAD_ATTRS = sorted({a for spec in HEAD_SPECS.values() for a in spec.attrs})
