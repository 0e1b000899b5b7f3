"""The five GPT-2 head models: the ``GPT2Model`` backbone (``transformer``) plus one small layer.

Shapes: B batch, N choices, T tokens, C ``n_embd``, V ``vocab_size``, L ``num_labels``.
The only per-head code is the head layer, its pooling (``gpt2_dual.heads`` states the rules)
and its loss (``losses.py``). Loss needs ``labels`` (and ``mc_labels``, or ``start_positions``
plus ``end_positions``); outputs are always the head's ``ModelOutputDict``.

A tied ``lm_head`` (``config.tie_word_embeddings``, the default) has no weight of its own: the
logits are ``hidden @ wte.embeddings^T`` and ``model.lm_head`` is None.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import (
    HEAD_SPECS,
    check_logits_to_keep,
    check_sequence_batch,
    pool_sequence,
    token_classifier_dropout,
)
from gpt2_dual.tf import losses
from gpt2_dual.tf.attention import dense
from gpt2_dual.tf.generate import GenerationMixin
from gpt2_dual.tf.inputs import as_tensor
from gpt2_dual.tf.int8 import tied_logits
from gpt2_dual.tf.model import GPT2Model, GPT2PreTrainedModel
from gpt2_dual.tf.outputs import ModelOutputDict, make_output
from gpt2_dual.tf.summary import OPS, SequenceSummary

logger = logging.getLogger(__name__)

__all__ = [
    "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2LMHeadModel",
]


class _HeadModel(GPT2PreTrainedModel):
    """A head model: the backbone as ``transformer``, then the subclass's head layers."""

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        self.transformer = GPT2Model(config, dtype=self.dtype_policy, name="transformer")

    def build(self, input_shape: Any = None) -> None:
        for attr in HEAD_SPECS[self.head].attrs:  # the backbone was built in its __init__
            if getattr(self, attr) is not None:
                getattr(self, attr).build((None, self.config.n_embd))

    def _head_dense(self, units: int, name: str, *, bias: bool = True) -> keras.layers.Dense:
        return dense(units, self.config.initializer_range, self, name=name, bias=bias)

    def _untied_lm_head(self) -> keras.layers.Dense | None:
        """The ``lm_head`` layer, or None when it is tied to ``wte`` (no weight of its own)."""
        if self.config.tie_word_embeddings:
            return None
        return self._head_dense(self.config.vocab_size, "lm_head", bias=False)

    def _lm_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        """``(..., C) -> (..., V)`` through ``lm_head``, or through ``wte`` when tied."""
        if self.lm_head is not None:
            return self.lm_head(hidden)
        wte = self.transformer.wte
        if wte.quantization_mode is not None:  # int8 rows: Keras' tied-head rule
            return tied_logits(hidden, wte)
        return tied_product(hidden, wte.embeddings)


