"""``GPT2PreTrainedModel`` (what every model shares) and the ``GPT2Model`` backbone.

Shapes: B batch, T new tokens, P cached tokens, S key positions (P + T; ``S_max`` with a
``StaticCache``), C ``n_embd``, H heads.

Calls: keywords (``model(input_ids=..., attention_mask=...)``) or one dict of them
(``model({"input_ids": ..., "labels": ...})``, what ``fit`` and ``tf.data`` pass); lists and
numpy arrays are converted. Inputs are checked, folded and given positions by ``inputs.py``
(validation rules, positions from the attention mask, ``(B, N, T)`` multiple-choice inputs);
the forward pass itself is embeddings, one ``AttentionMask`` for all layers, the blocks and
``ln_f``.

Outputs are a ``ModelOutputDict`` (``outputs.py``): a dict of the fields that are set, also
readable as attributes, like the PyTorch side's dataclasses.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.config import GPT2Config
from gpt2_dual.hub.push import PushToHubMixin, api_of
from gpt2_dual.tf import weights as _weights
from gpt2_dual.tf.attention import AttentionMask, causal_mask
from gpt2_dual.tf.cache import DynamicCache, StaticCache, as_cache
from gpt2_dual.tf.embeddings import EmbeddingsMixin
from gpt2_dual.tf.inputs import (
    as_tensor,
    check_head_inputs,
    check_inputs,
    fold,
    from_list,
    is_int,
    positions,
    unfold,
)
from gpt2_dual.tf.int8 import QuantizeMixin, config_entry, restore
from gpt2_dual.tf.layers import Block, layer_norm
from gpt2_dual.tf.outputs import ModelOutputDict, make_output
from gpt2_dual.tf.training import KerasTrainingMixin

logger = logging.getLogger(__name__)

__all__ = ["GPT2Model", "GPT2PreTrainedModel"]


_INIT_DOC = """Build a ``{name}`` from ``config``; its weights exist at once, initialized as
transformers does; ``{name}.from_pretrained(...)`` loads a checkpoint instead.

Args:
    config: the model's config (a ``gpt2_dual.GPT2Config``); sizes are locked once the model
        is built.
    name: Keras model name.
    **kwargs: Keras model keywords (``dtype``: a dtype policy, e.g. ``"mixed_bfloat16"``).
