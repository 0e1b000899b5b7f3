"""``GPT2PreTrainedModel`` (what every model shares) and the ``GPT2Model`` backbone.

Shapes: B batch, T new tokens, P cached tokens, S key positions (P + T; ``S_max`` with a
``StaticCache``), C ``n_embd``, H heads.

Inputs are checked, folded and given positions by ``inputs.py`` (validation rules, positions
from the attention mask, ``(B, N, T)`` multiple-choice inputs); the forward pass itself is
embeddings, one ``AttentionMask`` for all layers, the blocks and ``ln_f``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gpt2_dual.config import GPT2Config
from gpt2_dual.hub.push import PushToHubMixin, api_of
from gpt2_dual.outputs import BaseModelOutput
from gpt2_dual.pt import weights as _weights
from gpt2_dual.pt.attention import Attention, AttentionMask, causal_mask, check_backend
from gpt2_dual.pt.cache import DynamicCache, StaticCache, as_cache
from gpt2_dual.pt.embeddings import EmbeddingsMixin, separate_tied_head
from gpt2_dual.pt.inputs import as_tensors, check_head_inputs, check_inputs, fold, positions, unfold
from gpt2_dual.pt.layers import MLP, Block
from gpt2_dual.pt.linear import Conv1D
from gpt2_dual.pt.packing import drop_kept_packs
from gpt2_dual.pt.pretrained_io import NoInitOnMeta
from gpt2_dual.pt.training import TrainingMixin

logger = logging.getLogger(__name__)

__all__ = ["GPT2Model", "GPT2PreTrainedModel", "empty_layers"]


_INIT_DOC = """Build a ``{name}`` from ``config`` with freshly initialized weights (transformers'
initialization); ``{name}.from_pretrained(...)`` loads a checkpoint instead.

Args:
    config: the model's config (a ``gpt2_dual.GPT2Config``); sizes are locked once the model
        is built.
    attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.
