"""transformers 4.x TensorFlow checkpoints (format ``"tf-h5"``): read and write ``tf_model.h5``.

A folder as ``TFGPT2*.save_pretrained`` leaves it: ``config.json``, ``tf_model.h5`` (or shards
``tf_model-00001-of-0000N.h5`` plus ``tf_model.h5.index.json``), ``generation_config.json``
for the LM heads, and any tokenizer files saved beside. Names and layouts come from
``convert.names.tf_h5``.

Reading is lazy: ``H5Reader`` lists the weights (names and shapes) when opened and reads one
dataset per access, so loading holds one tensor at a time besides the model. Both frameworks'
``from_pretrained`` use it for a folder that has no safetensors or ``.bin`` weights.

Writing produces the single-file layout tf_keras' ``save_weights`` gives, streamed one tensor
at a time into a temporary file renamed into place; transformers 4.x's ``TFGPT2*`` classes
load it with nothing missing or unexpected. HDF5 has no bfloat16 (h5py stores ml_dtypes'
bfloat16 as an opaque type transformers cannot read), so float32 and float16 are written.

h5py comes with Keras (``pip install "gpt2_dual[tf]"``) and is imported where it is used.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import read_json_object
from gpt2_dual.config import GPT2Config
from gpt2_dual.convert import hf, hf_format, loading, safetensors_io
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.convert.loading import CheckpointError
from gpt2_dual.convert.names import tf_h5 as names
from gpt2_dual.convert.names.core import to_canonical_key
from gpt2_dual.heads import HEAD_SPECS

logger = logging.getLogger(__name__)

#: dtypes ``write`` stores (HDF5 has no bfloat16 transformers' TF could read).
WRITABLE_DTYPES = ("float32", "float16")
#: Largest HDF5 attribute tf_keras writes in one piece; longer name lists are chunked.
HDF5_OBJECT_HEADER_LIMIT = 64512
#: ``keras_version`` attribute written (tf_keras 2.x, which transformers 4.x TF uses).
KERAS_VERSION = "2.21.0"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            'tf_model.h5 files need h5py (installed with Keras): pip install "gpt2_dual[tf]"'
        ) from None
    return h5py


# --------------------------------------------------------------------------- detect
def detect(path: Path) -> bool:
    """A folder with ``config.json`` and ``tf_model.h5`` (or its shard index), or such a
    ``tf_model.h5`` itself."""
    path = Path(path)
    if path.is_file():
        return path.name == hf.TF_WEIGHTS and (path.parent / "config.json").is_file()
    return (
        path.is_dir()
        and (path / "config.json").is_file()
        and any((path / name).is_file() for name in hf.FORMAT_FILES["tf-h5"])
    )


# --------------------------------------------------------------------------- reading
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
        h5py = _h5py()
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
        with _open(_h5py(), self._files[n]) as f:
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


def read(path: Path) -> Source:
    """Read a transformers TF folder (or its ``tf_model.h5``) into a lazy ``Source``.

    The head comes from ``config.json``'s ``architectures`` (``TF`` prefix allowed), else from
    the model name the weights were saved under, else from the head layers stored.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    config = GPT2Config.from_pretrained(folder)
    found = (
        hf.Checkpoint("tf-h5", (path,))
        if path.is_file()
        else hf.find_checkpoint(folder, formats=("tf-h5",))
    )
    view = H5Reader(found.files)
    gen = folder / hf_format.GENERATION_CONFIG
    return Source(
        format="tf-h5",
        path=path,
        config=config,
        head=_head(config, view),
        view=view,
        generation_config=read_json_object(gen) if gen.is_file() else None,
        tokenizer_files=hf_format.tokenizer_files(folder),
    )


def _head(config: GPT2Config, view: H5Reader) -> str:
    by_model = {names.head_of_model_name(m) for m in view.model_names} - {None}
    if not config.extra.get("architectures") and len(by_model) == 1:
        return by_model.pop()
    return hf_format.infer_head(config, view.keys())


