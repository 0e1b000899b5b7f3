"""``generate`` for the TensorFlow LM heads, the whole loop in one compiled program; and the
single steps (``prefill``, ``decode_step``, ``compile_decode``) it is made of.

Shapes: B prompts, R rows (B x ``num_return_sequences``; B x ``num_beams`` in beam search),
T prompt tokens, W bucketed prompt width, N new tokens, S cache slots, V vocabulary.

Options, validation and meaning are shared with ``gpt2_dual.pt`` (``gpt2_dual.GenerationConfig``,
checked with the prompt before any model work); the numbers follow transformers' ``generate``
(processors in ``processors.py``, greedy and sampling in ``decode.py``, beam search in
``beam.py``).

One program per call: prefill, a ``tf.while_loop`` over a ``StaticCache``, the processors,
sampling (stateless Philox noise from ``seed``) and stopping all run in one ``tf.function``,
compiled by XLA (``jit_compile=True``, the default; on a 2-core CPU at GPT-2 small, batch 1,
XLA decodes about 1.25x faster than plain graph mode, 1.35x with beams, and compiles in about
4 s against 2 s). Shapes are bucketed so that new prompts rarely compile again: the
prompt is left-padded (pad id, mask 0) to a multiple of ``PROMPT_BUCKET`` and the cache holds a
multiple of ``CACHE_BUCKET`` slots (both capped at ``n_positions``). Positions come from the
mask, so the padding changes no number. ``max_new_tokens``, ``seed`` and the processors' numbers
(temperature, penalties, ...) are inputs of the program; which processors run, the eos ids and
the output options select it. Programs are kept per model (``compiled_programs``).

Streamers and stop strings need the host between steps: then the same steps run as compiled
pieces called from a Python loop.

The cache is always the fixed-size one (``cache_implementation`` is accepted for PyTorch
parity; a growing cache cannot live in one compiled loop).

Example:
    >>> ids = tokenizer(["Hello, my dog"], return_tensors="tf")  # doctest: +SKIP
    >>> out = model.generate(**ids, max_new_tokens=20, do_sample=True, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import tensorflow as tf

from gpt2_dual.generation.call import prepare_call
from gpt2_dual.generation.config import GenerationConfig, HasGenerationConfig, Resolved
from gpt2_dual.outputs import GenerateOutput
from gpt2_dual.tf import beam, decode
from gpt2_dual.tf.cache import DynamicCache, StaticCache
from gpt2_dual.tf.decode import Static
from gpt2_dual.tf.processors import ProcessorSpec, values

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_BUCKET",
    "PROMPT_BUCKET",
    "GenerationMixin",
    "compile_decode",
    "compiled_programs",
    "decode_step",
    "prefill",
]

PROMPT_BUCKET = 16
CACHE_BUCKET = 64
_PROGRAMS = "_gpt2_dual_generate_programs"


class GenerationMixin(HasGenerationConfig):
    """``generate`` and ``generation_config`` for the models with an LM head."""

    def generate(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        generation_config: GenerationConfig | None = None,
        tokenizer: Any = None,
        streamer: Any = None,
        seed: int | None = None,
        jit_compile: bool = True,
        **kwargs: Any,
    ) -> tf.Tensor | GenerateOutput:
        """Continue each prompt (transformers' ``generate``, for a decoder-only GPT-2).

        Args:
            input_ids: ``(B, T)`` prompt ids (tensor, array or lists); ``(T,)`` is one row.
            attention_mask: ``(B, T)``, 0 at left padding; ``**tokenizer(...)`` unpacks here.
            generation_config: options replacing the model's ``generation_config``.
            tokenizer: needed by ``stop_strings``.
            streamer: ``TextStreamer``-like object (batch of one, no beam search).
            seed: seed of sampling (stateless: the same seed gives the same tokens, with or
                without XLA); None draws a new one.
            jit_compile: compile the loop with XLA (the default: fastest on CPU too, about
                1.2-1.4x graph mode at GPT-2 small); False: plain graph mode, which compiles
                about 1.5x quicker (worth it for one short call).
            **kwargs: ``GenerationConfig`` fields for this call (``max_new_tokens``,
                ``do_sample``, ``num_beams``, ``top_p``, ...).

        Returns:
            ``(R, T + n)`` int32 ids, prompt included, with n <= N the steps run (beam search:
            the longest returned beam); or ``GenerateOutput`` with ``return_dict_in_generate``
            (``scores``: processed, per step ``(B x num_beams, V)``; ``logits``: raw).

        Raises:
            TypeError: an unknown keyword or a non-integer prompt.
            ValueError: an invalid option or prompt, named with its limit, before any work.
        """
        config, ids, mask, resolved, stop = prepare_call(
            self.config, self.generation_config, generation_config, kwargs,
            input_ids, attention_mask, streamer=streamer, tokenizer=tokenizer,
        )  # fmt: skip
        call = _Call(self, config, resolved, bool(jit_compile))
        return call.run(ids, mask, _seed(seed), stop, streamer)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def bucket_sizes(prompt_length: int, new_tokens: int, n_positions: int) -> tuple[int, int]:
    """``(W, S)``: the padded prompt width and the cache slots for a prompt of
    ``prompt_length`` tokens and ``new_tokens`` new ones (``W + new_tokens <= S``)."""
    width = min(_round_up(prompt_length, PROMPT_BUCKET), n_positions - new_tokens)
    return width, min(_round_up(width + new_tokens, CACHE_BUCKET), n_positions)


def compiled_programs(model: Any) -> dict[tuple, Callable]:
    """The ``tf.function``s ``generate`` made for ``model``, by (kind, static options, XLA).
    Each traces once per input shape (bucket); ``experimental_get_tracing_count()`` says how
    often it did."""
    return model.__dict__.setdefault(_PROGRAMS, {})


#: Each compiled piece, bound to its model and static options. ``functools.partial``, not a
#: lambda, is compiled: TensorFlow counts retracing per Python code object, which every
#: program would share.
_PIECES: dict[str, Callable[[Any, Static], Callable]] = {
    "decode": lambda model, st: partial(decode.loop, model, st),
    "beam": lambda model, st: partial(beam.loop, model, st),
    "decode_start": lambda model, st: partial(decode.start, model, st),
    "decode_advance": lambda model, st: partial(decode.advance, model, st),
    "beam_start": lambda model, st: partial(beam.start, model, st),
    "beam_candidates": lambda model, st: partial(beam.candidates, st),
    "beam_select": lambda model, st: partial(beam.select, st),
    "beam_feed": lambda model, st: partial(beam.feed, model),
}


def _program(model: Any, kind: str, st: Static, jit: bool) -> Callable:
    programs = compiled_programs(model)
    key = (kind, st, jit)
    if key not in programs:
        piece = _PIECES[kind](model, st)
        programs[key] = tf.function(piece, jit_compile=jit, autograph=False)
    return programs[key]


def _seed(seed: int | None) -> tf.Tensor:
    """The ``(2,)`` int64 key of the stateless noise: ``[seed, 0]``, or random for None."""
    if seed is None:
        return tf.constant(np.random.default_rng().integers(0, 2**62, size=2), tf.int64)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    return tf.constant([int(seed) % 2**63, 0], tf.int64)


class _Call:
    """One ``generate`` call: its static options, bucketed inputs and output assembly."""

    def __init__(self, model, config: GenerationConfig, resolved: Resolved, jit: bool) -> None:
        self.model, self.config, self.resolved, self.jit = model, config, resolved, jit
        self.beams = resolved.mode.startswith("beam")
        eos, pad = resolved.eos_token_ids, resolved.pad_token_id
        keep = config.return_dict_in_generate
        self.static = Static(
            mode=resolved.mode,
            spec=ProcessorSpec.build(config, resolved),
            pad=pad,
            fill=(pad or eos[0]) if eos else pad,  # transformers' beam fill value
            num_beams=config.num_beams if self.beams else 1,
            early_stopping=config.early_stopping if self.beams else False,
            keep_scores=keep and config.output_scores,
            keep_logits=keep and config.output_logits,
            keep_cache=keep,
        )

    def program(self, kind: str) -> Callable:
        return _program(self.model, kind, self.static, self.jit)

    def run(self, ids: np.ndarray, mask: np.ndarray | None, key: tf.Tensor, stop, streamer):
        """Bucket the prompt ``ids`` ``(B, T)`` (``mask``: None without padding), run the
        program (or the host loop, with ``stop`` strings or a ``streamer``), assemble the
        output. ``key``: the seed of the noise."""
        times = self.config.num_beams if self.beams else self.config.num_return_sequences
        mask = np.ones_like(ids) if mask is None else mask
        self.user_ids, self.user_mask = np.repeat(ids, times, 0), np.repeat(mask, times, 0)
        rows, T = self.user_ids.shape
        N = self.resolved.max_new_tokens
        W, S = bucket_sizes(T, N, self.model.config.n_positions)
        prompt = np.full((rows, W), self.resolved.pad_token_id, np.int32)
        prompt[:, W - T :] = self.user_ids
        full = np.ones((rows, S), np.int32)
        full[:, :W] = 0
        full[:, W - T : W] = self.user_mask
        self.T, self.W = T, W
        args = (tf.constant(prompt), tf.constant(full), tf.constant(N, tf.int32))
        vals = values(self.config, self.resolved)
        host = stop is not None or streamer is not None
        if self.beams:
            if host:
                out = self.host_beam(*args, vals, key, stop)
            else:
                out = self.program("beam")(*args, vals, key)
            return self.beam_output(out)
        if host:
            out = self.host_decode(*args, vals, key, stop, streamer)
        else:
            out = self.program("decode")(*args, vals, key)
        return self.decode_output(out)

    def histories(self) -> list[list[int]]:
        """Each row's real prompt tokens (padding left out), for stop strings."""
        return [list(r[m > 0]) for r, m in zip(self.user_ids, self.user_mask, strict=True)]

    def host_decode(self, prompt, full, new, vals, key, stop, streamer):
        """Greedy or sampling with the host between steps (stop strings, streamer)."""
        if streamer is not None:
            streamer.put(self.user_ids)
        history = self.histories()
        state = self.program("decode_start")(prompt, full, vals, key)
        advance = self.program("decode_advance")
        while True:
            token = tf.gather(state["seq"], state["cur"] - 1, axis=1).numpy()
            if streamer is not None:
                streamer.put(token)
            for row, t in zip(history, token, strict=True):
                row.append(int(t))
            if stop is not None:
                hits = tf.constant([stop.hit(row) for row in history])
                state["unfinished"] = state["unfinished"] & ~hits
            if not bool(decode.go_on(state, new)):
                break
            state = advance(state, vals, key)
        if streamer is not None:
            streamer.end()
        return decode.result(self.static, state)

    def host_beam(self, prompt, full, new, vals, key, stop):
        """Beam search with the host between steps (stop strings on every candidate)."""
        K, W = self.static.num_beams, self.W
        prefixes = self.histories()[::K]
        state = self.program("beam_start")(prompt, full)
        while True:
            if int(state["step"]) > 0:
                state = self.program("beam_feed")(state)
            state, cand = self.program("beam_candidates")(state, new, vals, key)
            cur, seqs = int(state["cur"]), cand["seq"].numpy()
            hits = [
                [stop.hit(prefixes[b] + list(row[W : cur + 1])) for row in seqs[b]]
                for b in range(len(seqs))
            ]
            cand["hits"] = cand["hits"] | tf.constant(hits)
            state = self.program("beam_select")(state, cand, new, vals)
            if not bool(beam.go_on(self.static, state)):
                break
        return beam.result(self.static, state)

    def decode_output(self, out: dict) -> tf.Tensor | GenerateOutput:
        steps, start = int(out["step"]), self.W - self.T
        sequences = out["seq"][:, start : self.W + steps]
        if not self.config.return_dict_in_generate:
            return sequences
        return GenerateOutput(
            sequences=sequences,
            scores=_per_step(out.get("scores"), steps),
            logits=_per_step(out.get("logits"), steps),
            past_key_values=_user_cache(out["cache"], start),
        )

    def beam_output(self, out: dict) -> tf.Tensor | GenerateOutput:
        R = self.config.num_return_sequences
        B, K, S = out["sequences"].shape
        sequences = tf.reshape(out["sequences"][:, :R], [B * R, S])
        index = tf.reshape(out["index"][:, :R], [B * R, -1])
        generated = int(tf.reduce_max(tf.reduce_sum(tf.cast(index != -1, tf.int32), 1)))
        sequences = sequences[:, self.W - self.T : self.W + generated]
        if not self.config.return_dict_in_generate:
            return sequences
        steps = int(out["step"])
        scores = tf.reshape(out["scores"][:, :R], [-1]) if self.config.output_scores else None
        return GenerateOutput(
            sequences=sequences,
            sequences_scores=scores,
            scores=_per_step(out.get("out_scores"), steps),
            logits=_per_step(out.get("out_logits"), steps),
            beam_indices=index[:, :generated],
            past_key_values=_user_cache(out["cache"], self.W - self.T),
        )


def _per_step(buffer: tf.Tensor | None, steps: int) -> tuple[tf.Tensor, ...] | None:
    return None if buffer is None else tuple(tf.unstack(buffer[:steps]))


def _user_cache(cache: StaticCache, start: int) -> DynamicCache:
    """The written part of ``cache`` without the bucket padding: what transformers returns."""
    end = int(cache.lengths[0])
    return DynamicCache(
        [k[:, :, start:end] for k in cache.keys], [v[:, :, start:end] for v in cache.values]
    )


# --------------------------------------------------------------------------- single steps
def prefill(
    model: Any,
    input_ids: tf.Tensor,
    cache: StaticCache,
    *,
    attention_mask: tf.Tensor | None = None,
) -> tuple[tf.Tensor, StaticCache]:
    """Run the prompt through ``model``, writing its keys and values into ``cache``.

    Args:
        model: a gpt2_dual.tf model with an LM head (``GPT2LMHeadModel``,
            ``GPT2DoubleHeadsModel``).
        input_ids: ``(B, T)`` prompt ids.
        cache: an empty (or partly filled) ``StaticCache`` of ``B`` rows.
        attention_mask: ``(B, S_max)`` (or ``(B, P + T)``), 0 for padding.

    Returns:
        The next-token logits ``(B, V)`` and the new cache.
    """
    out = model.transformer(
        input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True
    )
    return model._lm_logits(out["last_hidden_state"][:, -1, :]), out["past_key_values"]


def decode_step(
    model: Any,
    token: tf.Tensor,
    cache: StaticCache,
    *,
    attention_mask: tf.Tensor | None = None,
) -> tuple[tf.Tensor, StaticCache]:
    """One token per row through ``model``, written at the cache's length.

    Args:
        model: a gpt2_dual.tf model with an LM head.
        token: ``(B, 1)`` ids of the newest token of each row.
        cache: the ``StaticCache`` from ``prefill`` or the previous step.
        attention_mask: ``(B, S_max)``, 0 for padding (fixed width: no retrace).

    Returns:
        The next-token logits ``(B, V)`` and the new cache.
    """
    return prefill(model, token, cache, attention_mask=attention_mask)


def compile_decode(model: Any) -> Callable[..., tuple[tf.Tensor, StaticCache]]:
    """``decode_step`` for ``model`` under ``tf.function(jit_compile=True)``.

    Call it as ``step(token, cache)`` or ``step(token, cache, attention_mask=mask)``; it
    compiles once per input shape and cache size.
    """

    def step(token, cache, attention_mask=None):
        return decode_step(model, token, cache, attention_mask=attention_mask)

    return tf.function(step, jit_compile=True)
