"""Token embeddings of the PyTorch models: ``get_input_embeddings``, ``set_input_embeddings``,
``get_output_embeddings``, ``tie_weights``, ``resize_token_embeddings`` and
``num_parameters``, with transformers' semantics.

Shapes: V vocabulary rows (V' after resizing), C ``n_embd``. ``wte.weight`` is ``(V, C)``; the
``lm_head`` is an ``nn.Linear`` whose weight is ``(V, C)`` too and, tied
(``config.tie_word_embeddings``, the default), the very ``Parameter`` of ``wte``.

``resize_token_embeddings`` follows transformers 4.57 (``PreTrainedModel
.resize_token_embeddings``): the size is rounded up to ``pad_to_multiple_of``; ``wte`` keeps
its module and its parameter object (so a tied ``lm_head``, which holds that same parameter,
stays tied, and an optimizer built earlier still points at it), with the first
``min(V, V')`` rows unchanged; an untied ``lm_head`` gets the same new size; and
``config.vocab_size`` follows (``GPT2Config.shapes_unlocked``). New rows are, with
``mean_resizing=True`` (transformers' default), draws of a multivariate normal with the old
rows' mean and ``1e-9`` times their covariance, so in practice the mean row, which keeps the
next-token distribution of the old tokens nearly unchanged (the mean of the old rows if that
covariance is not positive definite); with ``mean_resizing=False``, draws of
``N(0, initializer_range)``. The random draws are not transformers' draw for draw (transformers
also draws, and then overwrites, a whole new matrix), so only the distributions match.

``state_dict()`` holds both names of a tied weight, as transformers' does, but
``lm_head.weight`` as a copy (``separate_tied_head``): safetensors refuses two names for one
tensor, and transformers' ``Trainer`` hands ``model.state_dict()`` to
``safetensors.torch.save_file`` for any model that is not its own ``PreTrainedModel``. The copy
costs one ``(V, C)`` tensor while the state dict lives, and loads back into the one shared
parameter (ours or transformers'). ``save_pretrained`` writes the tied weight once, as
transformers does.
"""

from __future__ import annotations

import functools
import logging
import numbers
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributions import MultivariateNormal, constraints

if TYPE_CHECKING:
    from gpt2_dual.pt.model import GPT2PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingsMixin", "added_rows", "resize_token_embeddings", "separate_tied_head"]


def added_rows(
    old: torch.Tensor, added: int, *, mean_resizing: bool, initializer_range: float
) -> torch.Tensor:
    """``(added, C)`` rows for new tokens, as transformers 4.57 initializes them, in ``old``'s
    dtype and device.

    Args:
        old: ``(V, C)`` rows of the current matrix.
        added: number of rows to make.
        mean_resizing: True: drawn from N(mean of ``old``, 1e-9 * covariance of ``old``), in
            float32, or the mean itself when that covariance is not positive definite
            (transformers' default: new tokens barely move the next-token distribution);
            False: drawn from N(0, ``initializer_range``), the model's initialization.
        initializer_range: the config's standard deviation.
    """
    if not mean_resizing:
        new = torch.empty(added, old.shape[1], dtype=old.dtype, device=old.device)
        return new.normal_(0.0, initializer_range)
    rows = old.detach().float()
    mean = rows.mean(0)  # (C,)
    centered = rows - mean
    covariance = 1e-9 * (centered.T @ centered) / rows.shape[0]  # (C, C)
    if not bool(constraints.positive_definite.check(covariance).all()):
        return mean.expand(added, -1).to(old.dtype, copy=True)
    return MultivariateNormal(mean, covariance_matrix=covariance).sample((added,)).to(old.dtype)


@functools.cache
def _log_mean_resizing() -> None:
    logger.warning(
        "resize_token_embeddings: new rows are drawn around the old rows' mean (transformers' "
        "mean_resizing=True, https://nlp.stanford.edu/~johnhew/vocab-expansion.html); pass "
        "mean_resizing=False for N(0, initializer_range)"
    )


