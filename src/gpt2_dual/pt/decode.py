"""Greedy decoding and sampling for the PyTorch LM heads: the per-step loop over a KV cache.

Shapes: R rows (B prompts x ``num_return_sequences``; B x ``num_beams`` in beam search), T
prompt tokens, N new tokens, V vocabulary.

``Run`` holds what one ``generate`` call shares between its steps, for this loop and for beam
search (``beam.py``): the model's next-token logits (``forward``: the backbone on the newest
tokens, the LM head on the last position only), the processors (``process``), the end of a row
(``ended``: eos ids, stop strings) and the output. ``decode`` is the loop itself: choose a token
per row (argmax, or a draw from the processed scores), write ``pad`` for rows that have ended,
stop after N tokens or when every row has ended. ``generate.py`` is the entry point, as
``gpt2_dual.tf.generate`` is for ``gpt2_dual.tf.decode``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gpt2_dual.generation.config import GenerationConfig
from gpt2_dual.generation.fields import Resolved
from gpt2_dual.outputs import GenerateOutput
from gpt2_dual.pt.cache import DynamicCache, StaticCache
from gpt2_dual.pt.processors import apply_all, build_processors

__all__ = ["Run", "decode"]


class Run:
    """What one ``generate`` call shares between its steps (greedy, sampling, beam search).

    Args:
        model: the LM head model.
        config: the call's options; resolved: what they come to (``Resolved``).
        stop: the stop strings' matcher, or None; streamer: a ``TextStreamer``-like object.
        generator: the ``torch.Generator`` to sample with, or None.
        static: preallocate a ``StaticCache`` (else a ``DynamicCache`` grows).
        step: the compiled decode step (``generate.compiled_step``), or None: eager.
    """

    def __init__(
        self, model, config: GenerationConfig, resolved: Resolved, stop, streamer, generator, *,
        static: bool, step: Callable | None = None,
    ) -> None:  # fmt: skip
        self.model, self.config, self.resolved = model, config, resolved
        self.stop, self.streamer, self.generator = stop, streamer, generator
        self.processors = build_processors(config, resolved)
        self.scores: list[torch.Tensor] | None = None
        self.logits: list[torch.Tensor] | None = None
        if config.return_dict_in_generate:
            self.scores = [] if config.output_scores else None
            self.logits = [] if config.output_logits else None
        self.static, self.step = static, step
        self.eos = torch.tensor(resolved.eos_token_ids, dtype=torch.long, device=model.device)
        self.can_end = bool(resolved.eos_token_ids) or stop is not None

    def new_cache(self, rows: int, length: int) -> DynamicCache | StaticCache:
        if self.static:
            return StaticCache(
                self.model.config, rows, length, dtype=self.model.dtype, device=self.model.device
            )
        return DynamicCache()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None, cache) -> torch.Tensor:
        """Next-token logits ``(R, V)`` float32 for ``ids`` ``(R, t)`` after the cache."""
        if self.step is not None and ids.shape[1] == 1:
            if mask is None:  # the compiled step always takes the mask: one graph
                mask = torch.ones(
                    ids.shape[0], cache.max_length, dtype=torch.long, device=ids.device
                )
            torch.compiler.cudagraph_mark_step_begin()
            return self.step(ids, mask, cache).clone()  # the graph's output is reused
        out = self.model.transformer(
            ids, attention_mask=mask, past_key_values=cache, use_cache=True
        )
        return self.model.lm_head(out.last_hidden_state[:, -1]).float()

    def mask_for(self, keys: torch.Tensor | None, length: int) -> torch.Tensor | None:
        """The mask a forward needs from ``keys`` ``(R, S_max)``: none without padding, the
        first ``length`` columns with a dynamic cache, all of them with a static one."""
        if keys is None:
            return None
        return keys if self.static else keys[:, :length]

    def process(self, seq, ok, raw: torch.Tensor, step: int, log_probs: bool = False):
        """Processed scores ``(R, V)`` of ``raw`` logits (of their log-softmax with
        ``log_probs``, as beam search scores); records scores and raw logits when asked."""
        first = torch.log_softmax(raw, -1) if log_probs else raw
        scores = apply_all(self.processors, seq, ok, first, step)
        if self.logits is not None:
            self.logits.append(raw)
        if self.scores is not None:
            self.scores.append(scores)
        return scores

    def ended(self, seq: torch.Tensor, ok: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """``(R,)`` bool: rows whose newest ``token`` ends them (eos id or stop string; the
        text of a row is its tokens where ``ok``, without left padding)."""
        done = torch.isin(token, self.eos) if len(self.eos) else torch.zeros_like(token, dtype=bool)
        if self.stop is not None:
            rows = zip(seq.tolist(), ok.tolist(), strict=True)
            hits = [
                self.stop.hit([t for t, real in zip(*row, strict=True) if real]) for row in rows
            ]
            done = done | torch.tensor(hits, device=token.device)
        return done

    def output(self, sequences, cache, **beam: Any) -> torch.Tensor | GenerateOutput:
        if not self.config.return_dict_in_generate:
            return sequences
        return GenerateOutput(
            sequences=sequences,
            scores=None if self.scores is None else tuple(self.scores),
            logits=None if self.logits is None else tuple(self.logits),
            past_key_values=cache,
            **beam,
        )


def _expand(tensor: torch.Tensor | None, times: int) -> torch.Tensor | None:
    return tensor if tensor is None or times == 1 else tensor.repeat_interleave(times, 0)


def decode(run: Run, ids: torch.Tensor, mask: torch.Tensor | None):
    """Greedy decoding or sampling; see ``GenerationMixin.generate``.

    Args:
        run: the call's ``Run``.
        ids: ``(B, T)`` prompts.
        mask: ``(B, T)``, 0 at left padding, or None.

    Returns:
        ``(R, T + n)`` ids, n <= N the steps run (or ``GenerateOutput``, see ``Run.output``).
    """
    config, resolved = run.config, run.resolved
    ids, mask = (
        _expand(ids, config.num_return_sequences),
        _expand(mask, config.num_return_sequences),
    )
    rows, T = ids.shape
    total = T + resolved.max_new_tokens
    seq = ids.new_full((rows, total), resolved.pad_token_id)
    seq[:, :T] = ids
    ok = torch.ones((rows, total), dtype=torch.bool, device=ids.device)
    if mask is not None:
        ok[:, :T] = mask.bool()
    keys = None if mask is None else ok.long()  # (R, T + N): padding 0, the rest 1
    cache = run.new_cache(rows, total)
    unfinished = torch.ones(rows, dtype=torch.bool, device=ids.device)
    if run.streamer is not None:
        run.streamer.put(ids.cpu())
    raw = run.forward(ids, run.mask_for(keys, T), cache)
    steps = 0
    while True:
        length = T + steps
        scores = run.process(seq[:, :length], ok[:, :length], raw, steps)
        token = _choose(scores, config.do_sample, run.generator)
        token = torch.where(unfinished, token, resolved.pad_token_id)
        seq[:, length] = token
        steps += 1
        if run.streamer is not None:
            run.streamer.put(token.cpu())
        if steps == resolved.max_new_tokens:
            break
        if run.can_end:  # an eos id or a stop string: rows end (a device sync per step)
            unfinished &= ~run.ended(seq[:, : length + 1], ok[:, : length + 1], token)
            if not bool(unfinished.any()):
                break
        raw = run.forward(token[:, None], run.mask_for(keys, length + 1), cache)
    if run.streamer is not None:
        run.streamer.end()
    return run.output(seq[:, : T + steps], cache)


def _choose(scores: torch.Tensor, sample: bool, generator: torch.Generator | None):
    """``(R,)`` next ids: argmax, or a draw from ``softmax(scores)``."""
    if not sample:
        return scores.argmax(-1)
    probs = torch.softmax(scores, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
