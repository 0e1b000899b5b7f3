"""What fine-tuning code calls on a model, under transformers' names.

Shapes: V ``vocab_size`` (V' after resizing), C ``n_embd``.

``TrainingMixin`` (a base of ``GPT2PreTrainedModel``) holds the calls that transformers'
``Trainer``, peft and training scripts make: gradient checkpointing on and off,
``enable_input_require_grads`` (adapters over frozen embeddings), ``floating_point_ops``
(``Trainer``'s ``total_flos``) and ``resize_token_embeddings`` (new tokens added to a
tokenizer).

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
"""

from __future__ import annotations

import functools
import logging
import numbers
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.distributions import MultivariateNormal, constraints

if TYPE_CHECKING:
    from gpt2_dual.pt.model import GPT2PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = ["TrainingMixin", "resize_token_embeddings"]


class TrainingMixin:
    """Training calls shared by every gpt2_dual.pt model (see the module docstring)."""

    #: transformers' class attributes that training tools read (``Trainer``, peft).
    main_input_name: ClassVar[str] = "input_ids"
    supports_gradient_checkpointing: ClassVar[bool] = True

    # ----------------------------------------------------------------- gradient checkpointing
    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Recompute each block in the backward pass while training (saves activations).

        Both of ``torch.utils.checkpoint``'s modes give the gradients of a run without
        checkpointing. With ``use_reentrant=True``, when nothing before the blocks needs a
        gradient (frozen embeddings, as under LoRA) the blocks' input is marked as needing one,
        so that the blocks' trainable weights still get theirs (transformers asks for
        ``enable_input_require_grads()`` there).

        Args:
            gradient_checkpointing_kwargs: extra keywords of ``torch.utils.checkpoint``
                (default ``use_reentrant=False``, PyTorch's advice; transformers' is True).
        """
        backbone = self._backbone()
        backbone.gradient_checkpointing = True
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        backbone.checkpoint_kwargs = kwargs

    def gradient_checkpointing_disable(self) -> None:
        """Back to storing activations."""
        self._backbone().gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether blocks are recomputed in the backward pass."""
        return self._backbone().gradient_checkpointing

    def enable_input_require_grads(self) -> None:
        """Make ``wte``'s output require a gradient even when ``wte`` is frozen (what
        transformers and peft call for adapters under gradient checkpointing)."""

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self.disable_input_require_grads()
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(hook)

    def disable_input_require_grads(self) -> None:
        """Remove the hook of ``enable_input_require_grads``, if there is one."""
        handle = self.__dict__.pop("_require_grads_hook", None)
        if handle is not None:
            handle.remove()

    # ----------------------------------------------------------------- accounting
    def floating_point_ops(
        self, input_dict: dict[str, Any], exclude_embeddings: bool = True
    ) -> int:
        """transformers' estimate of a batch's training FLOPs, forward and backward:
        ``6 x tokens x parameters`` (``Trainer`` adds it up as ``total_flos``).

        Args:
            input_dict: the batch; the elements of its ``input_ids`` are the tokens (none: 0).
            exclude_embeddings: leave the embedding weights out of the parameters.
        """
        ids = input_dict.get(self.main_input_name)
        tokens = 0 if ids is None else ids.numel()
        return 6 * tokens * self.num_parameters(exclude_embeddings=exclude_embeddings)

    # ----------------------------------------------------------------- vocabulary
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
    std = model.config.initializer_range
    with torch.no_grad():
        wte.weight.data = _resized(wte.weight, size, mean_resizing, std)
    wte.num_embeddings = size
    if wte.padding_idx is not None and wte.padding_idx >= size:
        wte.padding_idx = None
    lm_head = model.get_output_embeddings()
    if lm_head is not None:
        if lm_head.weight is not wte.weight:  # untied: the (V, C) rows of its own
            with torch.no_grad():
                lm_head.weight.data = _resized(lm_head.weight, size, mean_resizing, std)
        lm_head.out_features = size
    with model.config.shapes_unlocked():
        model.config.vocab_size = size
    model.tie_weights()
    return wte


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _resized(weight: torch.Tensor, size: int, mean_resizing: bool, std: float) -> torch.Tensor:
    """``(V, C)`` rows -> ``(size, C)``: the first ``min(V, size)`` kept, the others new."""
    old = weight.shape[0]
    keep = weight.detach()[: min(old, size)]
    if size <= old:
        return keep.clone()
    added = size - old
    if mean_resizing:
        new = _mean_rows(weight.detach().float(), added).to(weight.dtype)
    else:
        new = torch.empty(added, weight.shape[1], dtype=weight.dtype, device=weight.device)
        new.normal_(0.0, std)
    return torch.cat([keep, new])


def _mean_rows(rows: torch.Tensor, added: int) -> torch.Tensor:
    """``added`` draws of ``N(mean, 1e-9 * covariance)`` of ``rows`` ``(V, C)``, in float32 (the
    mean itself where that covariance is not positive definite), as transformers does."""
    mean = rows.mean(0)  # (C,)
    centered = rows - mean
    covariance = 1e-9 * (centered.T @ centered) / rows.shape[0]  # (C, C)
    if not bool(constraints.positive_definite.check(covariance).all()):
        return mean.expand(added, -1).clone()
    return MultivariateNormal(mean, covariance_matrix=covariance).sample((added,))


@functools.cache
def _log_mean_resizing() -> None:
    logger.warning(
        "resize_token_embeddings: new rows are drawn around the old rows' mean (transformers' "
        "mean_resizing=True, https://nlp.stanford.edu/~johnhew/vocab-expansion.html); pass "
        "mean_resizing=False for N(0, initializer_range)"
    )
