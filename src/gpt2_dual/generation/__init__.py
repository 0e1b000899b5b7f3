"""Generation, neutral part: what both frameworks' ``generate`` share.

- ``config``: ``GenerationConfig`` (transformers' fields, defaults and JSON);
- ``checks``: validating a config and a prompt, and merging ``generate``'s keywords into the
  model's config;
- ``stopping``: stop strings (transformers' ``StopStringCriteria`` semantics);
- ``streamers``: ``TextStreamer`` and ``TextIteratorStreamer``.

The decode loops are per framework: ``gpt2_dual.pt.generate`` and ``gpt2_dual.tf.generate``.
"""

from gpt2_dual.generation.config import GenerationConfig
from gpt2_dual.generation.streamers import BaseStreamer, TextIteratorStreamer, TextStreamer

__all__ = ["BaseStreamer", "GenerationConfig", "TextIteratorStreamer", "TextStreamer"]
