"""``generate`` for the PyTorch LM heads: greedy, sampling and beam search over a KV cache; and
the compiled decode step.

Shapes: B prompts, R = B x num_return_sequences rows (B x num_beams in beam search), T prompt
tokens, N new tokens, V vocabulary.

The options, their validation and their meaning are shared with ``gpt2_dual.tf``
(``gpt2_dual.GenerationConfig``; ``gpt2_dual.generation.checks`` checks the config and the
prompt before any model work). The numbers follow transformers' ``generate``: the same logits
processors in the same order (``processors.py``), the same vectorized beam search
(``beam.py``), the same padding of finished rows. Greedy decoding and sampling are the loop in
``decode.py``; this module checks the call, chooses the cache and the decode step, and starts
the loop. Each step runs the backbone on the newest token only and the LM head on its last
position.

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
from gpt2_dual.generation.config import GenerationConfig, HasGenerationConfig
from gpt2_dual.outputs import GenerateOutput
from gpt2_dual.pt.beam import beam_search
from gpt2_dual.pt.decode import Run, decode
from gpt2_dual.pt.packing import packed_weights

__all__ = ["GenerationMixin", "compiled_step"]


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
        static = _use_static(config, device)
        step = compiled_step(self) if static and _auto_compile(config, self) else None
        run = Run(self, config, resolved, stop, streamer, generator, static=static, step=step)
        ids_t = torch.as_tensor(ids, device=device)
        mask_t = None if mask is None else torch.as_tensor(mask, device=device)
        rows = ids_t.shape[0] * max(config.num_beams, config.num_return_sequences)
        with packed_weights(self.modules(), rows, keep_on=self):  # CPU decoding: pt/packing.py
            if resolved.mode.startswith("beam"):
                return beam_search(run, ids_t, mask_t)
            return decode(run, ids_t, mask_t)


def _use_static(config: GenerationConfig, device: torch.device) -> bool:
    if config.cache_implementation is not None:
        return config.cache_implementation == "static"
    return device.type == "cuda"


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
