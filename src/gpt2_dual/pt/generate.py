"""``generate`` for the PyTorch LM heads: greedy, sampling and beam search over a KV cache.

Shapes: B prompts, R = B x num_return_sequences rows (B x num_beams in beam search), T prompt
tokens, N new tokens, V vocabulary.

The options, their validation and their meaning are shared with ``gpt2_dual.tf``
(``gpt2_dual.GenerationConfig``; ``gpt2_dual.generation.checks`` checks the config and the
prompt before any model work). The numbers follow transformers' ``generate``: the same logits
processors in the same order (``processors.py``), the same vectorized beam search
(``beam.py``), the same padding of finished rows. Each step runs the backbone on the newest
token only and the LM head on its last position.

Cache: ``cache_implementation="static"`` preallocates ``(R, H, T + N, D)`` per layer
(``StaticCache``); ``"dynamic"`` grows by concatenation. Default: dynamic on CPU (no compile
needed, no masking of unwritten slots: measured faster there), static on CUDA. On CUDA with a
static cache the decode step runs under ``torch.compile(fullgraph=True,
mode="reduce-overhead")``, as transformers does: every step replays one CUDA graph over the
cache's fixed buffers, compiled once per shape (``disable_compile=True`` runs it eagerly).
"""

from __future__ import annotations

from typing import Any

import torch

from gpt2_dual.generation.call import prepare_call
from gpt2_dual.generation.config import GenerationConfig, HasGenerationConfig, Resolved
from gpt2_dual.outputs import GenerateOutput
from gpt2_dual.pt.cache import DynamicCache, StaticCache
from gpt2_dual.pt.linear import packed_weights
from gpt2_dual.pt.processors import apply_all, build_processors

__all__ = ["GenerationMixin"]


class GenerationMixin(HasGenerationConfig):
    """``generate`` and ``generation_config`` for the models with an ``lm_head``."""

    @torch.no_grad()
    def generate(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        generation_config: GenerationConfig | None = None,
        tokenizer: Any = None,
        streamer: Any = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | GenerateOutput:
        """Continue each prompt (transformers' ``generate``, for a decoder-only GPT-2).

        Args:
            input_ids: ``(B, T)`` prompt ids (tensor, array or lists); ``(T,)`` is one row.
            attention_mask: ``(B, T)``, 0 at left padding; ``**tokenizer(...)`` unpacks here.
            generation_config: options replacing the model's ``generation_config``.
            tokenizer: needed by ``stop_strings``.
            streamer: ``TextStreamer``-like object (batch of one, no beam search).
            seed: seed for sampling (a new ``torch.Generator`` on the model's device).
            generator: the ``torch.Generator`` to sample with (instead of ``seed``).
            **kwargs: ``GenerationConfig`` fields for this call (``max_new_tokens``,
                ``do_sample``, ``num_beams``, ``top_p``, ...).

        Returns:
            ``(R, T + n)`` int64 ids, prompt included, with R = B x ``num_return_sequences``
            and n <= N the steps run; or ``GenerateOutput`` with ``return_dict_in_generate``.

        Raises:
            TypeError: an unknown keyword or a non-integer prompt.
            ValueError: an invalid option or prompt, named with its limit, before any work.
        """
        config, ids, mask, resolved, stop = prepare_call(
            self.config, self.generation_config, generation_config, kwargs,
            input_ids, attention_mask, streamer=streamer, tokenizer=tokenizer,
        )  # fmt: skip
        device = self.device
        if generator is None and seed is not None:
            generator = torch.Generator(device).manual_seed(seed)
        run = Run(self, config, resolved, stop, streamer, generator)
        ids_t = torch.as_tensor(ids, device=device)
        mask_t = None if mask is None else torch.as_tensor(mask, device=device)
        with packed_weights(self.modules()):  # bf16 CPU decoding: see pt/linear.py
            if resolved.mode.startswith("beam"):
                from gpt2_dual.pt.beam import beam_search

                return beam_search(run, ids_t, mask_t)
            return decode(run, ids_t, mask_t)


class Run:
    """What one ``generate`` call shares between its steps."""

    def __init__(self, model, config: GenerationConfig, resolved: Resolved, stop, streamer,
                 generator) -> None:  # fmt: skip
        self.model, self.config, self.resolved = model, config, resolved
        self.stop, self.streamer, self.generator = stop, streamer, generator
        self.processors = build_processors(config, resolved)
        self.scores: list[torch.Tensor] | None = None
        self.logits: list[torch.Tensor] | None = None
        if config.return_dict_in_generate:
            self.scores = [] if config.output_scores else None
            self.logits = [] if config.output_logits else None
        self.static = _use_static(config, model.device)
        self.step = None
        if self.static and _auto_compile(config, model):
            self.step = compiled_step(self.model)
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


def _auto_compile(config: GenerationConfig, model: torch.nn.Module) -> bool:
    """Compile the static-cache decode step: on CUDA, unless ``disable_compile`` or the model
    is quantized (bitsandbytes layers; transformers does not compile them either)."""
    quantized = getattr(model, "is_quantized", False)
    return model.device.type == "cuda" and not config.disable_compile and not quantized


def compiled_step(model: torch.nn.Module, **compile_kwargs: Any):
    """The decode step ``(token (R, 1), mask (R, S_max), cache) -> logits (R, V)`` of ``model``
    under ``torch.compile(fullgraph=True)`` (default ``mode="reduce-overhead"``: CUDA graphs),
    made once per model and kept on it."""
    key = ("_compiled_decode", tuple(sorted(compile_kwargs.items())))
    if key not in model.__dict__:
        if "backend" not in compile_kwargs:
            compile_kwargs.setdefault("mode", "reduce-overhead")

        def step(token, mask, cache):
            out = model.transformer(
                token, attention_mask=mask, past_key_values=cache, use_cache=True
            )
            return model.lm_head(out.last_hidden_state[:, -1]).float()

        model.__dict__[key] = torch.compile(step, fullgraph=True, **compile_kwargs)
    return model.__dict__[key]


def _use_static(config: GenerationConfig, device: torch.device) -> bool:
    if config.cache_implementation is not None:
        return config.cache_implementation == "static"
    return device.type == "cuda"


def _expand(tensor: torch.Tensor | None, times: int) -> torch.Tensor | None:
    return tensor if tensor is None or times == 1 else tensor.repeat_interleave(times, 0)


def decode(run: Run, ids: torch.Tensor, mask: torch.Tensor | None):
    """Greedy decoding or sampling; see ``GenerationMixin.generate``."""
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
