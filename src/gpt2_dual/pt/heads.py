"""The five GPT-2 head models: the ``GPT2Model`` backbone (``transformer``) plus one small layer.

Shapes: B batch, N choices, T tokens, C ``n_embd``, V ``vocab_size``, L ``num_labels``.
The only per-head code is the head layer, its pooling (``gpt2_dual.heads`` states the rules)
and its loss (``losses.py``). Loss needs ``labels`` (and ``mc_labels``, or ``start_positions``
plus ``end_positions``); outputs are always the head's ``gpt2_dual.outputs`` type.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import (
    check_logits_to_keep,
    check_sequence_batch,
    pool_sequence,
    token_classifier_dropout,
)
from gpt2_dual.outputs import (
    CausalLMOutput,
    DoubleHeadsModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from gpt2_dual.pt import losses
from gpt2_dual.pt.generate import GenerationMixin
from gpt2_dual.pt.linear import Linear
from gpt2_dual.pt.model import GPT2Model, GPT2PreTrainedModel, empty_layers
from gpt2_dual.pt.summary import OPS, SequenceSummary

__all__ = [
    "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2LMHeadModel",
]


class GPT2LMHeadModel(GenerationMixin, GPT2PreTrainedModel):
    """GPT-2 with a language-modelling head (``lm_head``, tied to ``wte`` by default).

    Example:
        >>> from gpt2_dual.pt import GPT2LMHeadModel
        >>> model = GPT2LMHeadModel.from_pretrained("gpt2")  # doctest: +SKIP
        >>> out = model(input_ids, labels=input_ids)  # doctest: +SKIP
        >>> out.loss, out.logits.shape  # doctest: +SKIP
    """

    head = "lm"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        self.transformer = GPT2Model(config, attn_implementation=attn_implementation)
        with empty_layers():  # _finish_init ties it or draws it once
            self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self._finish_init(self.lm_head)

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
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> CausalLMOutput:
        """Next-token logits ``(B, T, V)``; see ``GPT2Model.forward`` for the shared arguments.

        Args:
            labels: ``(B, T)`` ids (``-100`` = not counted); shifted inside, so
                ``labels=input_ids`` trains next-token prediction.
            logits_to_keep: compute logits for the last ``logits_to_keep`` positions only
                (0: all); cannot be combined with ``labels``.

        Returns:
            ``CausalLMOutput``: ``logits`` ``(B, T, V)``, ``loss`` with labels, the cache.

        Raises:
            InputError: ``labels`` with ``logits_to_keep``.
        """
        check_logits_to_keep(labels is not None, logits_to_keep)
        out = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )  # fmt: skip
        hidden = out.last_hidden_state
        hidden = hidden[..., -logits_to_keep:, :] if logits_to_keep else hidden
        logits = self.lm_head(hidden)
        return CausalLMOutput(
            loss=None if labels is None else losses.causal_lm_loss(logits, labels),
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )


class GPT2DoubleHeadsModel(GenerationMixin, GPT2PreTrainedModel):
    """GPT-2 with a language-modelling head and a multiple-choice head
    (``multiple_choice_head``, a ``SequenceSummary``) for ``(B, N, T)`` inputs. The config is
    not changed (transformers sets ``num_labels = 1``): see ``multiple_choice_features``.

    Example:
        >>> out = model(choices_ids, mc_token_ids=cls_positions)  # doctest: +SKIP
        >>> out.mc_logits.shape  # (B, N)  # doctest: +SKIP
    """

    head = "double_heads"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        self.transformer = GPT2Model(config, attn_implementation=attn_implementation)
        with empty_layers():  # _finish_init draws the weights once (the lm_head: tied or once)
            self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
            self.multiple_choice_head = SequenceSummary(config)
        self._finish_init(self.lm_head, self.multiple_choice_head)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mc_token_ids: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: torch.Tensor | None = None,
        mc_labels: torch.Tensor | None = None,
    ) -> DoubleHeadsModelOutput:
        """LM logits ``(B, N, T, V)`` and choice logits ``(B, N)``.

        Args:
            input_ids: ``(B, N, T)`` (or ``(B, T)``: one sequence per row).
            mc_token_ids: ``(B, N)`` index of the classification token (default: last).
            labels: ``(B, N, T)`` LM labels (shifted inside); gives ``loss``.
            mc_labels: ``(B,)`` index of the right choice; gives ``mc_loss``.

        Returns:
            ``DoubleHeadsModelOutput`` (``loss`` is the LM loss, ``mc_loss`` the choice loss).
        """
        out = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )  # fmt: skip
        hidden = out.last_hidden_state  # (B, N, T, C)
        logits = self.lm_head(hidden)
        # (B, N, 1) -> (B, N); a copy (B x N numbers), not a view, for FSDP2's output hooks
        mc_logits = self.multiple_choice_head(hidden, mc_token_ids).squeeze(-1).clone()
        mc_loss = None if mc_labels is None else losses.multiple_choice_loss(mc_logits, mc_labels)
        return DoubleHeadsModelOutput(
            loss=None if labels is None else losses.causal_lm_loss(logits, labels),
            mc_loss=mc_loss,
            logits=logits,
            mc_logits=mc_logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class GPT2ForQuestionAnswering(GPT2PreTrainedModel):
    """GPT-2 with a span head (``qa_outputs``: C -> 2, start and end logits per token).

    Example:
        >>> out = model(input_ids, start_positions=s, end_positions=e)  # doctest: +SKIP
        >>> out.start_logits.shape  # (B, T)  # doctest: +SKIP
    """

    head = "question_answering"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        self.transformer = GPT2Model(config, attn_implementation=attn_implementation)
        with empty_layers():  # _finish_init draws the weights once
            self.qa_outputs = Linear(config.n_embd, 2)
        self._finish_init(self.qa_outputs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> QuestionAnsweringModelOutput:
        """Start and end logits ``(B, T)``.

        Args:
            start_positions: ``(B,)`` answer starts; with ``end_positions`` gives ``loss``
                (positions clamped to ``[0, T]``; ``T`` is not counted).
            end_positions: ``(B,)`` answer ends.

        Returns:
            ``QuestionAnsweringModelOutput``.
        """
        out = self.transformer(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=False,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )  # fmt: skip
        start_logits, end_logits = (
            t.contiguous() for t in self.qa_outputs(out.last_hidden_state).unbind(-1)
        )
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = losses.span_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """GPT-2 with a linear classifier (``score``) on each row's last non-padding token.

    The token is the right-most one that is not ``config.pad_token_id``; without a
    ``pad_token_id`` only batches of one row are accepted, and with ``inputs_embeds`` the last
    position is used (padding cannot be seen), as in transformers.

    Example:
        >>> model.config.pad_token_id = tokenizer.eos_token_id  # doctest: +SKIP
        >>> model(input_ids, attention_mask=mask).logits.shape  # (B, num_labels)  # doctest: +SKIP
    """

    head = "sequence_classification"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        self.transformer = GPT2Model(config, attn_implementation=attn_implementation)
        with empty_layers():  # _finish_init draws the weights once
            self.score = Linear(config.n_embd, config.num_labels, bias=False)
        self._finish_init(self.score)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """Logits ``(B, L)`` of each row's last non-padding token.

        Args:
            labels: ``(B,)`` class ids, float targets (regression), or ``(B, L)`` multi-hot;
                the loss follows ``config.problem_type`` (``losses.sequence_classification_loss``).

        Returns:
            ``SequenceClassifierOutput``: ``logits`` ``(B, L)``, ``loss`` with labels, the cache.

        Raises:
            InputError: batch larger than 1 without ``config.pad_token_id``.
        """
        pad = self.config.pad_token_id
        given = input_ids if input_ids is not None else inputs_embeds
        if given is not None:  # else the backbone names the missing input
            check_sequence_batch(
                pad, given.shape[0], has_input_ids=input_ids is not None, owner=type(self).__name__
            )
        out = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )  # fmt: skip
        pooled = pool_sequence(OPS, out.last_hidden_state, input_ids, pad)  # (B, C)
        logits = self.score(pooled)
        loss = None
        if labels is not None:
            loss = losses.sequence_classification_loss(logits, labels, self.config.problem_type)
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class GPT2ForTokenClassification(GPT2PreTrainedModel):
    """GPT-2 with a per-token classifier (dropout, then ``classifier``: C -> L).

    Example:
        >>> model(input_ids, labels=tags).logits.shape  # (B, T, num_labels)  # doctest: +SKIP
    """

    head = "token_classification"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        self.transformer = GPT2Model(config, attn_implementation=attn_implementation)
        self.dropout = nn.Dropout(token_classifier_dropout(config))
        with empty_layers():  # _finish_init draws the weights once
            self.classifier = Linear(config.n_embd, config.num_labels)
        self._finish_init(self.classifier)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: torch.Tensor | None = None,
    ) -> TokenClassifierOutput:
        """Per-token logits; a ``past_key_values`` cache is read and extended in place.

        Args:
            labels: ``(B, T)`` class ids (``-100`` = not counted); give ``loss``.

        Returns:
            ``TokenClassifierOutput``: ``logits`` ``(B, T, L)``.
        """
        out = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=False, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )  # fmt: skip
        logits = self.classifier(self.dropout(out.last_hidden_state))
        return TokenClassifierOutput(
            loss=None if labels is None else losses.token_classification_loss(logits, labels),
            logits=logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