"""


class GPT2PreTrainedModel(
    KerasTrainingMixin, EmbeddingsMixin, QuantizeMixin, keras.Model, PushToHubMixin
):
    """What every gpt2_dual.tf model shares: config, building, loading, Keras conventions; the
    embeddings (``embeddings.py``: resizing) and Keras training (``training.py``).

    Weights exist as soon as the model is constructed (``model.transformer.h[0].attn.c_attn
    .kernel``), initialized as transformers does: normal(0, ``initializer_range``) kernels and
    embeddings, ``c_proj`` kernels with std ``initializer_range / sqrt(2 * n_layer)``, zero
    biases, LayerNorms 1 and 0.

    ``fit`` uses the model's own loss with the labels in the input dict
    (``{"input_ids": ..., "labels": ...}``; double heads: ``loss + mc_loss``), or, compiled
    with ``loss=...``, that Keras loss on the main output (the logits) against ``y``;
    ``predict`` returns the main output fields (rules per head: ``training.py``).

    ``keras.models.load_model`` finds these classes by their registered names, which exist
    once ``gpt2_dual.tf`` is imported (Keras imports no other package from a file): in a new
    process ``import gpt2_dual.tf`` first, or Keras cannot locate ``GPT2LMHeadModel``.

    Args:
        config: the model's config; sizes are locked once the model is built.
        name: Keras model name.
        **kwargs: Keras model keywords (``dtype``: a dtype policy, e.g. ``"mixed_bfloat16"``).
    """

    #: Key of ``gpt2_dual.heads.HEAD_SPECS``.
    head: ClassVar[str]

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        """Build the model from ``config``; its weights exist at once, initialized.

        Args:
            config: the model's config; sizes are locked once the model is built.
            name: Keras model name.
            **kwargs: Keras model keywords (``dtype``: a dtype policy).
        """
        if not isinstance(config, GPT2Config):
            raise TypeError(f"config must be a gpt2_dual GPT2Config, got {type(config).__name__}")
        super().__init__(name=name, **kwargs)
        self._convert_input_args = False  # call() converts its inputs itself (see __call__)
        self.config = config

    def _finish_init(self) -> None:
        """End of a subclass ``__init__``: lock sizes and create every weight."""
        self.config.lock_shapes(type(self).__name__)
        self.build()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # help(GPT2LMHeadModel.__init__) shows this class's own words, not keras.Model's.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not init.__doc__:
            init.__doc__ = _INIT_DOC.format(name=cls.__name__)

    def _initializers(self) -> dict[str, float]:
        std = self.config.initializer_range
        return dict(
            initializer_range=std,
            # GPT-2's residual scaling: two residual additions per block.
            proj_initializer_range=std / math.sqrt(2 * self.config.n_layer),
        )

    def __call__(self, inputs: Any = None, **kwargs: Any) -> ModelOutputDict:
        """Call with keywords, or with one dict of them (``model({"input_ids": ids})``), or with
        the token ids first (``model(ids, attention_mask=mask)``), or with transformers' TF list
        in its argument order (``model([ids, None, mask])``: input_ids, past_key_values,
        attention_mask, ...; ``inputs.POSITIONAL_ORDER``), None entries skipped."""
        inputs = from_list(self.head, inputs)
        if isinstance(inputs, Mapping):
            clash = sorted(set(inputs) & set(kwargs))
            if clash:
                raise TypeError(f"{clash} given both in the input dict and as keywords")
            kwargs = {**inputs, **kwargs}
        elif inputs is not None:
            if "input_ids" in kwargs:
                raise TypeError("input_ids given both positionally and as a keyword")
            kwargs["input_ids"] = inputs
        # Everything goes by keyword, as tensors not yet cast (dtypes are checked first): Keras
        # would autocast float labels to the compute dtype and refuse lists given positionally.
        return super().__call__(**check_head_inputs(self.config, self.head, kwargs))

    # ----------------------------------------------------------------- weights
    # Thin wrappers: help() shows the implementation's full docstring and signature (api_of).
    @classmethod
    @api_of(_weights.from_pretrained)
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **kwargs: Any):
        return _weights.from_pretrained(cls, path_or_repo_id, **kwargs)

    @api_of(_weights.save_pretrained)
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        return _weights.save_pretrained(self, save_directory, **kwargs)

    def _backbone(self) -> GPT2Model:
        return self if isinstance(self, GPT2Model) else self.transformer

    # ----------------------------------------------------------------- Keras conventions
    def get_config(self) -> dict[str, Any]:
        """``{"config": config.to_dict()}`` plus the Keras name, trainable flag and dtype (and
        the quantized layers, after ``quantize``)."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "config": self.config.to_dict(),
            **config_entry(self),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT2PreTrainedModel:
        """Rebuild from ``get_config()`` (a new, unlocked ``GPT2Config``)."""
        config = dict(config)
        gpt2_config = GPT2Config.from_dict(config.pop("config"))
        trainable = config.pop("trainable", True)
        quantization = config.pop("quantization", None)
        model = cls(gpt2_config, **config)
        restore(model, quantization)  # int8 variables for the stored int8 values
        model.trainable = trainable
        return model

    def export(
        self,
        filepath: str | os.PathLike,
        format: str = "tf_saved_model",  # noqa: A002 - Keras' own keyword
        verbose: bool | None = None,
        input_signature: Any = None,
        **kwargs: Any,
    ) -> None:
        """Keras' ``export``. A SavedModel without ``input_signature`` gets one endpoint,
        ``serve`` (also ``serving_default``): a dict of int32 ``(B, T)`` ``input_ids`` and
        ``attention_mask`` in, the head's output fields out (no cache). Keras cannot infer a
        signature for a model called with keywords.

        Example:
            >>> model.export("served/")  # doctest: +SKIP
            >>> tf.saved_model.load("served/").serve({"input_ids": ids, "attention_mask": mask})
        """
        if format != "tf_saved_model" or input_signature is not None:
            return super().export(
                filepath, format=format, verbose=verbose, input_signature=input_signature,
                **kwargs,
            )  # fmt: skip
        names = ("input_ids", "attention_mask")
        spec = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in names}
        archive = keras.export.ExportArchive()
        archive.track(self)
        archive.add_endpoint(
            "serve", lambda inputs: dict(self(inputs, use_cache=False)), input_signature=[spec]
        )
        archive.write_out(os.fspath(filepath), verbose=bool(verbose))
        return None


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2Model(GPT2PreTrainedModel):
    """The GPT-2 transformer: token and position embeddings, ``n_layer`` blocks, final LayerNorm.

    Args:
        config: the model's config.
        name: Keras model name.
        **kwargs: Keras model keywords (``dtype``).

    Example:
        >>> from gpt2_dual import GPT2Config
        >>> from gpt2_dual.tf import GPT2Model
        >>> model = GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=4))
        >>> model(input_ids=[[15496, 995]]).last_hidden_state.shape
        TensorShape([1, 2, 64])
    """

    head = "base"

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        c, policy = config, self.dtype_policy
        init = keras.initializers.RandomNormal(stddev=c.initializer_range)
        self.wte = keras.layers.Embedding(
            c.vocab_size, c.n_embd, embeddings_initializer=init, dtype=policy, name="wte"
        )
        self.wpe = keras.layers.Embedding(
            c.n_positions, c.n_embd, embeddings_initializer=init, dtype=policy, name="wpe"
        )
        self.drop = keras.layers.Dropout(c.embd_pdrop, dtype=policy, name="drop")
        self.h = [
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
                dtype=policy,
                name=f"h_{i}",
                **self._initializers(),
            )
            for i in range(c.n_layer)
        ]  # fmt: skip
        self.ln_f = layer_norm(c.layer_norm_epsilon, self, "ln_f")
        self._finish_init()

    def build(self, input_shape: Any = None) -> None:
        self.wte.build()
        self.wpe.build()
        for layer in (*self.h, self.ln_f):
            layer.build((None, None, self.config.n_embd))

    def call(
        self,
        input_ids: Any = None,
        *,
        past_key_values: Any = None,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        encoder_hidden_states: Any = None,
        encoder_attention_mask: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        training: bool = False,
    ) -> ModelOutputDict:
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
            training: apply dropout.

        Returns:
            ``ModelOutputDict`` (``BaseModelOutput`` fields): ``last_hidden_state``
            ``(B, T, C)``; ``past_key_values`` when caching (a new cache; the one passed in is
            unchanged); ``hidden_states`` (n_layer + 1 tensors, the last after ``ln_f``);
            ``attentions`` (n_layer tensors ``(B, H, T, S)``); ``cross_attentions``.

        Raises:
            ValueError: invalid inputs (see the module docstring).
        """
        use_cache = self.config.use_cache if use_cache is None else use_cache
        ints = (input_ids, attention_mask, token_type_ids, position_ids, encoder_attention_mask)
        input_ids, attention_mask, token_type_ids, position_ids, encoder_attention_mask = map(
            as_tensor, ints
        )
        floats = (inputs_embeds, encoder_hidden_states)
        inputs_embeds, encoder_hidden_states = map(as_tensor, floats)
        cache = as_cache(past_key_values)
        if cache is None and use_cache:
            cache = DynamicCache()
        past, padded = check_inputs(  # before any cast: float ids are refused, not truncated
            self.config, input_ids, inputs_embeds, attention_mask, token_type_ids, cache,
            encoder_hidden_states, encoder_attention_mask, self.compute_dtype, position_ids,
        )  # fmt: skip
        input_ids, attention_mask, token_type_ids, position_ids, encoder_attention_mask = (
            as_tensor(t, "int32")
            for t in (input_ids, attention_mask, token_type_ids, position_ids,
                      encoder_attention_mask)
        )  # fmt: skip
        inputs_embeds, encoder_hidden_states = (
            as_tensor(t, self.compute_dtype) for t in (inputs_embeds, encoder_hidden_states)
        )
        lead, (input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids) = fold(
            input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids
        )
        T = ops.shape(input_ids if input_ids is not None else inputs_embeds)[1]
        query_pos = ops.arange(T, dtype="int32") + past  # (T,), cache slots of the new tokens
        key_ok = None if padded is False else ops.cast(attention_mask, "bool")  # (B, S') or None
        if position_ids is None:
            position_ids = positions(key_ok, attention_mask, query_pos)
        x = self._embed(input_ids, inputs_embeds, token_type_ids, position_ids, training)
        mask = self._mask(key_ok, query_pos, cache, past)
        enc_mask = None
        if encoder_attention_mask is not None:
            enc_mask = AttentionMask(ops.cast(encoder_attention_mask, "bool")[:, None, None, :])
        x, hidden, attentions, cross = self._blocks(
            x, mask, cache, encoder_hidden_states, enc_mask, output_attentions,
            output_hidden_states, training,
        )  # fmt: skip
        return make_output(
            "base",
            last_hidden_state=unfold(x, lead, 2),
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(unfold(h, lead, 2) for h in hidden) if hidden else None,
            attentions=tuple(unfold(a, lead, 3) for a in attentions) if attentions else None,
            cross_attentions=tuple(unfold(a, lead, 3) for a in cross) if cross else None,
        )

    def _embed(self, input_ids, inputs_embeds, token_type_ids, position_ids, training):
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.wpe(position_ids)
        if token_type_ids is not None:
            x = x + self.wte(token_type_ids)
        return self.drop(x, training=training)  # (B, T, C)

    def _mask(self, key_ok, query_pos, cache, past) -> AttentionMask:
        static = isinstance(cache, StaticCache)
        T = ops.shape(query_pos)[0]
        if key_ok is None and not static and (is_int(T, 1) or is_int(past, 0)):
            return AttentionMask()  # plain causal (T == S) or one query seeing every key
        key_length = cache.key_length(T) if cache is not None else T
        return causal_mask(key_ok, query_pos, key_length)

    def _blocks(
        self, x, mask, cache, encoder, enc_mask, output_attentions, output_hidden_states, training
    ):
        hidden, attentions, cross = [], [], []
        for block in self.h:
            if output_hidden_states:
                hidden.append(x)
            x, a, c = block(
                x, mask, cache=cache, encoder_hidden_states=encoder, encoder_mask=enc_mask,
                output_attentions=output_attentions, training=training,
            )  # fmt: skip
            if output_attentions:
                attentions.append(a)
                if c is not None:
                    cross.append(c)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden.append(x)
        return x, hidden, attentions, cross
