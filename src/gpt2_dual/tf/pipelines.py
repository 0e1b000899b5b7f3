"""The Keras / TensorFlow side of ``gpt2_dual.pipeline``: load, place, one forward pass,
``generate``.

``gpt2_dual.pt.pipelines`` has the same functions; the pipelines themselves are neutral
(``gpt2_dual.pipelines.base``) and pass numpy arrays in and get numpy arrays back. A device runs
the calls under ``tf.device``; a dtype is a Keras dtype policy, set when the model is loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import gpt2_dual.tf as gpt

__all__ = ["device_scope", "forward", "generate", "load", "place"]

_OUTPUTS = ("logits", "start_logits", "end_logits")


def tf_device(device: Any) -> str | None:
    """``device`` as a TensorFlow device name: -1 / "cpu" -> "/CPU:0", k / "cuda:k" /
    "gpu:k" -> "/GPU:k"; None stays None (TensorFlow's own placement).

    Raises:
        ValueError: another value, or a GPU this machine does not have.
    """
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        kind, index = ("CPU", 0) if device < 0 else ("GPU", device)
    else:
        match = re.fullmatch(r"(cpu|cuda|gpu)(?::(\d+))?", str(device).lower())
        if match is None or not isinstance(device, str):
            raise ValueError(
                f"device must be an int, 'cpu', 'gpu', 'gpu:N', 'cuda' or 'cuda:N' for the tf "
                f"framework; got {device!r}"
            )
        kind = "CPU" if match[1] == "cpu" else "GPU"
        index = int(match[2] or 0)
    if kind == "GPU" and index >= len(tf.config.list_logical_devices("GPU")):
        raise ValueError(
            f"device={device!r}: TensorFlow sees {len(tf.config.list_logical_devices('GPU'))} "
            "GPU(s) on this machine"
        )
    return f"/{kind}:{index}"


def load(
    class_name: str,
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    device: Any = None,
    **kwargs: Any,
) -> keras.Model:
    """``class_name.from_pretrained(path, dtype=dtype)``, built under ``device``.

    Raises:
        ValueError: ``dtype`` is not a floating Keras dtype policy or its name.
    """
    name = tf_device(device)
    with tf.device(name) if name else contextlib.nullcontext():
        return getattr(gpt, class_name).from_pretrained(path, dtype=dtype, **kwargs)


def place(model: keras.Model, *, dtype: Any = None, device: Any = None) -> keras.Model:
    """A built Keras model as it is (the calls run under ``device``, see ``device_scope``).

    Raises:
        ValueError: a ``dtype`` (a built model keeps its dtype policy).
    """
    tf_device(device)
    if dtype is not None:
        raise ValueError(
            "dtype= cannot change a built Keras model's dtype policy; load it with "
            "from_pretrained(..., dtype=...) or pass the checkpoint folder as model="
        )
    return model


def device_scope(device: Any) -> Callable[[], contextlib.AbstractContextManager]:
    """A context-manager factory that runs calls on ``device`` (nothing for None)."""
    name = tf_device(device)
    if name is None:
        return contextlib.nullcontext
    return lambda: tf.device(name)


def forward(
    model: keras.Model, input_ids: np.ndarray, attention_mask: np.ndarray
) -> dict[str, np.ndarray]:
    """The model on ``(B, T)`` ids and mask; its logits fields as float32 numpy arrays."""
    out = model(
        {"input_ids": tf.constant(input_ids), "attention_mask": tf.constant(attention_mask)},
        training=False,
    )
    return {
        name: tf.cast(out[name], tf.float32).numpy()
        for name in _OUTPUTS
        if out.get(name) is not None
    }


def generate(
    model: keras.Model, input_ids: np.ndarray, attention_mask: np.ndarray, **kwargs: Any
) -> np.ndarray:
    """``model.generate`` on a numpy prompt; the ``(R, T + n)`` ids as int64 numpy."""
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    out = getattr(out, "sequences", out)
    return np.asarray(out).astype(np.int64)
