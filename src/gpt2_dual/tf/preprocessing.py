"""Tokenization inside ``tf.data``: raw strings in, packed GPT-2 model inputs out.

Shapes: B batch, T ``sequence_length``.

``GPT2Preprocessor`` and ``GPT2CausalLMPreprocessor`` are Keras layers with KerasHub's names,
options and packing (``keras_hub.models.GPT2Preprocessor`` / ``GPT2CausalLMPreprocessor``), on
our tokenizer, so the ids are those of ``GPT2TokenizerFast`` and ``GPT2Tokenizer``. Each takes
a string (scalar: outputs (T,)) or a batch of strings ((B,): outputs (B, T)) as a Python
value, a numpy array or a ``tf.string`` tensor, eagerly or in ``dataset.map(...)``, and packs
KerasHub's way: ``<|endoftext|>`` first (``add_start_token``) and last (``add_end_token``), the
text's ids cut to fit in between, then padding on the right to exactly T.

- **Truncation is silent**, as in KerasHub: a text longer than ``sequence_length`` minus the
  start/end tokens loses its tail (its head when the tokenizer's ``truncation_side`` is
  "left"), and the end token is still added. Nothing warns; count tokens first
  (``tokenizer(texts)``) if losing text matters.
- **Names**: the inputs are ``{"input_ids", "attention_mask"}`` (our models' names; KerasHub
  calls them ``token_ids`` and ``padding_mask``), int32; the mask is 1 on real tokens (start
  and end included) and 0 on padding. Padding uses ``pad_token_id`` (default: the
  tokenizer's pad token, else 0 as KerasHub, which pads with id 0); the mask is what counts.

Training ``GPT2LMHeadModel`` on raw text (see ``gpt2_dual.tf.training``)::

    pre = GPT2CausalLMPreprocessor("gpt2", sequence_length=128)      # (x, y, sample_weight)
    model.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(texts.batch(8).map(pre, num_parallel_calls=tf.data.AUTOTUNE))

    pre = GPT2Preprocessor("gpt2", sequence_length=128, return_labels=True)   # own loss
    model.compile(optimizer)          # labels in x: -100 on padding, shifted by the model
    model.fit(texts.batch(8).map(pre))

With the causal-LM preprocessor y is ``input_ids`` shifted left by one (the token after each
position) and ``sample_weight`` the mask shifted the same way (float32), as KerasHub makes
them: T + 1 tokens are packed and split. With ``return_labels=True`` the labels are unshifted
``input_ids`` with -100 on padding, transformers' layout; the model shifts them. Both score
the same tokens.

The tokenizer and its boundary
------------------------------
The tokenizer runs as Python (``tf.numpy_function`` around ``GPT2TokenizerFast``, or the
pure ``GPT2Tokenizer`` when given one): it works in ``tf.data`` (in parallel ``map`` calls,
eagerly, in ``tf.function``), but it is **not part of any graph that leaves the process**:
a SavedModel or ``.keras`` export of a model does not contain it, it cannot run under XLA
(``jit_compile``; no string op can), on TPU hosts without Python, or in TF Serving/TFLite.
Tokenize on the host in ``tf.data`` and feed ids to the model, which is the usual split.

Why not BPE in TensorFlow ops (no tensorflow-text)? Investigated, not done. It needs (1)
GPT-2's pre-tokenizing regex, whose ``\\s+(?!\\S)`` lookahead RE2 (``tf.strings``) cannot
express, so the split must be emulated in two passes with ``tf.strings.regex_replace``
inserting delimiters and ``tf.strings.split``, with edge cases on whitespace runs; (2) the
byte-to-unicode map, via ``tf.strings.bytes_split`` and a ``tf.lookup.StaticHashTable``; (3)
the merge loop: a ``tf.while_loop`` over ragged words that looks up every adjacent pair's rank
in a 50,000-entry table and merges the lowest, until none is left, plus a mutable word cache
for speed. KerasHub's ``BytePairTokenizer`` does this with tensorflow-text in about 600
lines. Cost for us: a third BPE implementation (~400-600 lines) that must be proven
id-identical to the two we have, slower than the Rust tokenizer in ``tf.data``, and still not
XLA-compilable (strings are not); the only gain is raw-string SavedModel serving.

Saving: ``get_config`` stores the tokenizer **by path** (its ``name_or_path``, as given to
``from_pretrained``: ``"gpt2"`` loads the bundled vocabulary offline), its class and
``add_prefix_space``, never the 1.5 MB vocabulary. A tokenizer built from files in memory, or
given tokens after loading, must be saved first (``tokenizer.save_pretrained(folder)``) and
loaded from that folder; ``get_config`` refuses a tokenizer without a path, and
``from_config`` refuses one whose reloaded size differs.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gpt2_dual.tf.losses import IGNORE_INDEX
from gpt2_dual.tokenizer.base import GPT2TokenizerBase
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer

__all__ = ["GPT2CausalLMPreprocessor", "GPT2Preprocessor"]

logger = logging.getLogger(__name__)

_TOKENIZER_CLASSES = {cls.__name__: cls for cls in (GPT2TokenizerFast, GPT2Tokenizer)}


def _load_tokenizer(tokenizer: Any) -> GPT2TokenizerBase:
    if isinstance(tokenizer, GPT2TokenizerBase):
        return tokenizer
    if isinstance(tokenizer, str | os.PathLike):
        return GPT2TokenizerFast.from_pretrained(tokenizer)
    raise TypeError(
        "tokenizer must be a GPT2TokenizerFast / GPT2Tokenizer or a path or Hub repo id "
        f'("gpt2"), got {type(tokenizer).__name__}'
    )


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2Preprocessor(keras.layers.Layer):
    """Strings to ``{"input_ids", "attention_mask"}``, packed to ``sequence_length`` (KerasHub's
    ``GPT2Preprocessor``, with our names; the module docstring has the packing rules).

    Args:
        tokenizer: a ``GPT2TokenizerFast``/``GPT2Tokenizer``, or a folder or Hub repo id
            loaded with ``GPT2TokenizerFast.from_pretrained`` (``"gpt2"``: bundled, offline).
        sequence_length: T, the length of every output row.
        add_start_token: put ``<|endoftext|>`` (``bos_token``) first.
        add_end_token: put ``<|endoftext|>`` (``eos_token``) last (after truncation).
        pad_token_id: id of the padding; None: the tokenizer's pad token, else 0 (KerasHub's).
        return_labels: also return ``labels`` in x: ``input_ids`` with -100 on padding, for
            ``compile(optimizer)`` and the model's own loss.
        **kwargs: Keras layer keywords (``name``).

    Call args:
        x: a string (outputs (T,)) or strings (B,) (outputs (B, T)): Python, numpy or
            ``tf.string``.
        y, sample_weight: passed through (``keras.utils.pack_x_y_sample_weight``).
        sequence_length: overrides the layer's for this call.

    Returns:
        ``x`` (a dict of int32 tensors), or ``(x, y)`` / ``(x, y, sample_weight)`` when given.

    Example:
        >>> pre = GPT2Preprocessor("gpt2", sequence_length=6)
        >>> pre("Hello world")["input_ids"].numpy().tolist()
        [50256, 15496, 995, 50256, 0, 0]
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        sequence_length: int = 1024,
        add_start_token: bool = True,
        add_end_token: bool = True,
        pad_token_id: int | None = None,
        return_labels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Strings and Python lists go to ``call`` as they are (KerasHub's preprocessing layers).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.tokenizer = _load_tokenizer(tokenizer)
        self.sequence_length = _check_length(sequence_length)
        self.add_start_token = bool(add_start_token)
        self.add_end_token = bool(add_end_token)
        if pad_token_id is None:
            pad_token_id = self.tokenizer.pad_token_id
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.return_labels = bool(return_labels)
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise ValueError(f"the tokenizer has no {name[:3]} token to pack with")
        self.built = True

    # ----- packing ------------------------------------------------------------------------

    def _pack(self, texts: Any, length: int) -> tuple[tf.Tensor, tf.Tensor]:
        """``(input_ids, attention_mask)``, each (T,) for a scalar string, (B, T) for (B,)."""
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        rank = texts.shape.rank
        if rank not in (0, 1):
            raise ValueError(
                f"expected a string or a batch of strings (rank 0 or 1), got shape {texts.shape}"
            )
        batch = tf.reshape(texts, [-1])
        ids, mask = tf.numpy_function(
            functools.partial(self._pack_numpy, length=length),
            [batch],
            [tf.int32, tf.int32],
            stateful=False,
            name="gpt2_tokenize_and_pack",
        )
        rows = batch.shape[0]
        ids.set_shape([rows, length])
        mask.set_shape([rows, length])
        if rank == 0:
            ids, mask = ids[0], mask[0]
        return ids, mask

    def _pack_numpy(self, texts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize (B,) UTF-8 byte strings (invalid bytes become U+FFFD) and pack them into
        int32 ids and mask, (B, T) each."""
        tok = self.tokenizer
        start = [tok.bos_token_id] if self.add_start_token else []
        end = [tok.eos_token_id] if self.add_end_token else []
        keep = length - len(start) - len(end)
        strings = [t.decode("utf-8", errors="replace") for t in texts.tolist()]
        if keep > 0 and strings:
            encoded = tok(
                strings,
                add_special_tokens=False,
                truncation=True,
                max_length=keep,
                return_attention_mask=False,
            )["input_ids"]
        else:
            encoded = [[] for _ in strings]
        ids = np.full((len(strings), length), self.pad_token_id, np.int32)
        mask = np.zeros((len(strings), length), np.int32)
        for row, text_ids in enumerate(encoded):
            packed = (start + text_ids[: max(keep, 0)] + end)[:length]
            ids[row, : len(packed)] = packed
            mask[row, : len(packed)] = 1
        return ids, mask

    def call(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        sequence_length: int | None = None,
    ) -> Any:
        length = _check_length(sequence_length or self.sequence_length)
        ids, mask = self._pack(x, length)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.return_labels:
            inputs["labels"] = tf.where(mask == 1, ids, tf.constant(IGNORE_INDEX, tf.int32))
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} maps strings in tf.data or eagerly; it is not a layer of a "
            "functional model"
        )

    # ----- config -------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The layer's options and the tokenizer by path (module docstring, "Saving").

        Raises:
            ValueError: the tokenizer has no ``name_or_path`` (built from files in memory).
        """
        config = super().get_config()
        tok = self.tokenizer
        if not tok.name_or_path:
            raise ValueError(
                "the tokenizer has no name_or_path, so the config cannot name it: save it with "
                "tokenizer.save_pretrained(folder) and pass "
                "GPT2TokenizerFast.from_pretrained(folder) (or the folder) to the preprocessor"
            )
        config.update(
            tokenizer={
                "class_name": type(tok).__name__,
                "name_or_path": tok.name_or_path,
                "add_prefix_space": tok.add_prefix_space,
                "size": len(tok),
            },
            sequence_length=self.sequence_length,
            add_start_token=self.add_start_token,
            add_end_token=self.add_end_token,
            pad_token_id=self.pad_token_id,
            return_labels=self.return_labels,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT2Preprocessor:
        """Rebuild from ``get_config``, reloading the tokenizer from its path.

        Raises:
            ValueError: the reloaded tokenizer's size (``len``) differs from the saved one's
                (tokens were added after loading and not saved).
        """
        config = dict(config)
        spec = dict(config.pop("tokenizer"))
        tok_cls = _TOKENIZER_CLASSES[spec["class_name"]]
        tokenizer = tok_cls.from_pretrained(
            spec["name_or_path"], add_prefix_space=spec["add_prefix_space"]
        )
        if len(tokenizer) != spec["size"]:
            raise ValueError(
                f"the tokenizer reloaded from {spec['name_or_path']!r} has {len(tokenizer)} "
                f"tokens, the saved one had {spec['size']}: save the changed tokenizer with "
                "save_pretrained and build the preprocessor from that folder"
            )
        return cls(tokenizer, **config)


@keras.saving.register_keras_serializable(package="gpt2_dual")
class GPT2CausalLMPreprocessor(GPT2Preprocessor):
    """Strings to ``(x, y, sample_weight)`` for ``fit`` with a Keras loss on ``logits``
    (KerasHub's ``GPT2CausalLMPreprocessor``): T + 1 tokens are packed, then

    - x: ``{"input_ids": ids[..., :-1], "attention_mask": mask[..., :-1]}``, int32 (B, T);
    - y: ``ids[..., 1:]``, int32 (B, T), the token after each position;
    - sample_weight: ``mask[..., 1:]``, float32 (B, T), 0 where y is padding.

    Args and call args as ``GPT2Preprocessor`` (without ``return_labels``); ``y`` and
    ``sample_weight`` must not be given (ValueError): the layer makes them.

    Example:
        >>> pre = GPT2CausalLMPreprocessor("gpt2", sequence_length=4)
        >>> x, y, w = pre(["Hello world"])
        >>> x["input_ids"].numpy().tolist(), y.numpy().tolist(), w.numpy().tolist()
        ([[50256, 15496, 995, 50256]], [[15496, 995, 50256, 0]], [[1.0, 1.0, 1.0, 0.0]])
    """

    def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
        if kwargs.pop("return_labels", False):
            raise ValueError(
                "GPT2CausalLMPreprocessor returns y itself; use GPT2Preprocessor(return_labels="
                "True) for the model's own loss"
            )
        super().__init__(tokenizer, **kwargs)

    def call(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        sequence_length: int | None = None,
    ) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        if y is not None or sample_weight is not None:
            raise ValueError(
                "GPT2CausalLMPreprocessor makes y and sample_weight from the text; map it over "
                "a dataset of strings only"
            )
        length = _check_length(sequence_length or self.sequence_length)
        ids, mask = self._pack(x, length + 1)
        inputs = {"input_ids": ids[..., :-1], "attention_mask": mask[..., :-1]}
        return inputs, ids[..., 1:], tf.cast(mask[..., 1:], tf.float32)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["return_labels"]
        return config


def _check_length(length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise ValueError(f"sequence_length must be a positive int, got {length!r}")
    return int(length)