# --------------------------------------------------------------------------- writing
def write(source: Source, folder: Path, *, dtype: str | None = None) -> None:
    """Write ``source`` as ``TFGPT2*.save_pretrained`` would: ``tf_model.h5``, ``config.json``,
    ``generation_config.json`` (when the source has one) and the tokenizer files.

    ``config.json`` names the PyTorch class in ``architectures``, as transformers' TF
    ``save_pretrained`` does, so both transformers' frameworks and gpt2_dual load the folder.

    Args:
        source: what to write; ``source.head`` picks the TF class (``names.TF_CLASSES``).
        folder: an existing, empty folder.
        dtype: ``"float32"`` or ``"float16"``; None keeps the source's dtype (that of its
            ``wte.weight``).

    Raises:
        FormatError: the head has no transformers TF class, the LM head is untied, or the
            dtype is one HDF5 cannot hold for transformers (bfloat16).
        CheckpointError: the source lacks tensors of its model or has misshapen ones.
    """
    class_name = HEAD_SPECS[source.head].class_name
    try:
        rows = names.h5_params(source.config, source.head)
    except ValueError as err:
        raise FormatError(f"cannot write {class_name} as tf-h5: {err}") from None
    dtype = dtype or safetensors_io.dtype_name(source.view["wte.weight"])
    if dtype not in WRITABLE_DTYPES:
        raise FormatError(
            f"tf-h5 cannot store {dtype}: HDF5 has no bfloat16 type that transformers' "
            f"TensorFlow loader reads; write {' or '.join(WRITABLE_DTYPES)} (dtype='float32')"
        )
    plan = loading.plan_load(source.config, source.head, source.view)
    loading.check_complete(class_name, plan)
    tensors = {row.canonical: _stored(source.view, row, dtype) for row in rows}
    model_name = names.MODEL_NAMES[source.head]
    _atomic_h5(Path(folder) / hf.TF_WEIGHTS, lambda f: _write_h5(f, rows, tensors, model_name))
    hf_format.write_side_files(source, Path(folder))
    loading.save_config(source.config, class_name, dtype, Path(folder))


def _stored(view: Any, row: names.H5Param, dtype: str) -> Callable[[], np.ndarray]:
    """A function reading one tensor from ``view`` in the stored layout and ``dtype``."""
    return lambda: row.to_stored(safetensors_io.cast(np.asarray(view[row.canonical]), dtype))


def _write_h5(
    f: Any, rows: list[names.H5Param], tensors: dict[str, Callable[[], np.ndarray]], model: str
) -> None:
    """tf_keras' ``save_weights_to_hdf5_group`` layout, one tensor in memory at a time."""
    layers: dict[str, list[names.H5Param]] = {}
    for row in rows:
        layers.setdefault(row.layer, []).append(row)
    _save_attribute(f, "layer_names", [name.encode("utf8") for name in layers])
    f.attrs["backend"] = b"tensorflow"
    f.attrs["keras_version"] = KERAS_VERSION.encode("utf8")
    for layer in sorted(layers):  # tf_keras sorts the groups by name
        group = f.create_group(layer)
        stored = [f"{model}/{row.name}" for row in layers[layer]]
        _save_attribute(group, "weight_names", [name.encode("utf8") for name in stored])
        for row, name in zip(layers[layer], stored, strict=True):
            group.create_dataset(name, data=tensors[row.canonical]())
    _save_attribute(f.create_group(names.TOP_LEVEL_GROUP), "weight_names", [])


def _save_attribute(group: Any, name: str, data: list[bytes]) -> None:
    """tf_keras' ``save_attributes_to_hdf5_group``: past the HDF5 header limit the list is
    split into ``name0``, ``name1``, ..."""
    array = np.asarray(data)
    chunks = 1
    while any(c.nbytes > HDF5_OBJECT_HEADER_LIMIT for c in np.array_split(array, chunks)):
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
        return
    for k, chunk in enumerate(np.array_split(array, chunks)):
        group.attrs[f"{name}{k}"] = chunk


def _atomic_h5(path: Path, fill: Callable[[Any], None]) -> Path:
    """Write an HDF5 file to a temporary name beside ``path`` and rename it into place
    (h5py needs a path it can reopen, not ``_io.atomic_write``'s file object)."""
    h5py = _h5py()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s", path)
    return path
