"""The TensorFlow / Keras adapter of ``frameworks.py``: gpt2_dual.tf through numpy.

Same calls as ``frameworks.PT`` (``build``, ``call``, ``run``, ``new_cache``,
``cache_arrays``). A Keras model returns a ``ModelOutputDict`` (a dict with attribute access,
what Keras and ``tf.nest`` need); ``call`` hands it back as the head's ``gpt2_dual.outputs``
dataclass through its lossless ``to_output()``, so type and field checks read the same on both
sides.

TensorFlow has one attention implementation, so ``attn_implementation`` picks how the forward
runs: ``"eager"`` op by op; ``"sdpa"`` (each framework's fused, fast path) through
``tf.function(jit_compile=True)``, XLA, when ``GPT2_DUAL_TF_XLA=1``, and is skipped otherwise
(XLA compiles take seconds each). Tests marked ``xla_every_run`` (``tests/conftest.py``), one
reference case per feature family, see the variable set in every run;
``tests/tf/test_models_tf.py`` covers XLA on a chosen set too.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import numpy as np
import pytest

from gpt2_dual.checkpoint.names import BACKBONE_ATTR, is_backbone, params
from gpt2_dual.heads import HEAD_SPECS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no oneDNN/CUDA banners in test logs

_OPAQUE = ("past_key_values",)
TF_MODES = {"eager": False, "sdpa": True}  # attn_implementation -> jit_compile
_XLA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> compiled calls


class TF:
    """gpt2_dual.tf through numpy."""

    name = "tf"

    @staticmethod
    def build(head: str, config, state: dict[str, np.ndarray] | None = None, **kwargs) -> Any:
        import gpt2_dual.tf as gtf

        mode = kwargs.pop("attn_implementation", "eager")
        if mode not in TF_MODES:
            raise ValueError(f"attn_implementation={mode!r}: the TF adapter knows {TF_MODES}")
        if TF_MODES[mode] and os.environ.get("GPT2_DUAL_TF_XLA") != "1":
            pytest.skip("TF runs one attention implementation ('eager'); XLA: GPT2_DUAL_TF_XLA=1")
        model = getattr(gtf, HEAD_SPECS[head].class_name)(config, **kwargs)
        if state is not None:
            load_canonical_tf(model, state)
        if TF_MODES[mode]:
            _XLA[model] = {}
        return model

    @staticmethod
    def call(model, **inputs) -> Any:
        """The model's outputs for numpy inputs, as the head's ``gpt2_dual.outputs`` type."""
        return (_xla_call(model, inputs) if model in _XLA else model(**inputs)).to_output()

    @staticmethod
    def run(model, **inputs) -> dict[str, Any]:
        out = _xla_call(model, inputs) if model in _XLA else model(**inputs)
        return {k: (v if k in _OPAQUE else _to_numpy(v)) for k, v in out.items()}

    @staticmethod
    def new_cache(model, kind: str, batch_size: int, max_length: int) -> Any:
        from gpt2_dual.tf import StaticCache

        if kind == "dynamic":
            return None
        return StaticCache(model.config, batch_size, max_length, dtype=model.compute_dtype)

    @staticmethod
    def cache_arrays(cache) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(_to_numpy(k), _to_numpy(v)) for k, v in cache]

    @staticmethod
    def load(head: str, folder) -> Any:
        import gpt2_dual.tf as gtf

        return getattr(gtf, HEAD_SPECS[head].class_name).from_pretrained(folder)

    @staticmethod
    def generate(model, input_ids, attention_mask=None, **kwargs) -> Any:
        """``model.generate`` in graph mode (XLA, the default, with ``GPT2_DUAL_TF_XLA=1``:
        its compiles take seconds each; ``tests/tf/test_generate_tf.py`` checks that XLA gives
        the same tokens)."""
        from frameworks import generated_numpy

        args = {"input_ids": input_ids}
        if attention_mask is not None:
            args["attention_mask"] = attention_mask
        kwargs.setdefault("jit_compile", os.environ.get("GPT2_DUAL_TF_XLA") == "1")
        return generated_numpy(model.generate(**args, **kwargs), np.asarray)


def _xla_call(model, inputs: dict[str, Any]):
    """``model(**inputs)`` under ``tf.function(jit_compile=True)``; Python flags stay static.

    One compiled function per model and per set of Python-valued arguments (tensors and
    caches are traced arguments)."""
    import tensorflow as tf

    tensors = {k: v for k, v in inputs.items() if _is_traced(v)}
    static = tuple(sorted((k, v) for k, v in inputs.items() if k not in tensors))
    functions = _XLA[model]
    if static not in functions:
        flags = dict(static)
        functions[static] = tf.function(lambda t: model(**t, **flags), jit_compile=True)
    return functions[static](tensors)


def _is_traced(value: Any) -> bool:
    return value is not None and not isinstance(value, bool | int | float | str)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return tuple(_to_numpy(v) for v in value)
    return np.asarray(value).astype(np.float32)


def load_canonical_tf(model, state: dict[str, np.ndarray]) -> None:
    """Fill a gpt2_dual.tf model from a canonical numpy state by walking the name table.

    Strict both ways, like ``frameworks.load_canonical_pt``: every table row must be in
    ``state`` and every key of ``state`` a row; every trainable variable must be filled.
    (Part B's ``tf.weights.load_canonical`` does this in the library; this test-side walk keeps
    the reference tests independent of it.)
    """
    rows = params(model.config, type(model).head)
    assert set(state) == {r.canonical for r in rows}, (
        f"missing {sorted({r.canonical for r in rows} - set(state))}, "
        f"unexpected {sorted(set(state) - {r.canonical for r in rows})}"
    )
    filled = set()
    for row in rows:
        path = row.tf
        if type(model).head != "base" and is_backbone(row.canonical):
            path = f"{BACKBONE_ATTR}.{path}"
        variable = _walk(model, path)
        value = state[row.canonical].T if row.tf_transpose else state[row.canonical]
        assert tuple(value.shape) == tuple(variable.shape), f"{row.canonical}: {value.shape}"
        variable.assign(value)
        filled.add(id(variable))
    left = [v.path for v in model.trainable_variables if id(v) not in filled]
    assert not left, f"variables not in the table: {left}"


def _walk(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj
