"""The "text-generation" pipeline: continue prompts with ``GPT2LMHeadModel.generate``.

Options, defaults and outputs follow transformers' ``TextGenerationPipeline``. The decoding
options start from transformers' pipeline defaults (``max_new_tokens=256``, ``do_sample=True``,
``temperature=0.7``), then the model's own ``generation_config`` (its fields that differ from
``GenerationConfig()``'s), then the config's ``task_specific_params["text-generation"]``, then
the options given to ``pipeline(...)`` and to the call.

Prompts are batched ``batch_size`` at a time, left-padded with the tokenizer's pad token (its
EOS when it has none); the tokenizer itself is not changed. Shapes: B prompts in a batch,
R = B x ``num_return_sequences`` rows, T padded prompt tokens, n new tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpt2_dual.generation.config import DEFAULTS, GenerationConfig
from gpt2_dual.pipelines.base import Pipeline, batches, pad

__all__ = ["PIPELINE_DEFAULTS", "TextGenerationPipeline", "pipeline_generation_config"]

#: transformers' ``TextGenerationPipeline._default_generation_config``.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}

#: call options handled by the pipeline; every other option goes to ``generate``.
PIPELINE_OPTIONS = (
    "return_full_text",
    "return_tensors",
    "return_text",
    "clean_up_tokenization_spaces",
    "skip_special_tokens",
    "prefix",
    "stop_sequence",
    "add_special_tokens",
)
#: ``generate`` keywords besides the ``GenerationConfig`` fields.
GENERATE_ARGUMENTS = ("generation_config", "streamer", "seed", "generator")


def pipeline_generation_config(model: Any, tokenizer: Any) -> tuple[GenerationConfig, str]:
    """The pipeline's decoding options for ``model`` and the ``prefix`` put before prompts.

    Returns:
        ``(config, prefix)``; see the module docstring for the order of precedence.
    """
    own = getattr(model, "generation_config", None)
    own = (
        own
        if isinstance(own, GenerationConfig)
        else GenerationConfig.from_model_config(model.config)
    )
    config = GenerationConfig(**PIPELINE_DEFAULTS).update(**own.to_diff_dict())
    if (
        config.max_new_tokens == PIPELINE_DEFAULTS["max_new_tokens"]
        and config.max_length != DEFAULTS["max_length"]
    ):
        config.max_new_tokens = None  # the model asks for a max_length: honour it
    prefix = getattr(model.config, "prefix", None) or ""
    task_params = getattr(model.config, "task_specific_params", None) or {}
    params = dict(task_params.get("text-generation") or {})
    prefix = params.pop("prefix", prefix) or ""
    config.update(**params)
    if tokenizer.pad_token_id is not None and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config, prefix


class TextGenerationPipeline(Pipeline):
    """Continue text with ``GPT2LMHeadModel.generate`` (transformers' pipeline).

    A prompt gives ``[{"generated_text": str}, ...]`` (``num_return_sequences`` dicts); a list
    of prompts gives a list of those lists.

    Call options:
        return_full_text: prompt + continuation (default True) or the continuation only.
        return_tensors: give ``{"generated_token_ids": list[int]}`` (the whole padded row).
        clean_up_tokenization_spaces: decoding option (default True, as transformers).
        skip_special_tokens: decoding option (default True).
        prefix: text put before each prompt for the model, left out of the returned text.
        stop_sequence: text whose first token ends generation (as ``eos_token_id``).
        add_special_tokens: encode prompts with the tokenizer's BOS (default False).
        batch_size: prompts per ``generate`` call (left-padded).
        anything else: ``generate`` keywords (``max_new_tokens``, ``do_sample``, ``top_p``,
            ``num_return_sequences``, ``num_beams``, ``seed``, ``streamer``, ...).

    Attributes:
        generation_config: the pipeline's decoding options (``pipeline_generation_config``).

    Example:
        >>> gen("Hello, I'm a language model,", max_new_tokens=5, do_sample=False)  # doctest: +SKIP
        [{'generated_text': "Hello, I'm a language model, and I'm not"}]
    """

    task = "text-generation"
    options = PIPELINE_OPTIONS + GENERATE_ARGUMENTS + tuple(DEFAULTS)

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        self.generation_config, self.prefix = pipeline_generation_config(model, tokenizer)
        super().__init__(model, tokenizer, **kwargs)

    def __call__(self, text_inputs: str | list[str], **kwargs: Any) -> list[Any]:
        """Continue a prompt ``str`` or prompts ``list[str]``; see the class docstring."""
        params = self._options(kwargs)
        single = isinstance(text_inputs, str)
        prompts = [text_inputs] if single else text_inputs
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(
                "text-generation takes a prompt or a list of prompts (str); chat messages are "
                f"not supported; got {text_inputs!r}"
            )
        post = {k: params.pop(k) for k in PIPELINE_OPTIONS if k in params}
        size = params.pop("batch_size")
        prefix = post.get("prefix", self.prefix) or ""
        gen = {"generation_config": self.generation_config, **params}
        if post.get("stop_sequence") is not None:
            gen["eos_token_id"] = self.tokenizer.encode(post["stop_sequence"])
        results = []
        for batch in batches(list(prompts), size):
            rows = [self._encode(prefix + p, post) for p in batch]
            ids, mask = pad(rows, self._pad_id(), "left")
            with self._scope():
                out = self._backend.generate(self.model, ids, mask, **gen)  # (R, T + n)
            out = out.reshape(len(batch), out.shape[0] // len(batch), -1)
            for prompt, row, sequences in zip(batch, rows, out, strict=True):
                results.append([self._record(prompt, row, s, post) for s in sequences])
        return results[0] if single else results

    def _encode(self, text: str, post: dict[str, Any]) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=post.get("add_special_tokens", False))
        ids = ids["input_ids"]
        if not ids:  # an empty prompt: start from BOS, as transformers' generate does
            bos = self.generation_config.bos_token_id
            ids = [self.tokenizer.bos_token_id if bos is None else bos]
        return ids

    def _pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, self.generation_config.pad_token_id):
            if isinstance(value, int):
                return value
        return self.tokenizer.eos_token_id or 0

    def _record(
        self, prompt: str, prompt_ids: list[int], sequence: np.ndarray, post: dict[str, Any]
    ) -> dict[str, Any]:
        if post.get("return_tensors"):
            if post.get("return_full_text") is not None or post.get("return_text"):
                raise ValueError("return_tensors is mutually exclusive with return_(full_)text")
            return {"generated_token_ids": sequence.tolist()}
        decode = {
            "skip_special_tokens": post.get("skip_special_tokens", True),
            "clean_up_tokenization_spaces": post.get("clean_up_tokenization_spaces", True),
        }
        text = self.tokenizer.decode(sequence, **decode)
        new = text[len(self.tokenizer.decode(prompt_ids, **decode)) :]
        full = post.get("return_full_text", True)
        return {"generated_text": prompt + new if full else new}