def tied_product(hidden: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
    """``(..., C) @ (V, C)^T -> (..., V)`` as one 2-D product. Not ``einsum("...c,vc->...v")``:
    TensorFlow's gradient of that einsum for ``table`` materialises a ``(..., V, C)``
    broadcast before reducing it (74.7 GiB for gpt2 at batch 4 x 128 tokens, in graph mode and
    under XLA alike); a 2-D ``matmul`` has the plain ``(C, V)`` gradient product."""
    flat = tf.reshape(hidden, (-1, hidden.shape[-1]))
    logits = tf.matmul(flat, table, transpose_b=True)
    out = tf.reshape(logits, tf.concat([tf.shape(hidden)[:-1], tf.shape(table)[:1]], 0))
    return tf.ensure_shape(out, hidden.shape[:-1].concatenate(table.shape[:1]))


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2LMHeadModel(GenerationMixin, _HeadModel):
    """GPT-2 with a language-modelling head (``lm_head``, tied to ``wte`` by default).

    Example:
        >>> from gpt2_dual.tf import GPT2LMHeadModel
        >>> model = GPT2LMHeadModel.from_pretrained("gpt2")  # doctest: +SKIP
        >>> out = model({"input_ids": ids, "labels": ids})  # doctest: +SKIP
        >>> out.loss, out.logits.shape  # doctest: +SKIP
    """

    head = "lm"

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        self.lm_head = self._untied_lm_head()
        self._finish_init()

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
        labels: Any = None,
        logits_to_keep: int = 0,
        training: bool = False,
    ) -> ModelOutputDict:
        """Next-token logits ``(B, T, V)``; see ``GPT2Model.call`` for the shared arguments.

        Args:
            labels: ``(B, T)`` ids (``-100`` = not counted); shifted inside, so
                ``labels=input_ids`` trains next-token prediction.
            logits_to_keep: compute logits for the last ``logits_to_keep`` positions only
                (0: all); cannot be combined with ``labels``.

        Returns:
            ``CausalLMOutput`` fields: ``logits`` ``(B, T, V)``, ``loss`` with labels, the cache.

        Raises:
            InputError: ``labels`` with ``logits_to_keep``.
        """
        check_logits_to_keep(labels is not None, logits_to_keep)
        out = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            training=training,
        )  # fmt: skip
        hidden = out.last_hidden_state
        logits = self._lm_logits(hidden[..., -logits_to_keep:, :] if logits_to_keep else hidden)
        return make_output(
            self.head,
            loss=None if labels is None else losses.causal_lm_loss(logits, as_tensor(labels)),
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2DoubleHeadsModel(GenerationMixin, _HeadModel):
    """GPT-2 with a language-modelling head and a multiple-choice head
    (``multiple_choice_head``, a ``SequenceSummary``) for ``(B, N, T)`` inputs. The config is
    not changed (transformers sets ``num_labels = 1``): see ``multiple_choice_features``.

    Example:
        >>> out = model({"input_ids": choices_ids, "mc_token_ids": cls_positions})  # doctest: +SKIP
        >>> out.mc_logits.shape  # (B, N)  # doctest: +SKIP
    """

    head = "double_heads"

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        self.lm_head = self._untied_lm_head()
        self.multiple_choice_head = SequenceSummary(
            config, dtype=self.dtype_policy, name="multiple_choice_head"
        )
        self._finish_init()

    def call(
        self,
        input_ids: Any = None,
        *,
        past_key_values: Any = None,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        mc_token_ids: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: Any = None,
        mc_labels: Any = None,
        training: bool = False,
    ) -> ModelOutputDict:
        """LM logits ``(B, N, T, V)`` and choice logits ``(B, N)``.

        Args:
            input_ids: ``(B, N, T)`` (or ``(B, T)``: one sequence per row).
            mc_token_ids: ``(B, N)`` index of the classification token (default: last).
            labels: ``(B, N, T)`` LM labels (shifted inside); gives ``loss``.
            mc_labels: ``(B,)`` index of the right choice; gives ``mc_loss``.

        Returns:
            ``DoubleHeadsModelOutput`` fields (``loss`` is the LM loss, ``mc_loss`` the choice
            loss; ``fit`` minimizes their sum).
        """
        out = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, training=training,
        )  # fmt: skip
        hidden = out.last_hidden_state  # (B, N, T, C)
        logits = self._lm_logits(hidden)
        mc_logits = self.multiple_choice_head(
            hidden, as_tensor(mc_token_ids), training=training
        )  # (B, N, F)
        if mc_logits.shape[-1] == 1:
            mc_logits = ops.squeeze(mc_logits, -1)
        mc_loss = None
        if mc_labels is not None:
            mc_loss = losses.multiple_choice_loss(mc_logits, as_tensor(mc_labels))
        return make_output(
            self.head,
            loss=None if labels is None else losses.causal_lm_loss(logits, as_tensor(labels)),
            mc_loss=mc_loss,
            logits=logits,
            mc_logits=mc_logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2ForQuestionAnswering(_HeadModel):
    """GPT-2 with a span head (``qa_outputs``: C -> 2, start and end logits per token).

    Example:
        >>> batch = {"input_ids": ids, "start_positions": s, "end_positions": e}
        >>> model(batch).start_logits.shape  # (B, T)  # doctest: +SKIP
    """

    head = "question_answering"

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        self.qa_outputs = self._head_dense(2, "qa_outputs")
        self._finish_init()

    def call(
        self,
        input_ids: Any = None,
        *,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        start_positions: Any = None,
        end_positions: Any = None,
        training: bool = False,
    ) -> ModelOutputDict:
        """Start and end logits ``(B, T)``.

        Args:
            start_positions: ``(B,)`` answer starts; with ``end_positions`` gives ``loss``
                (positions clamped to ``[0, T]``; ``T`` is not counted).
            end_positions: ``(B,)`` answer ends.

        Returns:
            ``QuestionAnsweringModelOutput`` fields.
        """
        out = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=False,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            training=training,
        )  # fmt: skip
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = losses.span_loss(
                start_logits, end_logits, as_tensor(start_positions), as_tensor(end_positions)
            )
        return make_output(
            self.head,
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2ForSequenceClassification(_HeadModel):
    """GPT-2 with a linear classifier (``score``) on each row's last non-padding token.

    The token is the right-most one that is not ``config.pad_token_id``; without a
    ``pad_token_id`` only batches of one row are accepted, and with ``inputs_embeds`` the last
    position is used (padding cannot be seen), as in transformers.

    Example:
        >>> model.config.pad_token_id = tokenizer.eos_token_id  # doctest: +SKIP
        >>> model({"input_ids": ids, "attention_mask": mask}).logits  # (B, L)  # doctest: +SKIP
    """

    head = "sequence_classification"

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        self.score = self._head_dense(config.num_labels, "score", bias=False)
        self._finish_init()

    def call(
        self,
        input_ids: Any = None,
        *,
        past_key_values: Any = None,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: Any = None,
        training: bool = False,
    ) -> ModelOutputDict:
        """Logits ``(B, L)`` of each row's last non-padding token.

        Args:
            labels: ``(B,)`` class ids, float targets (regression), or ``(B, L)`` multi-hot;
                the loss follows ``config.problem_type`` (``losses.sequence_classification_loss``).

        Returns:
            ``SequenceClassifierOutput`` fields: ``logits`` ``(B, L)``, ``loss`` with labels, the
            cache.

        Raises:
            InputError: batch larger than 1 without ``config.pad_token_id``.
        """
        pad = self.config.pad_token_id
        input_ids = as_tensor(input_ids)  # checked and cast to int32 by the backbone
        given = input_ids if input_ids is not None else as_tensor(inputs_embeds)
        if given is not None:  # else the backbone names the missing input
            check_sequence_batch(  # a batch unknown while tracing (None) is refused too
                pad, given.shape[0], has_input_ids=input_ids is not None, owner=type(self).__name__
            )
        out = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, training=training,
        )  # fmt: skip
        pooled = pool_sequence(OPS, out.last_hidden_state, input_ids, pad)  # (B, C)
        logits = self.score(pooled)
        loss = None
        if labels is not None:
            loss = losses.sequence_classification_loss(
                logits, as_tensor(labels), self.config.problem_type
            )
        return make_output(
            self.head,
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2ForTokenClassification(_HeadModel):
    """GPT-2 with a per-token classifier (dropout, then ``classifier``: C -> L).

    Example:
        >>> model({"input_ids": ids, "labels": tags}).logits.shape  # (B, T, L)  # doctest: +SKIP
    """

    head = "token_classification"

    def __init__(self, config: GPT2Config, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        self.dropout = keras.layers.Dropout(
            token_classifier_dropout(config), dtype=self.dtype_policy, name="dropout"
        )
        self.classifier = self._head_dense(config.num_labels, "classifier")
        self._finish_init()

    def call(
        self,
        input_ids: Any = None,
        *,
        past_key_values: Any = None,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: Any = None,
        training: bool = False,
    ) -> ModelOutputDict:
        """Per-token logits; a ``past_key_values`` cache is read (none is returned).

        Args:
            labels: ``(B, T)`` class ids (``-100`` = not counted); give ``loss``.

        Returns:
            ``TokenClassifierOutput`` fields: ``logits`` ``(B, T, L)``.
        """
        out = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=False, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, training=training,
        )  # fmt: skip
        logits = self.classifier(self.dropout(out.last_hidden_state, training=training))
        loss = None
        if labels is not None:
            loss = losses.token_classification_loss(logits, as_tensor(labels))
        return make_output(
            self.head,
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
