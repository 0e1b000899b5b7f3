"""transformers 4.x TensorFlow checkpoints (format ``"tf-h5"``): read and write ``tf_model.h5``.

A folder as ``TFGPT2*.save_pretrained`` leaves it: ``config.json``, ``tf_model.h5`` (or shards
``tf_model-00001-of-0000N.h5`` plus ``tf_model.h5.index.json``), ``generation_config.json``
for the LM heads, and any tokenizer files saved beside. Names and layouts come from
``convert.names.tf_h5``.

Reading is lazy: ``gpt2_dual.checkpoint.tf_h5.H5Reader`` (the reader both frameworks'
``from_pretrained`` use) lists the weights when opened and reads one dataset per access.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import read_json_object
from gpt2_dual.checkpoint import hf, loading, safetensors_io
from gpt2_dual.checkpoint.names import tf_h5 as names
from gpt2_dual.checkpoint.tf_h5 import H5Reader, h5py_module
from gpt2_dual.config import GPT2Config
from gpt2_dual.convert import hf_format
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.heads import HEAD_SPECS

logger = logging.getLogger(__name__)

#: dtypes ``write`` stores (HDF5 has no bfloat16 transformers' TF could read).
WRITABLE_DTYPES = ("float32", "float16")
#: Largest HDF5 attribute tf_keras writes in one piece; longer name lists are chunked.
HDF5_OBJECT_HEADER_LIMIT = 64512
#: ``keras_version`` attribute written (tf_keras 2.x, which transformers 4.x TF uses).
KERAS_VERSION = "2.21.0"


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
    h5py = h5py_module()
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
