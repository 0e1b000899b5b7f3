"""Greedy decoding and sampling as pure TensorFlow steps over a fixed-size cache.

Shapes: R rows, W prompt width (the bucketed, left-padded prompt), S slots (cache and token
buffer, ``W + N`` or more), N new tokens at most, V vocabulary.

A state is a dict of tensors (and the ``StaticCache``) whose shapes never change, so the steps
run as the body of one ``tf.while_loop`` (``loop``) or, when the host must see each token
(streamers, stop strings), one compiled call per step (``start``, ``advance``):

- ``seq`` ``(R, S)`` int32: prompt, then the new tokens (``pad`` beyond); ``mask`` ``(R, S)``
  int32: 0 at left padding, 1 elsewhere (the model's attention mask at full width).
- ``step`` new tokens so far, ``cur`` the slot of the next one (``W + step``).
- ``raw`` ``(R, V)`` float32: next-token logits; ``cache``: keys and values of slots < ``cur - 1``.
- ``unfinished`` ``(R,)`` bool: rows that have not ended (a finished row gets ``pad``).
- ``scores``, ``logits`` ``(S - W, R, V)`` when asked for: processed scores and raw logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from gpt2_dual.tf.cache import StaticCache
from gpt2_dual.tf.processors import ProcessorSpec, choose, process

__all__ = ["Static", "advance", "forward", "go_on", "loop", "result", "start"]

State = dict[str, Any]


@dataclass(frozen=True)
class Static:
    """What a compiled program is specialized to (its cache key, with the input shapes).

    Attributes:
        mode: ``"greedy"``, ``"sample"``, ``"beam"`` or ``"beam_sample"``.
        spec: the processors.
        pad: id written after a row ended.
        fill: beam search's fill value of unwritten slots (transformers' rule).
        num_beams: beams per prompt.
        early_stopping: True, False or ``"never"``.
        keep_scores, keep_logits, keep_cache: also return those.
    """

    mode: str
    spec: ProcessorSpec
    pad: int
    fill: int = 0
    num_beams: int = 1
    early_stopping: bool | str = False
    keep_scores: bool = False
    keep_logits: bool = False
    keep_cache: bool = False

    @property
    def sample(self) -> bool:
        return self.mode in ("sample", "beam_sample")


def forward(model: Any, ids: tf.Tensor, mask: tf.Tensor, cache: StaticCache):
    """Next-token logits ``(R, V)`` float32 of ``ids`` ``(R, t)`` after ``cache``, and the new
    cache. Runs the backbone and the LM head on the last position only (any LM head model)."""
    out = model.transformer(
        input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True
    )
    logits = model._lm_logits(out["last_hidden_state"][:, -1, :])
    return tf.cast(logits, tf.float32), out["past_key_values"]


def empty_buffers(st: Static, steps: int, rows: int, vocab: int) -> State:
    """Zeroed ``(steps, rows, V)`` buffers for the scores and logits asked for."""
    state = {}
    if st.keep_scores:
        state["scores"] = tf.zeros([steps, rows, vocab], tf.float32)
    if st.keep_logits:
        state["logits"] = tf.zeros([steps, rows, vocab], tf.float32)
    return state


def record(state: State, step: tf.Tensor, scores: tf.Tensor, raw: tf.Tensor) -> State:
    """Write this step's processed ``scores`` and ``raw`` logits into the buffers asked for."""
    out = {}
    for name, value in (("scores", scores), ("logits", raw)):
        if name in state:
            out[name] = tf.tensor_scatter_nd_update(state[name], [[step]], value[None])
    return out


def start(model: Any, st: Static, ids, mask, vals, seed) -> State:
    """Prefill the prompt and choose the first token.

    Args:
        ids: ``(R, W)`` int32 prompt, left-padded; mask: ``(R, S)`` int32.
        vals: the processors' numbers; seed: ``(2,)`` int64.
    """
    rows, width = ids.shape
    slots = mask.shape[1]
    cache = StaticCache(model.config, rows, slots, dtype=model.compute_dtype)
    raw, cache = forward(model, ids, mask, cache)
    state = {
        "step": tf.constant(0, tf.int32),
        "cur": tf.constant(width, tf.int32),
        "seq": tf.concat([ids, tf.fill([rows, slots - width], st.pad)], axis=1),
        "mask": mask,
        "raw": raw,
        "cache": cache,
        "unfinished": tf.ones([rows], tf.bool),
        **empty_buffers(st, slots - width, rows, raw.shape[-1]),
    }
    return _pick(st, state, vals, seed)


def advance(model: Any, st: Static, state: State, vals, seed) -> State:
    """Run the newest token through the model and choose the next one."""
    token = tf.gather(state["seq"], state["cur"] - 1, axis=1)[:, None]  # (R, 1)
    raw, cache = forward(model, token, state["mask"], state["cache"])
    return _pick(st, {**state, "raw": raw, "cache": cache}, vals, seed)


def _pick(st: Static, state: State, vals, seed) -> State:
    """Process ``raw``, choose each row's token (``pad`` for finished rows), write it at
    ``cur``, and end the rows whose token is an end-of-sequence id."""
    seq, cur, step = state["seq"], state["cur"], state["step"]
    slots = tf.range(seq.shape[1])
    ok = (state["mask"] > 0) & (slots < cur)[None, :]
    scores = process(st.spec, vals, seq, ok, cur, step, state["raw"])
    token = choose(scores, st.sample, seed, step)
    token = tf.where(state["unfinished"], token, st.pad)
    unfinished = state["unfinished"]
    if st.spec.eos:
        ended = tf.reduce_any(token[:, None] == tf.constant(st.spec.eos, tf.int32)[None], -1)
        unfinished = unfinished & ~ended
    return {
        **state,
        "seq": tf.where((slots == cur)[None, :], token[:, None], seq),
        "step": step + 1,
        "cur": cur + 1,
        "unfinished": unfinished,
        **record(state, step, scores, state["raw"]),
    }


def go_on(state: State, new: tf.Tensor) -> tf.Tensor:
    """0-d bool: fewer than ``new`` tokens so far and a row still open."""
    return (state["step"] < new) & tf.reduce_any(state["unfinished"])


def loop(model: Any, st: Static, ids, mask, new, vals, seed) -> State:
    """The whole generation: ``start``, then ``advance`` in a ``tf.while_loop``.

    Returns:
        ``seq`` ``(R, S)``, ``step`` (tokens generated), and ``scores``/``logits`` buffers and
        the ``cache`` when asked for.
    """
    state = start(model, st, ids, mask, vals, seed)
    (state,) = tf.while_loop(
        lambda s: go_on(s, new),
        lambda s: (advance(model, st, s, vals, seed),),
        (state,),
    )
    return result(st, state)


def result(st: Static, state: State) -> State:
    """What the host needs of the final state: ``seq``, ``step``, the buffers and the cache
    when asked for."""
    keep = ["seq", "step", "scores", "logits"] + (["cache"] if st.keep_cache else [])
    return {k: state[k] for k in keep if k in state}