"""


@contextmanager
def empty_layers() -> Iterator[None]:
    """Inside, layers are built on ``meta`` with their initializers skipped: no data, no random
    draws. The model's ``_finish_init`` then gives them storage on the default device and draws
    each weight once (what their own constructors would draw is drawn again there)."""
    with torch.device("meta"), NoInitOnMeta():
        yield


def _materialise(module: nn.Module, device: torch.device) -> None:
    """Give ``module``'s ``meta`` parameters uninitialized storage on ``device`` (as
    ``nn.Module.to_empty``, whose ``empty_like`` from meta imports sympy: 0.4 s)."""
    made: dict[int, nn.Parameter] = {}  # a parameter shared inside module stays shared
    for owner in module.modules():
        for name, param in list(owner.named_parameters(recurse=False)):
            if param.is_meta:
                if id(param) not in made:
                    data = torch.empty(param.shape, dtype=param.dtype, device=device)
                    made[id(param)] = nn.Parameter(data, requires_grad=param.requires_grad)
                setattr(owner, name, made[id(param)])


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


class GPT2PreTrainedModel(TrainingMixin, EmbeddingsMixin, nn.Module, PushToHubMixin):
    """What every gpt2_dual.pt model shares: config, initialization, loading, backends; the
    embeddings (``embeddings.py``: tying, resizing) and training habits (``training.py``).

    Args:
        config: the model's config; sizes are locked once the model is built.
        attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.

    Raises:
        ValueError: unknown ``attn_implementation``.
        ImportError: ``"flash_attention_2"`` without the ``flash_attn`` package.
    """

    #: Key of ``gpt2_dual.heads.HEAD_SPECS``.
    head: ClassVar[str]

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        """Build the model from ``config`` with freshly initialized weights.

        Args:
            config: the model's config; sizes are locked once the model is built.
            attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.
        """
        super().__init__()
        if not isinstance(config, GPT2Config):
            raise TypeError(f"config must be a gpt2_dual GPT2Config, got {type(config).__name__}")
        self.config = config
        self.attn_implementation = check_backend(attn_implementation)
        self.register_state_dict_post_hook(separate_tied_head)  # see embeddings.py

    def _finish_init(self, *modules: nn.Module) -> None:
        """End of a subclass ``__init__``: lock sizes, tie, then give ``modules`` (built inside
        ``empty_layers()``) storage on the default device and draw each of their weights once.

        A tied ``lm_head`` takes ``wte``'s weight first and is not drawn. Under
        ``torch.device("meta")`` (``from_pretrained``) nothing gets data: the loader fills it.
        """
        self.config.lock_shapes(type(self).__name__)
        self.tie_weights()
        device = torch.get_default_device()
        if device.type == "meta":
            return
        for module in modules:
            if any(p.is_meta for p in module.parameters()):
                _materialise(module, device)
                self._draw(module)

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        if getattr(self, "quantization_method", None) == "bitsandbytes":  # before any change
            from gpt2_dual.pt.bnb import check_cast

            check_cast(self, fn)
        drop_kept_packs(self)  # generate's packed copies of the old weights
        return super()._apply(fn, recurse)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # help(GPT2LMHeadModel.__init__) shows this class's own words, not nn.Module's.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not init.__doc__:
            init.__doc__ = _INIT_DOC.format(name=cls.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``forward`` after converting lists and numpy arrays to tensors on the model's device
        and checking the head's own inputs (labels, ``mc_token_ids``; ``inputs.py``)."""
        args, kwargs = as_tensors(self, args, kwargs)
        check_head_inputs(self, args, kwargs)
        return super().__call__(*args, **kwargs)

    # ----------------------------------------------------------------- weights
    # Thin wrappers: help() shows the implementation's full docstring and signature (api_of).
    @classmethod
    @api_of(_weights.from_pretrained)
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **kwargs: Any):
        return _weights.from_pretrained(cls, path_or_repo_id, **kwargs)

    @api_of(_weights.save_pretrained)
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        return _weights.save_pretrained(self, save_directory, **kwargs)

    @classmethod
    def can_generate(cls) -> bool:
        """Whether the class has ``generate`` (the LM heads), as transformers' ``can_generate``."""
        return callable(getattr(cls, "generate", None))

    @torch.no_grad()
    def _draw(self, root: nn.Module) -> None:
        """transformers' initialization of ``root``'s parameters, each weight drawn once (a
        tied weight too): see ``init_weights``."""
        std = self.config.initializer_range
        # GPT-2's residual scaling: two residual additions per block.
        residual = {id(m.c_proj.weight) for m in root.modules() if isinstance(m, Attention | MLP)}
        drawn: set[int] = set()
        for module in root.modules():
            weight = (
                module.weight if isinstance(module, nn.Linear | Conv1D | nn.Embedding) else None
            )
            if weight is not None and id(weight) not in drawn:
                drawn.add(id(weight))
                scale = math.sqrt(2 * self.config.n_layer) if id(weight) in residual else 1
                weight.normal_(0.0, std / scale)
            if isinstance(module, nn.Linear | Conv1D) and module.bias is not None:
                module.bias.zero_()
            if isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def init_weights(self) -> None:
        """transformers' initialization of every parameter, then ``tie_weights``.

        Linear and embedding weights ~ N(0, initializer_range), biases 0, LayerNorm 1 and 0,
        ``c_proj`` weights ~ N(0, initializer_range / sqrt(2 * n_layer)).
        """
        self._draw(self)
        self.tie_weights()

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters."""
        return next(self.parameters()).dtype

    # ----------------------------------------------------------------- switches
    def _backbone(self) -> GPT2Model:
        return self if isinstance(self, GPT2Model) else self.transformer

    def set_attn_implementation(self, name: str) -> None:
        """Switch every attention layer to ``"eager"``, ``"sdpa"`` or ``"flash_attention_2"``."""
        check_backend(name)
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = name
            if isinstance(module, GPT2PreTrainedModel):
                module.attn_implementation = name


class GPT2Model(GPT2PreTrainedModel):
    """The GPT-2 transformer: token and position embeddings, ``n_layer`` blocks, final LayerNorm.

    Args:
        config: the model's config.
        attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.

    Example:
        >>> import torch
        >>> from gpt2_dual import GPT2Config
        >>> from gpt2_dual.pt import GPT2Model
        >>> model = GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=4)).eval()
        >>> model(torch.tensor([[15496, 995]])).last_hidden_state.shape
        torch.Size([1, 2, 64])
    """

    head = "base"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        c = config
        with empty_layers():  # no data and no draws: _finish_init draws once
            self.wte = nn.Embedding(c.vocab_size, c.n_embd)
            self.wpe = nn.Embedding(c.n_positions, c.n_embd)
            self.drop = nn.Dropout(c.embd_pdrop)
            self.h = nn.ModuleList(
                Block(
                    c.n_embd, c.n_head, c.inner_dim,
                    layer_idx=i,
                    layer_norm_epsilon=c.layer_norm_epsilon,
                    activation_function=c.activation_function,
                    add_cross_attention=c.add_cross_attention,
                    resid_pdrop=c.resid_pdrop,
                    attn_pdrop=c.attn_pdrop,
                    scale_attn_weights=c.scale_attn_weights,
                    scale_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
                    reorder_and_upcast=c.reorder_and_upcast_attn,
                    backend=attn_implementation,
                )
                for i in range(c.n_layer)
            )  # fmt: skip
            self.ln_f = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}
        self._finish_init(self)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        """Run the backbone.

        Args:
            input_ids: ``(B, T)`` token ids (or ``(B, N, T)``); exclusive with ``inputs_embeds``.
            past_key_values: a ``DynamicCache``/``StaticCache``, or transformers' legacy tuple.
            attention_mask: ``(B, P + T)``, 1 for real tokens, 0 for padding (with a
                ``StaticCache`` also ``(B, S_max)``).
            token_type_ids: ``(B, T)`` ids added through ``wte``, as in transformers.
            position_ids: ``(B, T)`` or ``(1, T)``; default: from the mask (module docstring).
            inputs_embeds: ``(B, T, C)`` instead of ``input_ids``.
            encoder_hidden_states: ``(B, S_enc, C)`` for cross-attention.
            encoder_attention_mask: ``(B, S_enc)``, 1 for real encoder tokens.
            use_cache: return a cache (None: ``config.use_cache``).
            output_attentions: also return each layer's attention probabilities.
            output_hidden_states: also return the input of every block and the final output.

        Returns:
            ``BaseModelOutput``: ``last_hidden_state`` ``(B, T, C)``; ``past_key_values`` when
            caching; ``hidden_states`` (n_layer + 1 tensors, the last after ``ln_f``);
            ``attentions`` (n_layer tensors ``(B, H, T, S)``); ``cross_attentions``.

        Raises:
            ValueError: invalid inputs (see the module docstring).
        """
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and self.gradient_checkpointing and self.training:
            _warn_once("use_cache=True is incompatible with gradient checkpointing; not caching")
            use_cache = False
        cache = as_cache(past_key_values)
        if cache is None and use_cache:
            cache = DynamicCache()
        past, padded = check_inputs(
            self.config, input_ids, inputs_embeds, attention_mask, token_type_ids, cache,
            encoder_hidden_states, encoder_attention_mask, self.wte.weight.dtype, position_ids,
        )  # fmt: skip
        lead, (input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids) = fold(
            input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids
        )
        T = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        device = self.wte.weight.device
        query_pos = (  # (T,), cache slots (= positions unless padded) of the new tokens
            torch.arange(T, device=device) + past
            if isinstance(past, torch.Tensor)
            else torch.arange(past, past + T, device=device)
        )
        key_ok = None if padded is False else attention_mask.bool()  # (B, S') or None
        if position_ids is None:
            position_ids = positions(key_ok, attention_mask, query_pos)
        x = self._embed(input_ids, inputs_embeds, token_type_ids, position_ids)
        mask = self._mask(key_ok, query_pos, cache, past, output_attentions)
        enc_mask = None
        if encoder_attention_mask is not None:
            enc_ok = encoder_attention_mask.bool()
            enc_mask = AttentionMask(enc_ok[:, None, None, :], enc_ok, None)
        x, hidden, attentions, cross = self._blocks(
            x, mask, cache, encoder_hidden_states, enc_mask, output_attentions, output_hidden_states
        )
        return BaseModelOutput(
            last_hidden_state=unfold(x, lead, 2),
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(unfold(h, lead, 2) for h in hidden) if hidden else None,
            attentions=tuple(unfold(a, lead, 3) for a in attentions) if attentions else None,
            cross_attentions=tuple(unfold(a, lead, 3) for a in cross) if cross else None,
        )

    def _embed(self, input_ids, inputs_embeds, token_type_ids, position_ids) -> torch.Tensor:
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.wpe(position_ids)
        if token_type_ids is not None:
            x = x + self.wte(token_type_ids)
        return self.drop(x)  # (B, T, C)

    def _mask(self, key_ok, query_pos, cache, past, output_attentions) -> AttentionMask:
        static = isinstance(cache, StaticCache)
        if key_ok is None and not static and (len(query_pos) == 1 or past == 0):
            return AttentionMask()  # plain causal (T == S) or one query seeing every key
        key_length = cache.key_length(len(query_pos)) if cache is not None else len(query_pos)
        dense = output_attentions or self.attn_implementation != "flash_attention_2"
        mask = causal_mask(key_ok, query_pos, key_length, dense=dense)
        # Without padding, every key slot of a DynamicCache holds a real token.
        return mask if key_ok is not None or static else mask._replace(keys=None)

    def _blocks(self, x, mask, cache, encoder, enc_mask, output_attentions, output_hidden_states):
        hidden, attentions, cross = [], [], []
        recompute = self.gradient_checkpointing and self.training and cache is None
        reentrant = recompute and self.checkpoint_kwargs.get("use_reentrant", True)
        if reentrant and torch.is_grad_enabled() and not x.requires_grad:
            x = x.detach().requires_grad_()  # else reentrant checkpoints give no block a gradient
        for block in self.h:
            if output_hidden_states:
                hidden.append(x)
            if recompute:
                x, a, c = checkpoint(
                    functools.partial(_block_call, block, output_attentions),
                    x, mask, encoder, enc_mask,
                    **self.checkpoint_kwargs,
                )  # fmt: skip
            else:
                x, a, c = block(
                    x, mask, cache=cache, encoder_hidden_states=encoder, encoder_mask=enc_mask,
                    output_attentions=output_attentions,
                )  # fmt: skip
            if output_attentions:
                attentions.append(a)
                if c is not None:
                    cross.append(c)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden.append(x)
        return x, hidden, attentions, cross


def _block_call(block: Block, output_attentions: bool, x, mask, encoder, enc_mask):
    """``block`` with its tensors as positional arguments: a reentrant checkpoint passes only
    those to the recomputation (and gives gradients only to them), and refuses keywords."""
    return block(
        x, mask, encoder_hidden_states=encoder, encoder_mask=enc_mask,
        output_attentions=output_attentions,
    )  # fmt: skip