def _resized(old: torch.Tensor, rows: int, **init: Any) -> torch.Tensor:
    """``old`` ``(V, C)`` cut or extended to ``(rows, C)``; the first rows are kept as they are."""
    keep = old.detach()[:rows]
    if rows <= len(old):
        return keep.clone()
    return torch.cat([keep, added_rows(old, rows - len(old), **init)])


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def separate_tied_head(
    module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """``state_dict`` post-hook (registered on every model): a tied ``lm_head.weight`` becomes a
    copy of ``wte.weight`` (see the module docstring); with ``keep_vars=True`` (the parameters
    themselves) nothing changes."""
    key = f"{prefix}lm_head.weight"
    value = state.get(key)
    if value is None or isinstance(value, nn.Parameter):
        return
    head = getattr(module, "lm_head", None)
    if head is not None and head.weight is module.get_input_embeddings().weight:
        state[key] = value.clone()


class EmbeddingsMixin:
    """Mixed into ``GPT2PreTrainedModel``; see the module docstring."""

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding ``wte``."""
        return self._backbone().wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace ``wte`` (shape ``(vocab_size, n_embd)``); a tied ``lm_head`` follows it. The
        config is not changed (as in transformers): use ``resize_token_embeddings`` to change
        the vocabulary size.

        Raises:
            ValueError: ``value`` is not an ``nn.Embedding`` of ``n_embd`` columns.
        """
        n_embd = self.config.n_embd
        if not isinstance(value, nn.Embedding) or value.embedding_dim != n_embd:
            shape = tuple(value.weight.shape) if hasattr(value, "weight") else ""
            raise ValueError(
                f"set_input_embeddings needs an nn.Embedding with embedding_dim={n_embd}, got "
                f"{type(value).__name__}{shape}"
            )
        self._backbone().wte = value
        self.tie_weights()

    def get_output_embeddings(self) -> nn.Linear | None:
        """The ``lm_head`` of the LM heads, else None."""
        return getattr(self, "lm_head", None)

    def tie_weights(self) -> None:
        """Share ``lm_head.weight`` with ``wte.weight`` when ``config.tie_word_embeddings``."""
        if self.config.tie_word_embeddings and hasattr(self, "lm_head"):
            self.lm_head.weight = self.get_input_embeddings().weight

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Embedding:
        """Give ``wte`` (and an untied ``lm_head``) ``new_num_tokens`` rows, as transformers 4.57
        does; see the module docstring for what the new rows hold.

        Args:
            new_num_tokens: the new vocabulary size V' (None: the current one, to pad it).
            pad_to_multiple_of: round V' up to a multiple of this.
            mean_resizing: new rows around the old rows' mean (transformers' default); False:
                ``N(0, initializer_range)``.

        Returns:
            ``wte``, now ``(V', C)`` (the same module); with both sizes None, nothing changes.

        Raises:
            ValueError: a size or multiple that is not a positive integer.

        Example:
            >>> model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)  # doctest: +SKIP
        """
        return resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of, mean_resizing)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of parameters (shared ones, like a tied ``lm_head``, counted once).

        Args:
            only_trainable: count only those with ``requires_grad``.
            exclude_embeddings: leave out the ``nn.Embedding`` weights (``wte``, ``wpe``), as
                transformers does.
        """
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel() for p in self.parameters()
            if id(p) not in skip and (p.requires_grad or not only_trainable)
        )  # fmt: skip


def resize_token_embeddings(
    model: GPT2PreTrainedModel,
    new_num_tokens: int | None,
    pad_to_multiple_of: int | None,
    mean_resizing: bool,
) -> nn.Embedding:
    """``model.resize_token_embeddings``: the arguments as that method takes them."""
    wte = model.get_input_embeddings()
    if new_num_tokens is None and pad_to_multiple_of is None:
        return wte
    old = wte.weight.shape[0]
    size = old if new_num_tokens is None else _positive("new_num_tokens", new_num_tokens)
    if pad_to_multiple_of is not None:
        multiple = _positive("pad_to_multiple_of", pad_to_multiple_of)
        size = -(-size // multiple) * multiple
    if size == old:
        return wte
    if mean_resizing and size > old:
        _log_mean_resizing()
    init = dict(mean_resizing=mean_resizing, initializer_range=model.config.initializer_range)
    with torch.no_grad():
        wte.weight.data = _resized(wte.weight, size, **init)
    wte.num_embeddings = size
    if wte.padding_idx is not None and wte.padding_idx >= size:
        wte.padding_idx = None
    lm_head = model.get_output_embeddings()
    if lm_head is not None:
        if lm_head.weight is not wte.weight:  # untied: the (V, C) rows of its own
            with torch.no_grad():
                lm_head.weight.data = _resized(lm_head.weight, size, **init)
        lm_head.out_features = size
    with model.config.shapes_unlocked():
        model.config.vocab_size = size
    model.tie_weights()
    return wte
