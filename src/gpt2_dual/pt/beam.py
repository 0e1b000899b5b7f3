"""Beam search with fixed shapes: transformers' vectorized algorithm, step for step.

Shapes: B prompts, K = num_beams, C = K x max(2, 1 + number of eos ids) candidates kept per
step, T prompt tokens, M = T + N the longest sequence, V vocabulary.

Per step: log-softmax of the next-token logits, the processors, plus each beam's running score;
the best C continuations over all K x V; those that end (eos, stop string, or the length limit)
are scored with the length penalty ``score / new_length ** length_penalty`` and compete for the
K finished slots; the best K that did not end continue. The search stops when no running beam
can beat the worst finished one (``early_stopping``: False uses the current length, ``"never"``
the best reachable length, True stops once every prompt has K finished beams).
"""

from __future__ import annotations

import torch

from gpt2_dual.generation.config import GenerationConfig

__all__ = ["beam_search"]

_NEG = -1.0e9  # transformers' "impossible" score


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor`` ``(B, K, ...)`` at beams ``index`` ``(B, K')`` -> ``(B, K', ...)``."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


class _Beams:
    """The search state: running beams and the finished ones, per prompt."""

    def __init__(self, ids: torch.Tensor, K: int, new: int, fill: int) -> None:
        B, T = ids.shape[0] // K, ids.shape[1]
        device = ids.device
        self.running = torch.full((B, K, T + new), fill, dtype=torch.long, device=device)
        self.running[:, :, :T] = ids.view(B, K, T)
        self.sequences = self.running.clone()
        self.running_scores = torch.zeros((B, K), device=device)
        self.running_scores[:, 1:] = _NEG
        self.scores = torch.full((B, K), _NEG, device=device)
        self.finished = torch.zeros((B, K), dtype=torch.bool, device=device)
        self.improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
        self.hits = torch.zeros((B, K), dtype=torch.bool, device=device)
        self.running_index = torch.full((B, K, new), -1, dtype=torch.int32, device=device)
        self.index = self.running_index.clone()


def beam_search(run, ids: torch.Tensor, mask: torch.Tensor | None):
    """Beam search (or beam sampling with ``do_sample``); see ``GenerationMixin.generate``."""
    config, resolved = run.config, run.resolved
    K, V = config.num_beams, run.model.config.vocab_size
    ids, mask = ids.repeat_interleave(K, 0), None if mask is None else mask.repeat_interleave(K, 0)
    T, new = ids.shape[1], resolved.max_new_tokens
    B, M = ids.shape[0] // K, T + new
    eos = resolved.eos_token_ids
    pad = resolved.pad_token_id
    state = _Beams(ids, K, new, (pad or eos[0]) if eos else pad)  # transformers' fill value
    C = max(2, 1 + len(eos)) * K
    top_k_mask = torch.arange(C, device=ids.device) < K
    prompt_ok = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    keys = None if mask is None else torch.cat([mask, mask.new_ones((B * K, new))], 1)
    cache = run.new_cache(B * K, M)
    raw = run.forward(ids, run.mask_for(keys, T), cache)
    cur = T
    while True:
        flat = state.running[:, :, :cur].reshape(B * K, cur)
        ok = torch.cat([prompt_ok, prompt_ok.new_ones((B * K, cur - T))], 1)
        logp = run.process(flat, ok, raw, cur - T, log_probs=True)
        acc = (logp.view(B, K, V) + state.running_scores[:, :, None]).view(B, K * V)
        top_lp, top_seq, top_index = _continuations(state, acc, cur, T, C, K, V, run)
        ok_next = torch.cat([prompt_ok, prompt_ok.new_ones((B * K, cur + 1 - T))], 1)
        state.hits = _ended(run, top_seq[:, :, : cur + 1], ok_next, cur + 1 >= M, B, C)
        _next_running(state, top_lp, top_seq, top_index, K)
        _update_finished(state, top_lp, top_seq, top_index, top_k_mask, cur, T, config)
        beam_idx = state.running_index[..., cur - T].reshape(-1).long()
        cache.reorder_cache(beam_idx)
        cur += 1
        _early_stop_check(state, cur, M, T, config)
        if not _unfinished(state, config):
            break
        token = state.running[:, :, cur - 1].reshape(B * K, 1)
        raw = run.forward(token, run.mask_for(keys, cur), cache)
    return _finish(run, state, B, T, cache)


