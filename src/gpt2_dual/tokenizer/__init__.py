"""GPT-2's byte-level BPE tokenizer, twice with identical ids: pure Python and on `tokenizers`.

- ``base``: ``GPT2TokenizerBase``, transformers' tokenizer API shared by both classes, put
  together from ``calls`` (``__call__``, ``encode``, ``pad``, ``decode``), ``vocab`` (the
  vocabulary, added tokens and decoding) and ``special`` (special tokens);
- ``slow``: ``GPT2Tokenizer``, the pure-Python byte-level BPE;
- ``fast``: ``GPT2TokenizerFast``, on the `tokenizers` library;
- ``encoding``: ``BatchEncoding`` and the padding/truncation rules;
- ``files``: reading and writing ``vocab.json``, ``merges.txt``, ``tokenizer.json`` and the
  tokenizer's config files.
"""

from gpt2_dual.tokenizer.base import GPT2TokenizerBase
from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer

__all__ = ["BatchEncoding", "GPT2Tokenizer", "GPT2TokenizerBase", "GPT2TokenizerFast"]
