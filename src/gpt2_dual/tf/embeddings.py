"""Token embeddings of the Keras models: ``get_input_embeddings``, ``set_input_embeddings``,
``get_output_embeddings``, ``resize_token_embeddings`` and ``num_parameters``, with
transformers' (PyTorch) semantics.

Shapes: V vocabulary rows, C ``n_embd``. ``wte.embeddings`` is ``(V, C)``; an untied
``lm_head`` kernel is ``(C, V)`` (Keras ``Dense``); a tied ``lm_head`` has no weight (the logits
read ``wte.embeddings``), so it follows any new ``wte`` by itself.

A Keras variable cannot change shape, so resizing builds a new ``Embedding`` (and ``Dense``)
layer and puts it in the old one's place, at the same position in Keras' layer list (weight
order, ``get_weights``, summaries stay as in a model built at the new size). Functions traced
before (``fit``'s train step, ``generate``'s programs) captured the old variables and are
dropped; an optimizer that was built holds the old ones too: compile again before ``fit``.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from typing import Any

import keras
import numpy as np

from gpt2_dual.tf.attention import dense
from gpt2_dual.tf.int8 import check_float

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingsMixin", "added_rows"]


def added_rows(
    old: np.ndarray, added: int, *, mean_resizing: bool, initializer_range: float
) -> np.ndarray:
    """``(added, C)`` float64 rows for new tokens, as transformers 4.57 initializes them.

    Args:
        old: ``(V, C)`` rows of the current matrix.
        added: number of rows to make.
        mean_resizing: True: drawn from N(mean of ``old``, 1e-9 * covariance of ``old``), or
            the mean itself when that covariance is not positive definite (transformers'
            default: new tokens barely move the next-token distribution); False: drawn from
            N(0, ``initializer_range``), the model's initialization.
        initializer_range: the config's standard deviation.
    """
    C = old.shape[1]
    if not mean_resizing:
        draw = keras.random.normal((added, C), stddev=initializer_range, dtype="float32")
        return np.asarray(draw, dtype=np.float64)
    mean = old.mean(axis=0)
    centered = old - mean
    covariance = centered.T @ centered / len(old)
    try:
        scale = np.linalg.cholesky(1e-9 * covariance)  # fails unless positive definite
    except np.linalg.LinAlgError:
        return np.repeat(mean[None, :], added, axis=0)
    noise = np.asarray(keras.random.normal((added, C), dtype="float32"), dtype=np.float64)
    return mean + noise @ scale.T


@functools.cache
def _log_mean_resizing() -> None:
    logger.warning(
        "resize_token_embeddings: new rows are drawn around the old rows' mean (transformers' "
        "mean_resizing=True, https://nlp.stanford.edu/~johnhew/vocab-expansion.html); pass "
        "mean_resizing=False for N(0, initializer_range)"
    )


def _resized(old: np.ndarray, rows: int, **init: Any) -> np.ndarray:
    """``old`` ``(V, C)`` cut or extended to ``(rows, C)``; the first rows are kept as they are."""
    if rows <= len(old):
        return old[:rows]
    return np.concatenate([old, added_rows(old, rows - len(old), **init).astype(old.dtype)])


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _build_like(old: keras.layers.Layer, new: keras.layers.Layer, input_shape: Any) -> None:
    """Build ``new`` under the name scope ``old`` was built in, so its variable paths read the
    same (``transformer/wte/embeddings``)."""
    path = old.weights[0].path if old.weights else ""
    scope = path.rsplit("/", 2)[0] if path.count("/") >= 2 else ""
    if not scope:
        new.build(input_shape)
        return
    with keras.name_scope(scope):
        new.build(input_shape)


def _swap_layer(owner: keras.layers.Layer, name: str, new: keras.layers.Layer) -> None:
    """``owner.<name> = new``, ``new`` taking the old layer's place in Keras' layer list (Keras
    would append it and keep tracking the old one)."""
    old = getattr(owner, name)
    tracker = owner._tracker
    if tracker.is_in_store("layers", old):
        tracker.replace_tracked_value("layers", old, new)
    setattr(owner, name, new)


class EmbeddingsMixin:
    """Mixed into ``GPT2PreTrainedModel``; see the module docstring."""

    def get_input_embeddings(self) -> keras.layers.Embedding:
        """The token embedding ``wte``."""
        return self._backbone().wte

    def set_input_embeddings(self, value: keras.layers.Embedding) -> None:
        """Replace ``wte`` (``(vocab_size, n_embd)``, built here if it is not); a tied
        ``lm_head`` follows it. The config is not changed (as in transformers): use
        ``resize_token_embeddings`` to change the vocabulary size.

        Raises:
            ValueError: ``value`` is not a ``keras.layers.Embedding`` of ``n_embd`` columns.
        """
        n_embd = self.config.n_embd
        if not isinstance(value, keras.layers.Embedding) or value.output_dim != n_embd:
            got = type(value).__name__
            if isinstance(value, keras.layers.Embedding):
                got += f"(input_dim={value.input_dim}, output_dim={value.output_dim})"
            raise ValueError(
                f"set_input_embeddings needs a keras.layers.Embedding with output_dim={n_embd}, "
                f"got {got}"
            )
        if not value.built:
            _build_like(self.get_input_embeddings(), value, None)
        _swap_layer(self._backbone(), "wte", value)
        self._forget_traces()

    def get_output_embeddings(self) -> keras.layers.Layer | None:
        """The layer whose weight maps hidden states to vocabulary logits: ``lm_head``, or
        ``wte`` when tied; None for heads without a language-modelling head."""
        if not hasattr(self, "lm_head"):
            return None
        return self.lm_head if self.lm_head is not None else self._backbone().wte

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> keras.layers.Embedding:
        """Give the vocabulary ``new_num_tokens`` rows, as transformers' PyTorch models do.

        Rows past the new size are dropped; new rows are appended (``added_rows``). An untied
        ``lm_head`` is resized the same way; a tied one follows ``wte``. ``config.vocab_size``
        becomes the new size (this model's config is updated in place, as in transformers; a
        config shared with another model changes for it too). Compile again before ``fit``.

        Args:
            new_num_tokens: the new vocabulary size; None keeps it (with ``pad_to_multiple_of``:
                pads the current size).
            pad_to_multiple_of: round the size up to a multiple of this.
            mean_resizing: initialize new rows around the mean of the old ones (transformers'
                default), else from N(0, ``initializer_range``).

        Returns:
            The token embedding layer ``wte`` (a new layer when the size changed).

        Raises:
            ValueError: ``new_num_tokens`` or ``pad_to_multiple_of`` is not a positive integer.
            QuantizedModelError: the model is quantized (resize the float model, then quantize).

        Example:
            >>> model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)  # doctest: +SKIP
        """
        check_float(self, "resize_token_embeddings", hint="resize the float model, then quantize()")
        wte = self.get_input_embeddings()
        if new_num_tokens is not None:
            new_num_tokens = _positive("new_num_tokens", new_num_tokens)
        if pad_to_multiple_of is not None:
            multiple = _positive("pad_to_multiple_of", pad_to_multiple_of)
            rows = wte.input_dim if new_num_tokens is None else new_num_tokens
            new_num_tokens = -(-rows // multiple) * multiple
        if new_num_tokens is None or new_num_tokens == wte.input_dim:
            return wte
        rows = new_num_tokens
        if mean_resizing and rows > wte.input_dim:
            _log_mean_resizing()
        init = dict(mean_resizing=mean_resizing, initializer_range=self.config.initializer_range)
        old = np.asarray(keras.ops.convert_to_numpy(wte.embeddings))
        new = keras.layers.Embedding(
            rows, wte.output_dim, embeddings_initializer=wte.embeddings_initializer,
            dtype=wte.dtype_policy, name=wte.name,
        )  # fmt: skip
        _build_like(wte, new, None)
        new.embeddings.assign(_resized(old, rows, **init))
        new.trainable = wte.trainable
        _swap_layer(self._backbone(), "wte", new)
        if getattr(self, "lm_head", None) is not None:
            self._resize_lm_head(rows, init)
        self._set_vocab_size(rows)
        self._forget_traces()
        logger.info("resized the vocabulary of %s to %d tokens", type(self).__name__, rows)
        return new

    def _resize_lm_head(self, rows: int, init: dict[str, Any]) -> None:
        old_head = self.lm_head
        kernel = np.asarray(keras.ops.convert_to_numpy(old_head.kernel))  # (C, V)
        head = dense(rows, self.config.initializer_range, self, name=old_head.name, bias=False)
        _build_like(old_head, head, (None, kernel.shape[0]))
        head.kernel.assign(_resized(kernel.T, rows, **init).T)
        head.trainable = old_head.trainable
        _swap_layer(self, "lm_head", head)

    def _set_vocab_size(self, rows: int) -> None:
        """``config.vocab_size = rows`` on the locked config: this model has just reshaped its
        own weights to match."""
        with self.config.shapes_unlocked():
            self.config.vocab_size = rows  # validated as any assignment

    def _forget_traces(self) -> None:
        """Drop functions traced over the old variables (Keras' step functions, ``generate``)."""
        from gpt2_dual.tf.generate import compiled_programs

        compiled_programs(self).clear()
        self.train_function = self.test_function = self.predict_function = None
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and optimizer.built:
            logger.warning(
                "%s changed its embedding variables after its optimizer was built; compile it "
                "again before fit",
                type(self).__name__,
            )

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of parameters (shared ones counted once), as the PyTorch models count them.

        Args:
            only_trainable: count only trainable weights.
            exclude_embeddings: leave out the embedding weights (``wte``, ``wpe``), as
                transformers does.
        """
        backbone = self._backbone()
        skip = set()
        if exclude_embeddings:
            skip = {id(v) for layer in (backbone.wte, backbone.wpe) for v in layer.weights}
        variables = self.trainable_weights if only_trainable else self.weights
        counted: dict[int, int] = {}
        for v in variables:
            if id(v) not in skip:
                counted[id(v)] = math.prod(v.shape)
        return sum(counted.values())
