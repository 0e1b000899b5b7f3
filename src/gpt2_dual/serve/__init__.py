"""Serving: continuous batching behind an OpenAI-compatible HTTP API (``gpt2-dual serve``).

Layers, lowest first:

- ``params`` (``SamplingParams``, vLLM's names and limits), ``sampler`` (numpy token choice,
  logprobs) and ``text`` (incremental detokenization, stop strings): neutral;
- ``scheduler``: the queue, the cache slots and the step loop, over a framework's
  ``SlotDecoder`` (``gpt2_dual.pt.slots``, ``gpt2_dual.tf.slots``);
- ``engine``: ``Engine``, a model + tokenizer + scheduler; offline ``generate`` and the
  thread-safe ``submit`` the server uses;
- ``protocol`` (OpenAI request and response bodies), ``metrics`` (Prometheus text), ``app``
  (the Starlette routes) and ``server`` (uvicorn, graceful shutdown): the HTTP side, which
  needs the ``serve`` extra (``pip install 'gpt2_dual[serve]'``).

Example:
    >>> from gpt2_dual.serve import Engine, SamplingParams
    >>> engine = Engine.from_pretrained("path/to/gpt2")  # doctest: +SKIP
    >>> out = engine.generate(["Hello"], SamplingParams(max_tokens=5))  # doctest: +SKIP
    >>> out[0].outputs[0].text  # doctest: +SKIP
"""

from gpt2_dual.serve.engine import CompletionOutput, Engine, Handle, RequestOutput
from gpt2_dual.serve.params import SamplingParams
from gpt2_dual.serve.sampler import TokenLogprob
from gpt2_dual.serve.scheduler import Event, Stats

__all__ = [
    "CompletionOutput", "Engine", "Event", "Handle", "RequestOutput", "SamplingParams", "Stats",
    "TokenLogprob",
]  # fmt: skip
