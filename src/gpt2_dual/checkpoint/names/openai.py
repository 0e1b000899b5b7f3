"""OpenAI's original GPT-2 release (a TF1 checkpoint) <-> canonical names and layouts.

OpenAI's ``src/model.py`` names its variables by TF1 variable scope: ``model/wte`` (vocab, C),
``model/wpe`` (n_ctx, C), then per block ``model/h{i}/ln_1/{g,b}``, ``attn/c_attn/{w,b}``,
``attn/c_proj``, ``ln_2``, ``mlp/c_fc``, ``mlp/c_proj``, and ``model/ln_f/{g,b}``. Its
``conv1d`` keeps a leading axis of 1 on every weight: ``w`` is ``(1, in, out)``, which is
transformers' ``Conv1D`` layout ``(in, out)`` with that axis squeezed. Layer norms store
``g`` (gain) and ``b``, canonical ``weight`` and ``bias``.

The release has no separate output matrix: the LM head is tied to ``wte`` (head ``"lm"``),
so the table covers exactly ``core.params(config, "lm")`` for a tied config without cross
attention (``test_openai_format.py`` checks the bijection).

transformers' ``load_tf_weights_in_gpt2`` maps the same names by walking them as attribute
paths and ``squeeze()``-ing every array; this table spells each one out instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt2_dual.checkpoint.names.core import canonical_shapes
from gpt2_dual.config import GPT2Config

#: The head OpenAI's checkpoints were saved from: the LM head, tied to ``wte``.
HEAD = "lm"
#: Scope of every model variable.
SCOPE = "model/"


@dataclass(frozen=True)
class OpenAIParam:
    """One variable of the release.

    Attributes:
        canonical: canonical name (``{i}`` stands for the block index).
        variable: TF1 variable name in the checkpoint (``{i}`` likewise).
        leading_one: stored as ``(1, *canonical_shape)`` (OpenAI's ``conv1d`` weights).
    """

    canonical: str
    variable: str
    leading_one: bool = False


def _ln(canonical: str, scope: str) -> tuple[OpenAIParam, ...]:
    return (
        OpenAIParam(f"{canonical}.weight", f"{scope}/g"),
        OpenAIParam(f"{canonical}.bias", f"{scope}/b"),
    )


def _conv1d(canonical: str, scope: str) -> tuple[OpenAIParam, ...]:
    return (
        OpenAIParam(f"{canonical}.weight", f"{scope}/w", leading_one=True),
        OpenAIParam(f"{canonical}.bias", f"{scope}/b"),
    )


EMBEDDINGS = (
    OpenAIParam("wte.weight", "model/wte"),
    OpenAIParam("wpe.weight", "model/wpe"),
)

#: Rows of one block; ``{i}`` is the block index.
BLOCK = (
    *_ln("h.{i}.ln_1", "model/h{i}/ln_1"),
    *_conv1d("h.{i}.attn.c_attn", "model/h{i}/attn/c_attn"),
    *_conv1d("h.{i}.attn.c_proj", "model/h{i}/attn/c_proj"),
    *_ln("h.{i}.ln_2", "model/h{i}/ln_2"),
    *_conv1d("h.{i}.mlp.c_fc", "model/h{i}/mlp/c_fc"),
    *_conv1d("h.{i}.mlp.c_proj", "model/h{i}/mlp/c_proj"),
)

FINAL = _ln("ln_f", "model/ln_f")


@dataclass(frozen=True)
class Variable:
    """One variable of a checkpoint for a given config: names, shapes, and the transform.

    Attributes:
        canonical: canonical name (``h.0.attn.c_attn.weight``).
        variable: checkpoint variable name (``model/h0/attn/c_attn/w``).
        shape: shape stored in the checkpoint (``(1, C, 3C)``).
        canonical_shape: shape in the canonical layout (``(C, 3C)``).
        leading_one: the stored array carries a leading axis of 1 to drop.
    """

    canonical: str
    variable: str
    shape: tuple[int, ...]
    canonical_shape: tuple[int, ...]
    leading_one: bool

    def to_canonical(self, array):
        """The stored array ``self.shape`` -> the canonical layout ``self.canonical_shape``."""
        return array[0] if self.leading_one else array


def variables(config: GPT2Config) -> list[Variable]:
    """Every variable of a release checkpoint for ``config``, in canonical table order.

    Raises:
        ValueError: ``config`` is not a layout OpenAI's release can hold (cross attention, an
            untied LM head); the release format has no variables for those.
    """
    if config.add_cross_attention or not config.tie_word_embeddings:
        raise ValueError(
            "OpenAI's GPT-2 layout has no cross attention and ties the LM head to wte; "
            f"got add_cross_attention={config.add_cross_attention}, "
            f"tie_word_embeddings={config.tie_word_embeddings}"
        )
    shapes = canonical_shapes(config, HEAD)
    rows = list(EMBEDDINGS)
    for i in range(config.n_layer):
        rows.extend(
            OpenAIParam(p.canonical.format(i=i), p.variable.format(i=i), p.leading_one)
            for p in BLOCK
        )
    rows.extend(FINAL)
    out = []
    for p in rows:
        shape = tuple(shapes[p.canonical])
        stored = (1, *shape) if p.leading_one else shape
        out.append(Variable(p.canonical, p.variable, stored, shape, p.leading_one))
    return out
