"""GPT-2's byte-level BPE tokenizer, twice with identical ids: pure Python and on `tokenizers`.

- ``base``: ``GPT2TokenizerBase``, transformers' tokenizer API shared by both classes
  (``__call__``, ``tokenize``), put together from ``calls`` (``encode``, ``encode_plus``,
  ``pad``), ``vocab`` (the vocabulary, added tokens and decoding), ``special`` (special
  tokens), ``chat`` (chat templates) and ``pretrained`` (``from_pretrained``,
  ``save_pretrained``);
- ``slow``: ``GPT2Tokenizer``, the pure-Python byte-level BPE;
- ``fast``: ``GPT2TokenizerFast``, on the `tokenizers` library;
- ``encoding``: ``BatchEncoding`` and the padding/truncation rules;
- ``pairs``: text pairs, truncation and the rows of a call (BOS, token type ids);
- ``files`` and ``writing``: reading and writing ``vocab.json``, ``merges.txt``,
  ``tokenizer.json`` and the tokenizer's config files.
"""

from gpt2_dual.tokenizer.base import GPT2TokenizerBase
from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer

__all__ = ["BatchEncoding", "GPT2Tokenizer", "GPT2TokenizerBase", "GPT2TokenizerFast"]
