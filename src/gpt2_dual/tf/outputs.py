"""What a gpt2_dual.tf model returns: a dict of its outputs, also readable as attributes.

The PyTorch side returns the frozen dataclasses of ``gpt2_dual.outputs``. Keras needs nested
structures it knows (``fit``, ``predict``, ``tf.function``, SavedModel signatures, ``tf.nest``),
and those are dicts, lists and tuples. So a Keras model returns a ``ModelOutputDict``: a
``dict`` subclass holding the fields that are set, with the same names as the head's dataclass,
where ``out["logits"]`` and ``out.logits`` are the same tensor and ``out.loss`` is None when
no labels were given. As on the PyTorch side, ``out.to_tuple()`` gives the set fields in the
head's field order and ``out[0]`` indexes that tuple. ``to_output()`` converts it to the
dataclass. ``tf.nest`` rebuilds dict
subclasses as they were; ``keras.tree`` (``predict``) sees inside them through the
registration in ``cache.keras_tree_node``.

Example:
    >>> out = model({"input_ids": ids})  # doctest: +SKIP
    >>> out.logits is out["logits"], out.loss  # doctest: +SKIP
    (True, None)
"""

from __future__ import annotations

from typing import Any, ClassVar

from gpt2_dual.outputs import OUTPUT_TYPES, ModelOutput, as_output
from gpt2_dual.tf.cache import keras_tree_node

__all__ = ["OUTPUT_DICTS", "ModelOutputDict", "make_output"]


class ModelOutputDict(dict):
    """A model's outputs: a ``dict`` of the fields that are set, with attribute access.

    ``out["logits"]`` and ``out.logits`` read the same tensor; a field of the head's output type
    that is not set (``loss`` without labels) reads ``None`` as an attribute, as on the PyTorch
    side; an integer or a slice indexes ``to_tuple()`` (``out[0]``: ``loss`` with labels, else
    ``logits``). ``tf.nest``, ``tf.function``, Keras ``fit``/``predict`` and SavedModel see a
    dict.
    """

    #: The head's dataclass in ``gpt2_dual.outputs`` (set on the per-head subclasses).
    output_type: ClassVar[type[ModelOutput]] = ModelOutput

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in self.output_type.__dataclass_fields__:
            return None
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | slice):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields in the head's field order (the PyTorch side's ``to_tuple()``)."""
        return tuple(self[name] for name in self.output_type.__dataclass_fields__ if name in self)

    def to_output(self) -> ModelOutput:
        """The same fields in the head's frozen dataclass (``gpt2_dual.outputs``)."""
        return as_output(_HEAD_BY_TYPE[self.output_type], self)

    # keras.tree: a dict subclass is a leaf unless registered; flatten as a dict (sorted keys).
    def tree_flatten(self) -> tuple[list, list[str]]:
        keys = sorted(self)
        return [self[k] for k in keys], keys

    @classmethod
    def tree_unflatten(cls, keys: list[str], children: Any) -> ModelOutputDict:
        return cls(zip(keys, children, strict=True))


#: ``ModelOutputDict`` subclass per head name, e.g. ``OUTPUT_DICTS["lm"].output_type`` is
#: ``CausalLMOutput``.
OUTPUT_DICTS: dict[str, type[ModelOutputDict]] = {
    head: keras_tree_node(type(f"{cls.__name__}Dict", (ModelOutputDict,), {"output_type": cls}))
    for head, cls in OUTPUT_TYPES.items()
}
_HEAD_BY_TYPE = {cls: head for head, cls in OUTPUT_TYPES.items()}


def make_output(head: str, **fields: Any) -> ModelOutputDict:
    """The head's ``ModelOutputDict`` of the fields that are not None."""
    return OUTPUT_DICTS[head]((k, v) for k, v in fields.items() if v is not None)