def _continuations(state, acc, cur, T, C, K, V, run):
    """The best (or sampled) ``C`` continuations over all beams of each prompt."""
    if run.config.do_sample:
        index = torch.multinomial(torch.softmax(acc, -1), C, generator=run.generator)
        top_lp = torch.gather(acc, 1, index)
    else:
        top_lp, index = torch.topk(acc, k=C)
    beam = index // V
    top_index = _gather(state.running_index, beam)
    top_seq = _gather(state.running, beam)
    top_seq[:, :, cur] = index % V
    offset = torch.arange(acc.shape[0], device=acc.device).view(-1, 1) * K
    top_index[:, :, cur - T] = (beam + offset).to(top_index.dtype)
    return top_lp, top_seq, top_index


def _ended(run, seq: torch.Tensor, ok: torch.Tensor, at_limit: bool, B: int, C: int):
    """``(B, C)`` bool: candidates that end here (length limit, eos id, stop string);
    ``ok`` ``(B * K, L)`` marks the real tokens of each prompt's beams."""
    if at_limit:
        return torch.ones((B, C), dtype=torch.bool, device=seq.device)
    flat = seq.reshape(B * C, -1)
    K = ok.shape[0] // B
    ok = ok.view(B, K, -1)[:, :1].expand(B, C, -1).reshape(B * C, -1)  # same prompt per beam
    return run.ended(flat, ok, flat[:, -1]).view(B, C)


def _next_running(state: _Beams, top_lp, top_seq, top_index, K: int) -> None:
    running_lp = top_lp + state.hits.to(torch.float32) * _NEG
    best = torch.topk(running_lp, k=K)[1]
    state.running = _gather(top_seq, best)
    state.running_scores = _gather(running_lp, best)
    state.running_index = _gather(top_index, best)


def _update_finished(state, top_lp, top_seq, top_index, top_k_mask, cur, T, config) -> None:
    """Candidates among the first K that just ended compete with the finished beams."""
    just = state.hits & top_k_mask[None, :]
    lp = top_lp / ((cur + 1 - T) ** config.length_penalty)
    full = torch.all(state.finished, dim=-1, keepdim=True) & (config.early_stopping is True)
    lp += full.to(torch.float32) * _NEG
    lp += (~state.improvable).to(torch.float32) * _NEG
    lp += (~just) * _NEG
    merged_scores = torch.cat((state.scores, lp), dim=1)
    best = torch.topk(merged_scores, k=state.scores.shape[1])[1]
    state.sequences = _gather(torch.cat((state.sequences, top_seq), dim=1), best)
    state.scores = _gather(merged_scores, best)
    state.index = _gather(torch.cat((state.index, top_index), dim=1), best)
    state.finished = _gather(torch.cat((state.finished, just), dim=1), best)


def _early_stop_check(state: _Beams, cur: int, M: int, T: int, config: GenerationConfig) -> None:
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        best_length = M - T
    else:
        best_length = cur - T
    best_running = state.running_scores[:, :1] / (best_length**config.length_penalty)
    worst = torch.where(state.finished, torch.min(state.scores, dim=1, keepdim=True)[0], _NEG)
    state.improvable = state.improvable & torch.any(best_running > worst, dim=-1, keepdim=True)


def _unfinished(state: _Beams, config: GenerationConfig) -> bool:
    improvable = torch.any(state.improvable)
    open_beam = ~(torch.all(state.finished) & (config.early_stopping is True))
    return bool(improvable & open_beam & ~torch.all(state.hits))


def _finish(run, state: _Beams, B: int, T: int, cache):
    R = run.config.num_return_sequences
    sequences = state.sequences[:, :R].reshape(B * R, -1)
    scores = state.scores[:, :R].reshape(-1)
    index = state.index[:, :R].reshape(B * R, -1)
    generated = int((index + 1).bool().sum(1).max())
    sequences, index = sequences[:, : T + generated], index[:, :generated]
    keep_scores = run.config.output_scores
    return run.output(
        sequences, cache, sequences_scores=scores if keep_scores else None, beam_indices=index
    )
