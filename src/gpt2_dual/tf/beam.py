"""Beam search with fixed shapes: transformers' vectorized algorithm (4.57 ``_beam_search``),
step for step, as pure TensorFlow steps for one ``tf.while_loop``.

Shapes: B prompts, K = num_beams, C = K x max(2, 1 + number of eos ids) candidates kept per
step, W prompt width (bucketed), S slots (``W + N`` or more), N new tokens at most, V
vocabulary. Rows of the model are ``B * K`` (beam ``k`` of prompt ``b`` is row ``b * K + k``).

Per step: log-softmax of the next-token logits, the processors, plus each beam's running score;
the best (or, with sampling, Gumbel-top-C sampled) C continuations over all K x V; those that
end (an eos id, a stop string, or the length limit) are scored with the length penalty
``score / new_length ** length_penalty`` and compete for the K finished slots; the best K that
did not end continue. The search stops when no running beam can beat the worst finished one
(``early_stopping``: False uses the current length, ``"never"`` the best reachable length, True
stops once every prompt has K finished beams).

State (dict): ``running``/``sequences`` ``(B, K, S)`` ids of running and finished beams,
``running_scores``/``scores`` ``(B, K)``, ``finished`` ``(B, K)``, ``improvable`` ``(B, 1)``,
``hits`` ``(B, C)`` (last step's ended candidates), ``running_index``/``index`` ``(B, K, S - W)``
source row of each new token (-1 unwritten), plus ``step``, ``cur``, ``mask``, ``raw``, ``cache``
as in ``decode.py``.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from gpt2_dual.tf import topk
from gpt2_dual.tf.cache import StaticCache
from gpt2_dual.tf.decode import Static, empty_buffers, forward, record
from gpt2_dual.tf.processors import gumbel, process

__all__ = [
    "advance", "candidates", "feed", "go_on", "loop", "result", "select", "start", "step",
]  # fmt: skip

_NEG = -1.0e9  # transformers' "impossible" score
State = dict[str, Any]


def kept(st: Static) -> int:
    """C: candidates kept per step."""
    return max(2, 1 + len(st.spec.eos)) * st.num_beams


def start(model: Any, st: Static, ids, mask) -> State:
    """Prefill the prompt ``ids`` ``(B * K, W)`` (each prompt repeated K times); ``mask``
    ``(B * K, S)``."""
    rows, width = ids.shape
    slots = mask.shape[1]
    K = st.num_beams
    B, new_slots = rows // K, slots - width
    cache = StaticCache(model.config, rows, slots, dtype=model.compute_dtype)
    raw, cache = forward(model, ids, mask, cache)
    running = tf.concat([ids, tf.fill([rows, new_slots], st.fill)], 1)
    running = tf.reshape(running, [B, K, slots])
    first = tf.concat([tf.zeros([B, 1]), tf.fill([B, K - 1], _NEG)], 1)
    return {
        "step": tf.constant(0, tf.int32),
        "cur": tf.constant(width, tf.int32),
        "mask": mask,
        "raw": raw,
        "cache": cache,
        "running": running,
        "sequences": running,
        "running_scores": first,
        "scores": tf.fill([B, K], _NEG),
        "finished": tf.zeros([B, K], tf.bool),
        "improvable": tf.ones([B, 1], tf.bool),
        "hits": tf.zeros([B, kept(st)], tf.bool),
        "running_index": tf.fill([B, K, new_slots], -1),
        "index": tf.fill([B, K, new_slots], -1),
        **{f"out_{k}": v for k, v in empty_buffers(st, new_slots, rows, raw.shape[-1]).items()},
    }


def candidates(st: Static, state: State, new, vals, seed) -> tuple[State, State]:
    """The best (or sampled) C continuations: ``lp`` ``(B, C)`` running scores, ``seq``
    ``(B, C, S)``, ``index`` ``(B, C, S - W)``, and ``hits`` ``(B, C)`` (eos or length limit);
    also records the step's scores and logits."""
    running, cur, step = state["running"], state["cur"], state["step"]
    B, K, S = running.shape
    raw = state["raw"]
    V = raw.shape[-1]
    slots = tf.range(S)
    ok = (state["mask"] > 0) & (slots < cur)[None, :]
    logp = tf.nn.log_softmax(raw, axis=-1)
    logp = process(st.spec, vals, tf.reshape(running, [B * K, S]), ok, cur, step, logp)
    buffers = {k: state[f"out_{k}"] for k in ("scores", "logits") if f"out_{k}" in state}
    recorded = {f"out_{k}": v for k, v in record(buffers, step, logp, raw).items()}
    acc = tf.reshape(tf.reshape(logp, [B, K, V]) + state["running_scores"][:, :, None], [B, -1])
    C = kept(st)
    if st.sample:  # sampling without replacement from softmax(acc): Gumbel top-C
        picked = topk.top_k(acc + gumbel(tf.shape(acc), seed, step), C)[1]
        lp = tf.gather(acc, picked, batch_dims=1)
    else:
        lp, picked = topk.top_k(acc, C)
    beam, token = picked // V, picked % V
    seq = tf.gather(running, beam, batch_dims=1)
    seq = tf.where((slots == cur)[None, None, :], token[:, :, None], seq)
    source = beam + tf.range(B)[:, None] * K  # row of the model the token came from
    index = tf.gather(state["running_index"], beam, batch_dims=1)
    index = tf.where((tf.range(index.shape[-1]) == step)[None, None, :], source[..., None], index)
    hits = tf.fill([B, C], step + 1 >= new)
    if st.spec.eos:
        hits |= tf.reduce_any(token[..., None] == tf.constant(st.spec.eos)[None, None], -1)
    return {**state, **recorded}, {"lp": lp, "seq": seq, "index": index, "hits": hits}


