"""transformers 4.x TensorFlow weights (``tf_model.h5``), read lazily into canonical names.

``H5Reader`` lists the weights (names and shapes) when opened and reads one dataset per
access, so loading holds one tensor at a time besides the model. Both frameworks'
``from_pretrained`` use it for a folder that has no safetensors or ``.bin`` weights; the
``"tf-h5"`` format of ``gpt2_dual.convert`` reads and writes whole folders with it. Names and
layouts come from ``checkpoint.names.tf_h5``.

h5py comes with Keras (``pip install "gpt2_dual[tf]"``) and is imported where it is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual.checkpoint import safetensors_io
from gpt2_dual.checkpoint.names import tf_h5 as names
from gpt2_dual.checkpoint.names.core import to_canonical_key
from gpt2_dual.errors import CheckpointError

__all__ = ["H5Reader", "h5py_module"]


def h5py_module() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            'tf_model.h5 files need h5py (installed with Keras): pip install "gpt2_dual[tf]"'
        ) from None
    return h5py


class H5Reader:
    """Lazy canonical view of ``tf_model.h5`` (or all its shards).

    Same interface as ``hf.SafetensorsReader``: ``keys()``, ``name in view``,
    ``shape(name)`` and ``view[name]`` (a numpy array, canonical layout), ``dtype(name)`` (a
    safetensors dtype string, ``"F32"``), ``ignored``. Weights the table does not know keep a
    canonical-style name (``h.0.attn.extra``) so a loader reports them as unexpected.

    Attributes:
        model_names: first parts of the stored names (``{"tfgpt2lm_head_model"}``); empty for
            shards, which drop them.

    Raises:
        ValueError: a file is not HDF5, or not a Keras weights file (no ``layer_names``).
        CheckpointError: a weight is listed but not stored, or two stored weights map to one
            canonical name.
    """

    def __init__(self, files: tuple[Path, ...] | list[Path]) -> None:
        h5py = h5py_module()
        self._files = tuple(Path(p) for p in files)
        # canonical -> (file index, dataset path, row or None, stored shape, numpy dtype)
        self._where: dict[str, tuple[int, str, names.H5Param | None, tuple, np.dtype]] = {}
        self.ignored: list[str] = []
        self.model_names: set[str] = set()
        for n, path in enumerate(self._files):
            with _open(h5py, path) as f:
                for dataset, model_name, weight in _datasets(h5py, f, path):
                    if model_name:
                        self.model_names.add(model_name)
                    if dataset not in f:
                        raise CheckpointError(
                            f"{path}: weight {weight!r} is listed in the file but not stored"
                        )
                    self._add(n, dataset, weight, f[dataset])

    def _add(self, n: int, dataset: str, weight: str, data: Any) -> None:
        """Record one stored weight (``weight``: its name without the model name)."""
        row = names.from_name(weight)
        name = row.canonical if row else to_canonical_key(names.fallback_canonical(weight))
        if name is None:  # an old attention-mask buffer
            self.ignored.append(weight)
            return
        if name in self._where:
            other = self._where[name][1]
            raise CheckpointError(f"checkpoint holds {name!r} twice: as {other!r} and {dataset!r}")
        self._where[name] = (n, dataset, row, tuple(data.shape), data.dtype)

    def keys(self) -> list[str]:
        """Canonical names present, in file order."""
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        """Canonical shape of a weight, without reading it."""
        _, _, row, shape, _ = self._where[name]
        return row.canonical_shape(shape) if row else shape

    def dtype(self, name: str) -> str:
        """safetensors dtype string (``"F32"``, ``"F16"``) of a weight, without reading it."""
        dtype = self._where[name][4]
        return safetensors_io.SAFETENSORS_CODES.get(str(dtype), str(dtype))

    def location(self, name: str) -> tuple[Path, str]:
        """The file holding a weight and its dataset path there."""
        n, dataset, *_ = self._where[name]
        return self._files[n], dataset

    def __getitem__(self, name: str) -> np.ndarray:
        n, dataset, row, _, _ = self._where[name]
        with _open(h5py_module(), self._files[n]) as f:
            array = f[dataset][()]
        return row.to_canonical(array) if row else array

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(canonical name, array) pairs, one array read at a time."""
        for name in self._where:
            yield name, self[name]


def _open(h5py: Any, path: Path) -> Any:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a valid HDF5 file: {err}") from None


def _attribute(group: Any, name: str) -> list[str]:
    """A list-of-names attribute, also when tf_keras chunked it (``name0``, ``name1``, ...)."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in group.attrs:
            chunks.append(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for c in chunks for v in c]


def _datasets(h5py: Any, f: Any, path: Path) -> Iterator[tuple[str, str, str]]:
    """(dataset path, model name, weight name below it) for every weight of one file; the
    model name is empty in shards."""
    layers = _attribute(f, "layer_names")
    if not layers and "layer_names" not in f.attrs and "layer_names0" not in f.attrs:
        raise ValueError(
            f"{path} is not a Keras HDF5 weights file (no layer_names attribute); "
            "transformers' TF save_pretrained writes one"
        )
    for layer in layers:
        obj = f.get(layer)
        if isinstance(obj, h5py.Dataset):  # a shard: the weight name is the dataset path
            yield layer, "", layer
            continue
        if obj is None:
            raise ValueError(f"{path}: layer {layer!r} is listed in layer_names but not stored")
        for weight in _attribute(obj, "weight_names"):
            model_name, _, rest = weight.partition("/")
            yield f"{layer}/{weight}", model_name, rest
