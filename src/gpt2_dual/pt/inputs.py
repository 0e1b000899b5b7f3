"""Input handling of ``GPT2Model.forward``: validation, folding, positions, in one place.

Shapes: B batch, T new tokens, P cached tokens, S' mask length, C ``n_embd``.

Validation costs one device sync per forward (skipped while ``torch.compile`` traces): token
ids (and token type ids, which index ``wte`` as in transformers) in ``[0, vocab_size)``, cached
plus new length within ``n_positions`` (and a ``StaticCache``'s ``max_length``),
``attention_mask`` of shape ``(B, P + T)`` (with a ``StaticCache`` also ``(B, S_max)``).

Positions: without ``position_ids``, a mask with padding decides them: ``cumsum(mask) - 1``
clamped at 0, continuing over the cached part. A left-padded row then gets the same positions,
hence the same logits, as the same row unpadded. Without padding they are ``P .. P + T - 1``.
transformers (4.57) uses ``P .. P + T - 1`` even with a mask, so for left-padded rows its numbers
differ from ours unless both get the same ``position_ids``.

``input_ids`` may carry extra leading axes, ``(B, N, T)`` for multiple choice: they are folded
into the batch (masks, token types and positions alike) and restored on every output, hidden
states and attentions included (transformers restores only the last hidden state).
"""

from __future__ import annotations

import math

import torch

from gpt2_dual.config import GPT2Config
from gpt2_dual.pt.cache import DynamicCache, StaticCache

__all__ = ["check_inputs", "fold", "positions", "unfold"]


def check_inputs(
    config: GPT2Config,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    cache: DynamicCache | StaticCache | None,
    encoder: torch.Tensor | None,
    encoder_mask: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[int | torch.Tensor, bool | None]:
    """Validate the inputs of one forward.

    Returns:
        The cached length (an int; a 0-d tensor with a ``StaticCache``) and whether the mask
        has padding (None when unknown: while compiling).

    Raises:
        ValueError: the message names the input, the offending value or shape, and the limit.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(
            "You cannot specify both input_ids and inputs_embeds at the same time"
            if input_ids is not None
            else "You have to specify either input_ids or inputs_embeds"
        )
    if encoder is not None and not config.add_cross_attention:
        raise ValueError(
            "encoder_hidden_states were given but the model has no cross-attention; build it "
            "with config.add_cross_attention=True"
        )
    if encoder is not None and encoder_mask is not None:
        if tuple(encoder_mask.shape) != tuple(encoder.shape[:2]):
            raise ValueError(
                f"encoder_attention_mask has shape {tuple(encoder_mask.shape)}; expected "
                f"{tuple(encoder.shape[:2])} (batch, encoder length)"
            )
    shape = tuple(input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1])
    T = shape[-1]
    past = cache.past_length() if cache is not None else 0
    static = isinstance(cache, StaticCache)
    if static:
        _check_static(cache, shape, dtype)
    if torch.compiler.is_compiling():
        return past, (None if attention_mask is not None else False)
    values = _probe(input_ids, token_type_ids, attention_mask, past)  # the one device sync
    for name, ids in (("input_ids", input_ids), ("token_type_ids", token_type_ids)):
        _check_ids(name, ids, values, config.vocab_size)
    past_int = values.get("past", past)
    if past_int + T > config.n_positions:
        raise ValueError(
            f"sequence length {past_int + T} ({past_int} cached + {T} new tokens) exceeds "
            f"n_positions={config.n_positions}"
        )
    if static and past_int + T > cache.max_length:
        raise ValueError(
            f"the StaticCache holds max_length={cache.max_length} positions; {past_int} cached "
            f"+ {T} new tokens do not fit"
        )
    if attention_mask is not None:
        allowed = [(*shape[:-1], past_int + T)]
        if static:
            allowed.append((*shape[:-1], cache.max_length))
        if tuple(attention_mask.shape) not in allowed:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                f"{' or '.join(str(a) for a in allowed)} (batch, {past_int} cached + {T} new "
                "tokens)"
            )
    padded = attention_mask is not None and not values["mask_all"]
    return (past if static else past_int), padded


def _probe(input_ids, token_type_ids, attention_mask, past) -> dict[str, int]:
    """Every data-dependent fact the checks need, fetched in one device sync."""
    probes = {}
    for name, ids in (("input_ids", input_ids), ("token_type_ids", token_type_ids)):
        if ids is not None and ids.numel():
            probes[f"{name}.min"], probes[f"{name}.max"] = ids.min(), ids.max()
    if attention_mask is not None:
        probes["mask_all"] = attention_mask.all()
    if isinstance(past, torch.Tensor):
        probes["past"] = past
    values = torch.stack([p.to(torch.long) for p in probes.values()]).tolist() if probes else []
    return dict(zip(probes, values, strict=True))


def _check_ids(name: str, ids, values: dict[str, int], vocab_size: int) -> None:
    low, high = values.get(f"{name}.min", 0), values.get(f"{name}.max", 0)
    if ids is None or (low >= 0 and high < vocab_size):
        return
    where = tuple(((ids < 0) | (ids >= vocab_size)).nonzero()[0].tolist())
    raise ValueError(
        f"{name}{list(where)} = {int(ids[where])} is out of range: ids must be in "
        f"[0, vocab_size={vocab_size})"
    )


def _check_static(cache: StaticCache, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    rows = math.prod(shape[:-1])
    if rows != cache.batch_size:
        raise ValueError(f"the StaticCache holds {cache.batch_size} rows; the input has {rows}")
    if dtype != cache.dtype:
        raise ValueError(f"the StaticCache is {cache.dtype}; the model is {dtype}")


def fold(*tensors):
    """Fold leading axes into the batch: ids ``(..., T)``, embeds ``(..., T, C)``."""
    input_ids, inputs_embeds = tensors[:2]
    lead = input_ids.shape[:-1] if input_ids is not None else inputs_embeds.shape[:-2]
    if len(lead) == 1:
        return lead, tensors
    folded = [t if t is None else t.reshape(-1, t.shape[-1]) for t in tensors]
    if inputs_embeds is not None:
        folded[1] = inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])
    return lead, folded


def unfold(x: torch.Tensor, lead: torch.Size, trailing: int) -> torch.Tensor:
    return x if len(lead) == 1 else x.reshape(*lead, *x.shape[-trailing:])


def positions(key_ok, attention_mask, query_pos) -> torch.Tensor:
    """Position of each new token: from the mask when it has padding, else its cache slot."""
    if key_ok is None:
        return query_pos[None, :]  # (1, T)
    counted = attention_mask.long().cumsum(-1) - 1  # (B, S'), real tokens counted from 0
    return counted.clamp(min=0)[:, query_pos]  # (B, T)
