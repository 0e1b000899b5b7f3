"""Input handling of ``GPT2Model.forward``: validation, folding, positions, in one place.

Shapes: B batch, T new tokens, P cached tokens, S' mask length, C ``n_embd``.

Validation: the rules live in ``gpt2_dual._input_checks`` (shared with ``gpt2_dual.tf``);
errors are ``gpt2_dual.errors`` classes naming the argument, the value and the limit, raised
before any model work. Dtypes and shapes are always checked; values (ids in range, a 0/1
mask, positions) cost one device sync per forward, plus one more when a head's labels or
``mc_token_ids`` are given, and are skipped while ``torch.compile`` traces.

Lists and numpy arrays are accepted wherever a tensor is (``model([[15496, 995]])``), as on
the TF side: ``model(...)`` converts them to tensors on the model's device (``as_tensors``).

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
from typing import Any

import torch

from gpt2_dual import _input_checks as rules
from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import InputTypeError, InvalidInputError
from gpt2_dual.pt.cache import DynamicCache, StaticCache

__all__ = ["as_tensors", "check_head_inputs", "check_inputs", "fold", "positions", "unfold"]



def spec(name: str, value: Any) -> rules.Spec | None:
    """The shape and dtype of one input (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(
            f"{name} must be a torch.Tensor (model(...) also takes lists and numpy arrays); "
            f"got {type(value).__name__}"
        )
    dtype = value.dtype
    kind = (
        "b" if dtype == torch.bool
        else "c" if dtype.is_complex
        else "f" if dtype.is_floating_point
        else "u" if dtype == torch.uint8
        else "i"
    )  # fmt: skip
    return rules.Spec(name, tuple(value.shape), kind, str(dtype).removeprefix("torch."))


def _to_tensor(name: str, value: Any, device: torch.device) -> Any:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(rules.as_array(name, value), device=device)


def as_tensors(model: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    """``model(...)``'s arguments with lists and numpy arrays as tensors on its device."""
    device = model.device
    if args:
        args = (_to_tensor("input_ids", args[0], device), *args[1:])
    for name in rules.TENSOR_ARGS:
        if name in kwargs:
            kwargs[name] = _to_tensor(name, kwargs[name], device)
    return args, kwargs


def check_head_inputs(model: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    """Rules of a head's own inputs (labels, ``mc_token_ids``, ...), before the backbone runs."""
    if model.head == "base":
        return
    input_ids = args[0] if args else kwargs.get("input_ids")
    given = {"input_ids": spec("input_ids", input_ids)}
    given["inputs_embeds"] = spec("inputs_embeds", kwargs.get("inputs_embeds"))
    lead, T = rules.check_backbone(model.config, model.head, given)
    specs = {n: spec(n, kwargs.get(n)) for n in rules.HEAD_ARGS}
    found = rules.check_head(model.config, model.head, lead, T, specs)
    if found and not torch.compiler.is_compiling():
        _check_values([(r, kwargs[r.name]) for r in found])


def _check_values(pairs: list[tuple[rules.Rule, torch.Tensor]], extra=None) -> list[int]:
    """Evaluate every rule in one device sync; raise for the first broken one. ``extra``:
    more 0-d tensors to fetch in the same sync (their values are returned)."""
    probes = [rules.violations(t, r).any() for r, t in pairs] + list(extra or ())
    if not probes:
        return []
    values = torch.stack([p.to(torch.long).reshape(()) for p in probes]).tolist()
    for (rule, tensor), bad in zip(pairs, values, strict=False):
        if bad:
            rules.raise_for(tensor.detach().cpu().numpy(), rule)
    return values[len(pairs) :]


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
    position_ids: torch.Tensor | None = None,
    head: str = "base",
) -> tuple[int | torch.Tensor, bool | None]:
    """Validate the inputs of one forward (rules: ``gpt2_dual._input_checks``).

    Returns:
        The cached length (an int; a 0-d tensor with a ``StaticCache``) and whether the mask
        has padding (None when unknown: while compiling).

    Raises:
        InvalidInputError, InputTypeError, OutOfRangeError: the message names the input, the
            offending value or shape, and the limit.
    """
    given = {
        "input_ids": input_ids, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
        "token_type_ids": token_type_ids, "position_ids": position_ids,
        "encoder_hidden_states": encoder, "encoder_attention_mask": encoder_mask,
    }  # fmt: skip
    specs = {name: spec(name, value) for name, value in given.items()}
    lead, T = rules.check_backbone(config, head, specs)
    if encoder is not None and not config.add_cross_attention:
        raise InvalidInputError(
            "encoder_hidden_states were given but the model has no cross-attention; build it "
            "with config.add_cross_attention=True"
        )
    if encoder is not None and encoder_mask is not None:
        if tuple(encoder_mask.shape) != tuple(encoder.shape[:2]):
            raise InvalidInputError(
                f"encoder_attention_mask has shape {tuple(encoder_mask.shape)}; expected "
                f"{tuple(encoder.shape[:2])} (batch, encoder length)"
            )
    rows = math.prod(lead)
    static = isinstance(cache, StaticCache)
    if static:
        _check_static(cache, rows, dtype)
        buffers = zip(cache.keys, cache.values, strict=True)
        rules.check_cache(config, [(k.shape, v.shape) for k, v in buffers], rows)
    elif cache is not None:
        rules.check_cache(config, [(k.shape, v.shape) for k, v in cache], rows)
    past = cache.past_length() if cache is not None else 0
    if torch.compiler.is_compiling():
        return past, (None if attention_mask is not None else False)
    checks = [(r, given[n]) for n, r in rules.forward_rules(config).items() if given[n] is not None]
    extra = [attention_mask.all()] if attention_mask is not None else []
    extra += [past] if isinstance(past, torch.Tensor) else []
    fetched = _check_values(checks, extra)  # the one device sync
    past_int = fetched[-1] if isinstance(past, torch.Tensor) else past
    max_length = cache.max_length if static else None
    rules.check_length(config, past_int, T, max_length)
    if attention_mask is not None:
        rules.check_mask_shape(attention_mask.shape, lead, past_int, T, max_length)
    padded = attention_mask is not None and not fetched[0]
    return (past if static else past_int), padded


def _check_static(cache: StaticCache, rows: int, dtype: torch.dtype) -> None:
    if rows != cache.batch_size:
        raise InvalidInputError(
            f"the StaticCache holds {cache.batch_size} rows; the input has {rows}"
        )
    if dtype != cache.dtype:
        raise InvalidInputError(f"the StaticCache is {cache.dtype}; the model is {dtype}")


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