def _penalized(scores: tf.Tensor, length: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """``scores / length ** penalty``, the power in float64 as transformers' Python floats."""
    return scores / tf.cast(tf.cast(length, tf.float64) ** penalty, tf.float32)


def _neg(flags: tf.Tensor) -> tf.Tensor:
    return tf.cast(flags, tf.float32) * _NEG


def select(st: Static, state: State, cand: State, new, vals) -> State:
    """Keep the best K candidates that did not end as running beams, let those among the first
    K that ended compete for the finished slots, reorder the cache, update the heuristic."""
    hits, K, step = cand["hits"], st.num_beams, state["step"]
    penalty = vals["length_penalty"]
    running_lp = cand["lp"] + _neg(hits)
    best = topk.best(running_lp, K)
    running_index = tf.gather(cand["index"], best, batch_dims=1)
    just = hits & (tf.range(hits.shape[1]) < K)[None, :]
    lp = _penalized(cand["lp"], step + 1, penalty)
    if st.early_stopping is True:
        lp += _neg(tf.reduce_all(state["finished"], axis=-1, keepdims=True))
    lp += _neg(~state["improvable"])
    lp += _neg(~just)
    merged = tf.concat([state["scores"], lp], 1)
    top = topk.best(merged, K)

    def merge(old, new_):
        return tf.gather(tf.concat([old, new_], 1), top, batch_dims=1)

    rows = tf.reshape(tf.gather(running_index, step, axis=2), [-1])  # (B * K,)
    out = {
        **state,
        "running": tf.gather(cand["seq"], best, batch_dims=1),
        "running_scores": tf.gather(running_lp, best, batch_dims=1),
        "running_index": running_index,
        "sequences": merge(state["sequences"], cand["seq"]),
        "scores": tf.gather(merged, top, batch_dims=1),
        "index": merge(state["index"], cand["index"]),
        "finished": merge(state["finished"], just),
        "hits": hits,
        "cache": _reorder(state["cache"], rows),
        "step": step + 1,
        "cur": state["cur"] + 1,
    }
    out["improvable"] = _improvable(st, out, new, penalty)
    return out


def _improvable(st: Static, state: State, new, penalty) -> tf.Tensor:
    """transformers' early-stop heuristic: can a running beam still beat the worst finished?"""
    length = state["step"]
    if st.early_stopping == "never":
        length = tf.where(penalty > 0, new, length)
    best = _penalized(state["running_scores"][:, :1], length, penalty)
    worst = tf.where(state["finished"], tf.reduce_min(state["scores"], axis=1, keepdims=True), _NEG)
    return state["improvable"] & tf.reduce_any(best > worst, axis=-1, keepdims=True)


def _reorder(cache: StaticCache, rows: tf.Tensor) -> StaticCache:
    """A copy of the cache with its rows taken from ``rows`` ``(B * K,)`` (the beams that
    continue)."""
    cache = cache.copy()
    cache.reorder_cache(rows)
    return cache


def go_on(st: Static, state: State) -> tf.Tensor:
    """0-d bool: transformers' ``_beam_search_has_unfinished_sequences``."""
    going = tf.reduce_any(state["improvable"]) & ~tf.reduce_all(state["hits"])
    if st.early_stopping is True:
        going &= ~tf.reduce_all(state["finished"])
    return going


def feed(model: Any, state: State) -> State:
    """Run each running beam's newest token through the model."""
    B, K, S = state["running"].shape
    token = tf.reshape(tf.gather(state["running"], state["cur"] - 1, axis=2), [B * K, 1])
    raw, cache = forward(model, token, state["mask"], state["cache"])
    return {**state, "raw": raw, "cache": cache}


def step(st: Static, state: State, new, vals, seed) -> State:
    """One search step on ``raw``: ``candidates``, then ``select``."""
    state, cand = candidates(st, state, new, vals, seed)
    return select(st, state, cand, new, vals)


def advance(model: Any, st: Static, state: State, new, vals, seed) -> State:
    """``feed`` the newest tokens, then ``step``."""
    return step(st, feed(model, state), new, vals, seed)


def loop(model: Any, st: Static, ids, mask, new, vals, seed) -> State:
    """The whole beam search in one ``tf.while_loop``.

    Returns:
        ``sequences`` ``(B, K, S)``, ``scores`` ``(B, K)``, ``index`` ``(B, K, S - W)``,
        ``step``, and ``out_scores``/``out_logits`` buffers and the ``cache`` when asked for.
    """
    state = step(st, start(model, st, ids, mask), new, vals, seed)
    (state,) = tf.while_loop(
        lambda s: go_on(st, s),
        lambda s: (advance(model, st, s, new, vals, seed),),
        (state,),
    )
    return result(st, state)


def result(st: Static, state: State) -> State:
    """What the host needs of the final state (see ``loop``)."""
    keep = ["sequences", "scores", "index", "step", "out_scores", "out_logits"]
    keep += ["cache"] if st.keep_cache else []
    return {k: state[k] for k in keep if k in state}
