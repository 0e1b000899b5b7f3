"""What fine-tuning code calls on a model, under transformers' names.

``TrainingMixin`` (a base of ``GPT2PreTrainedModel``) holds the calls that transformers'
``Trainer``, peft and training scripts make: gradient checkpointing on and off,
``enable_input_require_grads`` (adapters over frozen embeddings), ``floating_point_ops``
(``Trainer``'s ``total_flos``) and the class attributes those tools read. The vocabulary calls
(``resize_token_embeddings``, new tokens added to a tokenizer) are in ``embeddings.py``, as on
the Keras side.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from gpt2_dual.pt.embeddings import resize_token_embeddings

__all__ = ["TrainingMixin", "resize_token_embeddings"]


class TrainingMixin:
    """Training calls shared by every gpt2_dual.pt model (see the module docstring)."""

    #: transformers' class attributes that training tools read (``Trainer``, peft).
    main_input_name: ClassVar[str] = "input_ids"
    supports_gradient_checkpointing: ClassVar[bool] = True
    #: What ``Trainer`` may find missing when it resumes from a checkpoint and then mends with
    #: ``tie_weights()`` (transformers' default, None: a checkpoint holds every weight).
    _keys_to_ignore_on_save: ClassVar[list[str] | None] = None

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
